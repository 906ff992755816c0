"""Tab 4, Monitor: live charts, progress with ETA, warnings, the rollout browser, and Stop / Force stop.

Everything is read from the run folder (finetuner/ui/run_watch.py tails it incrementally), so closing or
reloading the browser neither pauses nor loses a run: on page load the tab re-attaches to the run now
training, or to the one the Train tab launched (`shared.run_id`). A `gr.Timer` ticks every 2 seconds; a
tick whose run folder has not changed returns `gr.skip()` and costs a few `stat` calls.

Handlers are plain functions of (ctx, values...) so tests drive them without a browser: `view` returns a
dict keyed by OUTPUTS (values may be `gr.skip()`), `tick`/`render` return it as the tuple Gradio wants.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field

import gradio as gr

from graders.errors import RunError
from finetuner.runs import ACTIVE_STATES, force_stop, request_stop
from finetuner.ui import figures, monitor_notes, queue_view, rollouts, tool_figures
from finetuner.ui.context import AppContext, NotYours, Shared, bind, safe
from finetuner.ui.context import confirm_row as confirm_row_of
from finetuner.ui.run_watch import get_watch, health_warnings, progress, progress_text

log = logging.getLogger("finetuner.ui")
TICK_SECONDS = 2.0
TABLE_ROWS = 200  # rollouts shown at once; filters narrow the rest down
PLOTS = figures.PANELS
OUTPUTS = (*PLOTS, "progress", "warnings", "stop", "force", "table", "keys", "error_filter", "score_of", "detail",
           "picker", "seen", "heldout", "heldout_table", "notes", "curriculum", "review", "tools", "tools_reward",
           "tool_filter")
STATE_COLORS = {"running": "#2f9e44", "queued": "#868e96", "stopping": "#e67700", "finished": "#1c7ed6",
                "stopped": "#868e96", "failed": "#e03131"}


# ------------------------------------------------------------------ choosing the run


def run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, id) for every run, newest first: 'id · state'."""
    # The id already holds the name and the start time (name-YYYYmmdd-HHMMSS).
    return [(f"{st['id']} · {st.get('state', '?')}", st["id"]) for st in ctx.list_runs()]


def pick_run(ctx: AppContext, wanted: str | None, choices=None) -> str:
    """The run to show: `wanted` if it exists, else the one training now, else the newest, else ''."""
    ids = [c[1] for c in (choices if choices is not None else run_choices(ctx))]
    if wanted and wanted in ids:
        return wanted
    active = ctx.active_run()
    if active and active["id"] in ids:  # with --auth the run training may be another user's
        return active["id"]
    return ids[0] if ids else ""


def attach(ctx: AppContext, wanted: str | None):
    """On page load and when another tab sets the run: refresh the picker and select the run to watch."""
    choices = run_choices(ctx)
    return gr.update(choices=choices, value=pick_run(ctx, wanted, choices) or None)


# ------------------------------------------------------------------ the view


@dataclass(frozen=True)
class MonitorRequest:
    """What one Monitor view asks for. Built once from the Gradio inputs by `render` / `tick`
    (`from_inputs`); tests and the benchmark build it directly."""

    run_id: str
    smoothing: float = 0.0
    log_y: bool = False
    live: bool = True  # follow new rollouts in the table
    seen: dict | None = None  # what this browser was last sent (`view`'s "seen" output)
    filter: rollouts.RolloutFilter = field(default_factory=rollouts.RolloutFilter)

    @classmethod
    def from_inputs(cls, run_id, smoothing, log_y, live, seen, *filter_values) -> "MonitorRequest":
        return cls(run_id, smoothing, log_y, live, seen, rollouts.RolloutFilter.from_inputs(*filter_values))


def _progress_html(p: dict, run_id: str) -> str:
    color = STATE_COLORS.get(p["state"], "#868e96")
    pct = 100 * (1.0 if p["state"] == "finished" else p["fraction"])
    text = progress_text(p).replace("**", "")
    parts = [f'<div class="ft-progress"><div style="margin-bottom:4px"><span style="background:{color};color:white;'
             f'border-radius:4px;padding:1px 6px;font-weight:600">{html.escape(p["state"])}</span> '
             f'<code>{html.escape(run_id)}</code> · {html.escape(text.split(" · ", 1)[-1])}</div>',
             f'<div style="background:#e9ecef;border-radius:6px;height:10px"><div style="width:{pct:.1f}%;'
             f'background:{color};height:10px;border-radius:6px"></div></div>']
    if p.get("stop_requested") and p["state"] != "stopping":
        parts.append('<div style="color:#e67700;margin-top:6px">Stop requested: the run stops after the current '
                     'step and saves its adapter.</div>')
    if p.get("error"):
        tone = "#e03131" if p["state"] == "failed" else "#495057"
        # Engine messages quote commands in `backticks`: show them as code.
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(p["error"])))
        parts.append(f'<div style="color:{tone};margin-top:6px">{text}</div>')
    elif p.get("notice") and p["state"] in ACTIVE_STATES:
        parts.append(f'<div style="color:#868e96;margin-top:6px;font-size:0.9em">{html.escape(p["notice"])}</div>')
    return "".join(parts) + "</div>"


NO_RUN = "No run selected. Launch one on the <b>Train</b> tab, or press <b>Try the demo</b>."


def _empty_view(text: str = NO_RUN) -> dict:
    out = {name: figures.empty_figure(name.title(), "Pick a run above.") for name in PLOTS}
    out.update(progress=f"<div>{text}</div>", warnings="", stop=gr.update(interactive=False),
               force=gr.update(interactive=False),
               table={"headers": ["step", "total", "completion"], "data": []}, keys=[],
               error_filter=gr.skip(), score_of=gr.skip(), detail="", picker=gr.skip(), seen=None,
               heldout=gr.update(visible=False), heldout_table=gr.update(visible=False), notes="",
               curriculum=gr.update(visible=False), review="", tools=gr.update(visible=False),
               tools_reward=gr.update(visible=False), tool_filter=gr.update(visible=False))
    return out


def heldout_outputs(columns, run_id: str) -> dict:
    """The held-out chart and its base / SFT / RFT table (`eval.every_steps`), shown only when the run has them."""
    table = figures.heldout_table(columns)
    shown = bool(table["data"])
    return {"heldout": gr.update(value=figures.heldout_figure(columns, run_id), visible=shown),
            "heldout_table": gr.update(value=table, visible=shown)}


def view(ctx: AppContext, req: MonitorRequest, force: bool = False) -> dict:
    """Every output of the Monitor for `req.run_id`; parts unchanged since `req.seen` are gr.skip()."""
    run_id, seen = req.run_id, req.seen
    if not run_id:
        return _empty_view() if force or seen else {name: gr.skip() for name in OUTPUTS}
    try:
        run = ctx.open_run(run_id)
    except RunError as err:
        # Deleted from the Runs tab (or by hand) while shown: say so once, not a warning every tick.
        gone = {"run": run_id, "missing": True}
        if seen == gone and not force:
            return {name: gr.skip() for name in OUTPUTS}
        text = (html.escape(str(err)) if isinstance(err, NotYours) else  # --auth: another user's run
                f"Run <code>{html.escape(run_id)}</code> no longer exists. Pick another run.")
        return {**_empty_view(text), "seen": gone}
    watch = get_watch(run.path)
    opts = [round(float(req.smoothing or 0), 3), bool(req.log_y)]
    now = {"run": run_id, "m": watch.metrics_version, "s": watch.samples_version, "st": watch.status_version,
           "opts": opts, "state": watch.status.get("state")}
    if now["state"] == queue_view.WAITING:  # its place moves while nothing in its own folder changes
        now["q"] = queue_view.monitor_html(ctx, run_id)
    seen = None if force or not seen or seen.get("run") != run_id or "m" not in seen else seen
    out = {name: gr.skip() for name in OUTPUTS}
    if seen == now:
        return out
    if seen is None or (seen["m"], seen["opts"]) != (now["m"], now["opts"]):
        key = (watch.metrics_version, *opts)
        figs = watch.figure_cache.get(key)  # shared by every browser watching this run
        if figs is None:
            figs = figures.monitor_figures(watch.columns, opts[0], opts[1], run_id)
            cur = monitor_notes.curriculum_figure(watch.columns, opts[0], run_id)
            tools = tool_figures.tool_figures(watch.columns, opts[0], run_id) or {}  # {}: not a tool run
            # review.jsonl is written with a metrics row (at an eval), so it is read once per metrics version too
            figs = watch.figure_cache[key] = {**figs, **heldout_outputs(watch.columns, run_id),
                                              "curriculum": gr.update(value=cur, visible=cur is not None),
                                              **{k: gr.update(value=tools.get(k), visible=bool(tools))
                                                 for k in ("tools", "tools_reward")},
                                              "review": monitor_notes.review_md(monitor_notes.review_rows(run.path))}
        out.update(figs)
    if seen is None or (seen["m"], seen["s"], seen["st"]) != (now["m"], now["s"], now["st"]):
        zero = monitor_notes.zero_signal_md(watch.columns, watch.samples)
        guard = watch.status.get("warnings") or []
        # The guardrails' and the zero-spread notes say it better: the short health lines they cover are skipped.
        covered = frozenset(k for k, on in (("zero_spread", zero), ("train_vs_eval", guard)) if on)
        health = health_warnings(watch, covered=covered)
        out["warnings"] = _warnings_md(health)
        out["notes"] = "\n\n".join(t for t in (monitor_notes.guardrail_md(watch.status), zero,
                                               monitor_notes.tool_trouble_md(watch.columns)) if t)
    if seen is None or (seen["m"], seen["st"], seen.get("q")) != (now["m"], now["st"], now.get("q")):
        p = progress(watch)
        out["progress"] = now.get("q") or _progress_html(p, run_id)  # a waiting run has no steps to show
        active = p["state"] in ACTIVE_STATES
        out["stop"] = gr.update(interactive=active and p["state"] != "stopping" and not p["stop_requested"])
        out["force"] = gr.update(interactive=active)
    if seen is not None and seen.get("state") != now["state"]:
        out["picker"] = gr.update(choices=run_choices(ctx))  # the labels carry the state
    if seen is None or (req.live and seen["s"] != now["s"]):
        out.update(rollout_outputs(watch.samples, req.filter, fresh=seen is None))
    if seen is None or (seen["s"] == 0 and now["s"]):  # a new run, or its first rollouts arrived
        out["detail"] = rollouts.rollout_detail(watch.samples, None)
    out["seen"] = now
    return out


def _warnings_md(items: list[str]) -> str:
    return "\n".join(f"- ⚠️ {w}" for w in items)


def rollout_outputs(samples: list[dict], f: rollouts.RolloutFilter, fresh: bool = False) -> dict:
    graders = rollouts.grader_names(samples)
    keys = rollouts.filter_rollouts(samples, f, limit=TABLE_ROWS)
    out = {"table": rollouts.rollout_table(samples, keys, graders), "keys": keys}
    err_choices = rollouts.error_choices(samples)
    out["error_filter"] = gr.update(choices=err_choices, value=f.grader_error if f.grader_error in err_choices
                                    else rollouts.ALL) if fresh or graders else gr.skip()
    out["score_of"] = gr.update(choices=["total", *graders],
                                value=f.score_of if f.score_of in ["total", *graders] else "total")
    out["tool_filter"] = gr.update(visible=rollouts.has_tool_rows(samples))
    return out


def _as_tuple(d: dict):
    return tuple(d[name] for name in OUTPUTS)


def render(ctx, run_id, smoothing, log_y, live, *filter_values):
    """A full redraw: the run or the chart options changed."""
    return _as_tuple(view(ctx, MonitorRequest.from_inputs(run_id, smoothing, log_y, live, None, *filter_values),
                          force=True))


def tick(ctx, run_id, smoothing, log_y, live, seen, *filter_values):
    """The timer: only what changed in the run folder since this browser's last view."""
    try:
        out = view(ctx, MonitorRequest.from_inputs(run_id, smoothing, log_y, live, seen, *filter_values))
    except Exception:  # noqa: BLE001 - a poll must not raise a toast every 2 seconds; the next one retries
        log.warning("Monitor refresh of %s failed", run_id, exc_info=True)
        return gr.skip()
    if all(is_skip(v) for v in out.values()):
        return gr.skip()  # one skip for every output: nothing is sent to the browser
    return _as_tuple(out)


def is_skip(value) -> bool:
    return isinstance(value, dict) and value == gr.skip()


def apply_filters(ctx, run_id, *filter_values):
    """The rollout filters changed: redo the table only."""
    if not run_id:
        return gr.skip(), gr.skip()
    watch = get_watch(ctx.open_run(run_id).path)
    out = rollout_outputs(watch.samples, rollouts.RolloutFilter.from_inputs(*filter_values))
    return out["table"], out["keys"]


def select_rollout(ctx, run_id, keys, row_index, row_value=None) -> str:
    """The detail of the clicked rollout. The table refreshes on a timer, so by the time a click arrives `keys`
    may already hold a newer list than the table the person clicked (new rows prepended): the row is found by
    its own cells (`row_value`, sent with the click), `row_index` only narrowing the search."""
    if not run_id or row_index is None:
        return gr.skip()
    watch = get_watch(ctx.open_run(run_id).path, refresh=False)
    key = rollouts.find_row(watch.samples, keys or [], row_index, row_value)
    if key is None:
        return "*That rollout is no longer in the run's samples (old segments are dropped as a run grows).*"
    return rollouts.rollout_detail(watch.samples, key)


# ------------------------------------------------------------------ stopping


def stop(ctx, run_id):
    if not run_id:
        raise RunError("Pick a run first.")
    request_stop(ctx.open_run(run_id))
    gr.Info("Stop requested: the run finishes its current step, saves the adapter and a checkpoint, then stops. "
            "Resume later from the Runs tab or with: python -m finetuner train --resume RUN_FOLDER")
    return gr.update(interactive=False)


def force_kill(ctx, run_id):
    if not run_id:
        raise RunError("Pick a run first.")
    run = ctx.open_run(run_id)
    force_stop(run)
    gr.Info(f"Run {run_id} was killed. Its last checkpoint is kept; steps since then are lost.")
    return gr.update(visible=False)


# ------------------------------------------------------------------ layout


def build(ctx: AppContext, shared: Shared):
    gr.Markdown("Live view of a run, read from its folder: closing this page never stops training. Charts "
                "refresh every 2 seconds while something changes; their x axis is the step, SFT and RFT on one "
                "timeline. Drag to zoom, double-click to reset, click a legend entry to hide it.",
                elem_classes="ft-help")
    with gr.Row():
        picker = gr.Dropdown(label="Run", info="The run these charts show. Opening the app picks the run now "
                             "training; older runs are listed too.", choices=[], scale=3)
        with gr.Column(scale=2):
            with gr.Row():
                reload_btn = gr.Button("↻ Refresh list", size="md", min_width=110)
                stop_btn = gr.Button("Stop", size="md", interactive=False, min_width=90)
                force_btn = gr.Button("Force stop…", variant="stop", size="md", interactive=False, min_width=110)
            gr.Markdown("**Stop** finishes the current step and saves the adapter and a checkpoint (resume it later "
                        "from the Runs tab). **Force stop** kills the process at once.", elem_classes="ft-help")
    confirm_row, yes_btn, no_btn = confirm_row_of(
        "**Kill the training process now?** Nothing is saved: the steps since the last checkpoint are lost. "
        "Prefer **Stop**, which saves at the end of the current step.", "Yes, kill it now")
    progress_box = gr.HTML()
    warnings_box = gr.Markdown(elem_classes="ft-warn")
    notes_box = gr.Markdown(elem_classes="ft-warn")  # guardrails and the zero-signal explanation
    queue_view.build(ctx, shared)  # the runs waiting their turn: Up, Down, Cancel
    with gr.Accordion("Chart options", open=False):
        with gr.Row():
            smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Smoothing",
                                  info="Exponential moving average, as in TensorBoard: 0 shows raw values; the raw "
                                       "curve stays faint behind the smoothed one.")
            log_y = gr.Checkbox(False, label="Log scale for loss and KL",
                                info="Helps when the loss falls by orders of magnitude.")
            live = gr.Checkbox(True, label="Follow new rollouts",
                               info="Refresh the rollout table as new steps arrive. Untick to keep it still "
                                    "while you read.")
    plots = {}
    with gr.Row(equal_height=False):
        # First, where a person looks: greedy held-out scores show learning that sampled train rewards hide.
        heldout_plot = gr.Plot(show_label=False, visible=False, scale=3)
        heldout_table = gr.Dataframe(interactive=False, visible=False, scale=2,
                                     label="Held-out score: base / after SFT / after RFT")
    for row in (("loss", "reward"), ("kl", "length"), ("signal", "time"), ("memory",)):
        with gr.Row():
            for name in row:
                plots[name] = gr.Plot(show_label=False)
            if row == ("memory",):  # shown when the run logs `curriculum/*` (rft.curriculum)
                curriculum_plot = gr.Plot(show_label=False, visible=False)
    with gr.Row():  # shown when the run logs `tools/*` (a `tools:` run, Agent RFT)
        tools_plot = gr.Plot(show_label=False, visible=False)
        tools_reward_plot = gr.Plot(show_label=False, visible=False)
    with gr.Accordion("Highest-scored rollouts to review", open=False):
        review_box = gr.Markdown()
    with gr.Accordion("Rollouts: what the model wrote and how the graders scored it", open=True):
        gr.Markdown("Newest first, up to 200 rows; narrow them down with the filters. Click a row for the full "
                    "text, every grader's score, error and log, and the rest of its group.", elem_classes="ft-help")
        with gr.Row():
            # Textboxes, not Numbers: a blank bound means "no bound", which a Number box cannot show.
            step_min = gr.Textbox(label="From step", info="Stage step; blank: the first", placeholder="e.g. 100",
                                  min_width=110)
            step_max = gr.Textbox(label="To step", info="Stage step; blank: the last", placeholder="e.g. 200",
                                  min_width=110)
            split = gr.Dropdown(["all", "train", "eval"], value="all", label="Split",
                                info="Training rollouts or eval-split scoring", min_width=110)
            err = gr.Dropdown([rollouts.ALL], value=rollouts.ALL, label="Grader errors",
                              info="Only rows where a grader failed (all, or one by name)", min_width=170)
        with gr.Row():
            score_of = gr.Dropdown(["total"], value="total", label="Score of",
                                   info="Which score the range applies to", min_width=110)
            score_min = gr.Textbox(label="Min score", info="Blank: no lower bound", placeholder="e.g. 0.5",
                                   min_width=110)
            score_max = gr.Textbox(label="Max score", info="Blank: no upper bound", placeholder="e.g. 0",
                                   min_width=110)
            search = gr.Textbox(label="Search", info="Text in the prompt or completion (Enter to apply)",
                                min_width=170)
            tool_flag = gr.Dropdown(list(rollouts.TOOL_FLAGS), value=rollouts.ALL, label="Tool use", visible=False,
                                    info="Rollouts that called a tool, had a failed call, or were cut off",
                                    min_width=170)
        table = gr.Dataframe(interactive=False, wrap=True, max_height=420, label="Rollouts",
                             value={"headers": ["step", "total", "completion"], "data": []})
        detail = gr.Markdown()
    keys, seen = gr.State([]), gr.State(None)
    timer = gr.Timer(TICK_SECONDS)

    filters = [step_min, step_max, split, err, score_of, score_min, score_max, search, tool_flag]
    outs = [*(plots[n] for n in PLOTS), progress_box, warnings_box, stop_btn, force_btn, table, keys, err,
            score_of, detail, picker, seen, heldout_plot, heldout_table, notes_box, curriculum_plot, review_box,
            tools_plot, tools_reward_plot, tool_flag]
    view_inputs = [picker, smoothing, log_y, live]
    gr.on(triggers=None, fn=safe(bind(ctx, attach)), inputs=[shared.run_id], outputs=picker)
    reload_btn.click(safe(bind(ctx, attach)), inputs=[picker], outputs=picker, api_name="monitor_attach")
    picker.input(lambda rid: rid or "", inputs=picker, outputs=shared.run_id)
    gr.on([picker.change, smoothing.release, log_y.input], safe(bind(ctx, render)), inputs=[*view_inputs, *filters],
          outputs=outs, api_name="monitor_render")
    timer.tick(safe(bind(ctx, tick)), inputs=[*view_inputs, seen, *filters], outputs=outs, show_progress="hidden",
               api_name="monitor_refresh")  # api names: benchmarks/class_load.py drives these over HTTP
    gr.on([split.input, err.input, score_of.input, tool_flag.input, step_min.submit, step_max.submit, score_min.submit,
           score_max.submit, search.submit], safe(bind(ctx, apply_filters)), inputs=[picker, *filters],
          outputs=[table, keys])

    def on_select(run_id, shown, evt: gr.SelectData):
        return select_rollout(ctx, run_id, shown, evt.index[0] if evt.index else None, evt.row_value)

    table.select(safe(on_select), inputs=[picker, keys], outputs=detail)
    stop_btn.click(safe(bind(ctx, stop)), inputs=picker, outputs=stop_btn)
    force_btn.click(lambda: gr.update(visible=True), outputs=confirm_row)
    no_btn.click(lambda: gr.update(visible=False), outputs=confirm_row)
    yes_btn.click(safe(bind(ctx, force_kill)), inputs=picker, outputs=confirm_row)
