"""Tab 5, Evaluate & chat: score base / after SFT / after RFT on held-out rows with the run's own graders,
compare answers row by row, and chat with the base and the tuned model side by side.

The work is finetuner/evaluation/heldout.py's (`evaluate_run`, `chat_reply`, the model cache); this module lays it out.
An evaluation runs in Gradio's worker thread with a progress bar and `concurrency_limit=1`, so two people
pressing Evaluate queue up instead of loading models twice, while every other event keeps flowing.
What the tab says about a run (its state, which adapters it has) is read from the run folder whenever the tab is
shown, the run is picked or set by another tab, and every few seconds while that run trains (`view`, `tick`).
"""

from __future__ import annotations

import logging
import time

import gradio as gr

from finetuner.evaluation import heldout as ev
from finetuner.config import load_config
from graders.errors import FinetunerError, RunError
from finetuner.runs import ACTIVE_STATES, refresh_state
from finetuner.ui import figures
from finetuner.ui.context import AppContext, Shared, bind, safe
from finetuner.ui.eval_tables import COMPARE_FILTERS, ROW_HINT, comparison_table, row_detail
from finetuner.ui.tab_monitor import run_choices
from finetuner.ui.tab_shown import on_shown

log = logging.getLogger("finetuner.ui")
LIVE_SECONDS = 3.0  # how often the tab re-reads a run that is training (the timer is off otherwise)
DEFAULT_ROWS = 50
ROWS_INFO = "More rows give steadier numbers but take longer: each model answers each row."


def pick_run(ctx: AppContext, wanted: str | None, choices) -> str:
    """`wanted` if listed, else the newest run with a trained adapter, else the newest run."""
    ids = [c[1] for c in choices]
    if wanted and wanted in ids:
        return wanted
    for st in ctx.list_runs():
        if len(ev.model_variants(ctx.open_run(st["id"]))) > 1:
            return st["id"]
    return ids[0] if ids else ""


def attach(ctx: AppContext, wanted: str | None):
    choices = run_choices(ctx)
    return gr.update(choices=choices, value=pick_run(ctx, wanted, choices) or None)


def _status_line(run_id: str, results: dict | None, variants, state: str | None = None) -> str:
    if not results:
        names = ", ".join(label for _k, label, _a in variants)
        if len(variants) < 2:
            if state in ACTIVE_STATES:
                return (f"Run `{run_id}` is {state} and has no trained adapter yet: **Evaluate** works once a stage "
                        f"has finished or the run is stopped (this line updates when it does).")
            if state:
                return (f"Run `{run_id}` is {state} without a saved adapter (a force stop or a failure before "
                        f"a stage ended saves none), so there is nothing to compare with the base model.")
            return f"Run `{run_id}` has no trained adapter yet: evaluate it once a stage has finished."
        live = f" Run `{run_id}` is still {state}: its newest adapter is used." if state in ACTIVE_STATES else ""
        return f"Not evaluated yet. **Evaluate** will compare: {names}.{live}"
    when = time.strftime("%d %b %H:%M", time.localtime(results.get("created", 0)))
    best = max(results["models"].values(), key=lambda m: m["total"])
    base = results["models"].get("base", {}).get("total", 0.0)
    notes = " ".join(results.get("notes") or [])
    return (f"Evaluated {when} on **{results['rows']} held-out rows** (greedy, up to {results['max_new_tokens']} "
            f"new tokens, {results['seconds']:.0f}s). Best: **{best['label']}** with total {best['total']:.3f} "
            f"(base {base:.3f}). {notes}")


def show_run(ctx: AppContext, run_id: str, a: str | None = None, b: str | None = None,
             which: str = COMPARE_FILTERS[0], tuned_now: str | None = None):
    """Everything the tab shows for a run: status, summary, chart, comparison, playground choices. Read from the
    run folder each call (status.json, the adapters there now, eval/), so it is never older than the call."""
    if not run_id:
        empty = {"headers": ["model"], "data": []}
        return ("Pick a run.", empty, figures.eval_bar_figure({}), gr.update(choices=[]), gr.update(choices=[]),
                empty, gr.update(choices=[]))
    run = ctx.open_run(run_id)
    variants = ev.model_variants(run)
    results, samples = ev.load_results(run)
    keys = [(label, key) for key, label, _p in variants]
    done = list((results or {}).get("models", {}))
    a = a if a in done else (done[0] if done else None)
    b = b if b in done and b != a else (done[-1] if done else None)
    tuned = [(label, key) for key, label, _p in variants if key != "base"]
    tuned_keys = [k for _label, k in tuned]
    status = _status_line(run_id, results, variants, run.read_status().get("state"))
    newer = [label for key, label, _p in variants if results and key not in done]
    if newer:
        status += (f" New since then: {', '.join(newer)}; press **Evaluate** again to include "
                   f"{'it' if len(newer) == 1 else 'them'}.")
    return (status, ev.summary_table(results),
            figures.eval_bar_figure(results or {}),
            gr.update(choices=[c for c in keys if c[1] in done], value=a),
            gr.update(choices=[c for c in keys if c[1] in done], value=b),
            comparison_table(samples, a, b, which) if results else {"headers": ["row"], "data": []},
            gr.update(choices=tuned, value=tuned_now if tuned_now in tuned_keys else
                      (tuned_keys[-1] if tuned_keys else None)))


_HELD_OUT: dict = {}  # (run folder, config mtime) -> held-out row count: counting reads the run's data once


def held_out_rows(run) -> int | None:
    """How many held-out rows the run has (the rows Evaluate can answer), or None when its data cannot be read
    now (moved, a Hub id offline): then the slider keeps its general range."""
    from finetuner.data import load_stage_data

    try:
        key = (str(run.path), run.config_path.stat().st_mtime_ns)
    except OSError:
        return None
    if key not in _HELD_OUT:
        try:
            # The split evaluate_run uses (the RFT stage's held-out rows); no tokenizer is needed to count them.
            data = load_stage_data(load_config(run.config_path), "rft", None)
            _HELD_OUT[key] = len(data.eval_rows)
        except (FinetunerError, OSError, ValueError) as err:
            log.info("Could not count the held-out rows of %s: %s", run.path, err)
            return None
    return _HELD_OUT[key]


def rows_slider(ctx: AppContext, run_id: str):
    """The "Held-out rows" slider for a run: up to its held-out row count, defaulting to all of them up to 50."""
    n = held_out_rows(ctx.open_run(run_id)) if run_id else None
    if not n:
        return gr.update(minimum=5, maximum=500, step=5, value=DEFAULT_ROWS, info=ROWS_INFO)
    return gr.update(minimum=1, maximum=n, step=1, value=min(DEFAULT_ROWS, n),
                     info=f"This run holds out {n} row{'s' if n != 1 else ''}. More rows give steadier numbers but "
                          f"take longer: each model answers each row.")


def signature(ctx: AppContext, run_id: str) -> dict:
    """What this tab's view of a run depends on: its state, its adapters on disk, its last evaluation. Cheap to
    compute (status.json and a few stats), so the live timer compares it instead of redrawing every tick."""
    if not run_id:
        return {"run": ""}
    try:
        run = ctx.open_run(run_id)
    except RunError:
        return {"run": run_id, "missing": True}
    results = run.eval_dir / "results.json"
    return {"run": run_id, "state": refresh_state(run).get("state"),  # notices a training process that died
            "variants": [[k, label] for k, label, _p in ev.model_variants(run)],
            "eval": results.stat().st_mtime_ns if results.exists() else None}


def view(ctx: AppContext, run_id: str, a=None, b=None, which=COMPARE_FILTERS[0], tuned_now=None,
         seen: dict | None = None) -> tuple:
    """Every output of the tab (OUTPUT order of `build`), recomputed from the run folders: the run list's state
    labels, show_run's outputs, the rows slider (only when the run changed), the live timer (on while the run
    trains) and the signature the timer compares."""
    choices = run_choices(ctx)
    ids = [c[1] for c in choices]
    if run_id not in ids:  # deleted meanwhile, or nothing picked yet
        run_id = pick_run(ctx, None, choices)
    sig = signature(ctx, run_id)
    slider = rows_slider(ctx, run_id) if (seen or {}).get("run") != run_id else gr.skip()
    return (gr.update(choices=choices, value=run_id or None), *show_run(ctx, run_id, a, b, which, tuned_now),
            slider, gr.Timer(active=sig.get("state") in ACTIVE_STATES), sig)


def attach_view(ctx: AppContext, wanted: str | None):
    """Page load, or another tab set the run (Launch, the Runs tab's Evaluate): show `wanted` (else the newest
    run with an adapter), freshly read."""
    return view(ctx, pick_run(ctx, wanted, run_choices(ctx)))


def tick(ctx: AppContext, run_id: str, seen, a=None, b=None, which=COMPARE_FILTERS[0], tuned_now=None):
    """The live timer (on only while the shown run trains): redraw when its state or adapters changed."""
    try:
        if signature(ctx, run_id) == seen:
            return gr.skip()
        return view(ctx, run_id, a, b, which, tuned_now, seen)
    except Exception:  # noqa: BLE001 - a poll must not raise a toast every few seconds; the next one retries
        log.warning("Evaluate refresh of %s failed", run_id, exc_info=True)
        return gr.skip()


def run_evaluation(ctx: AppContext, run_id: str, rows: int, max_tokens: int, progress=gr.Progress()):
    if not run_id:
        raise RunError("Pick a run to evaluate.")
    run = ctx.open_run(run_id)
    ev.evaluate_run(run, rows=int(rows), max_new_tokens=int(max_tokens) or None,
                    progress=lambda fraction, text: progress(fraction, desc=text))
    gr.Info("Evaluation done; results saved in the run folder (eval/results.json).")
    return show_run(ctx, run_id)


def compare(ctx: AppContext, run_id: str, a: str, b: str, which: str):
    if not run_id:
        return gr.skip()
    _results, samples = ev.load_results(ctx.open_run(run_id))
    return comparison_table(samples, a, b, which)


def chat(ctx: AppContext, run_id: str, tuned: str, message: str, base_hist, tuned_hist, temperature, max_tokens):
    """Send one message to both models; each keeps its own conversation."""
    message = (message or "").strip()
    if not message:
        return gr.skip()
    if not run_id:
        raise RunError("Pick a run first: the playground uses its base model and adapters.")
    run = ctx.open_run(run_id)
    cfg = load_config(run.config_path)
    adapters = {key: path for key, _label, path in ev.model_variants(run)}
    if tuned not in adapters or tuned == "base":
        raise RunError("This run has no trained adapter to chat with yet.")
    from graders.tools import build_tools

    tools = build_tools(cfg.tools, cfg.base_dir)  # an agent run chats with its tools, as it trained
    out = []
    for hist, adapter in ((base_hist or [], None), (tuned_hist or [], adapters[tuned])):
        hist = [*hist, {"role": "user", "content": message}]
        reply = ev.chat_reply(cfg.model.name, adapter, hist, temperature, max_tokens, cfg.model.quantization,
                              cfg.model.trust_remote_code, template_kwargs=cfg.model.chat_template_kwargs,
                              tools=tools, max_calls=cfg.rft.max_tool_calls)
        out.append([*hist, {"role": "assistant", "content": reply}])
    return "", out[0], out[1]


def build(ctx: AppContext, shared: Shared):
    gr.Markdown("Does training help on prompts it never saw? **Evaluate** answers the held-out rows with the base "
                "model, after SFT and after RFT (greedy), and scores every answer with the run's own graders.",
                elem_classes="ft-help")
    with gr.Row():
        picker = gr.Dropdown(label="Run", choices=[], scale=3,
                             info="The run to evaluate; the one opened in the Monitor or Runs tab is picked.")
        # Its range follows the picked run's held-out row count (rows_slider).
        rows = gr.Slider(5, 500, value=DEFAULT_ROWS, step=5, label="Held-out rows", scale=2, info=ROWS_INFO)
        max_tokens = gr.Number(0, label="Max new tokens", precision=0, scale=1, minimum=0,
                               info="Answer length limit; 0: the run's own (RFT's max_completion_length, or for an "
                                    "SFT-only run the longest reference answer plus a margin)")
    with gr.Row(equal_height=True):
        go_btn = gr.Button("Evaluate", variant="primary", size="md", scale=0, min_width=160)
        status = gr.Markdown()
    # The summary has a column per grader: on a row of its own it fits (beside the chart it was cut at the right).
    summary = gr.Dataframe(label="Mean score per grader (× weight; total = weighted sum; errors = failed "
                           "grades; chars = mean answer length)", interactive=False, wrap=True)
    chart = gr.Plot(show_label=False)
    with gr.Accordion("Row by row: compare two models' answers", open=True):
        with gr.Row():
            a = gr.Dropdown(label="Model A", choices=[], info="Usually the base model")
            b = gr.Dropdown(label="Model B", choices=[], info="Usually the most trained one")
            which = gr.Dropdown(list(COMPARE_FILTERS), value=COMPARE_FILTERS[0], label="Show",
                                info="Where B beats A, loses to it, or ties")
        # Fixed widths and cut texts: sized by content, a long prompt took the whole width and pushed the answers
        # and scores off the screen. The full row shows below when clicked.
        rows_table = gr.Dataframe(interactive=False, wrap=True, max_height=480,
                                  label="Held-out rows (click a row to read it in full)",
                                  column_widths=["5%", "25%", "14%", "20%", "8%", "20%", "8%"])
        row_box = gr.Markdown(ROW_HINT)
    with gr.Accordion("Playground: chat with the base and the tuned model side by side", open=True):
        with gr.Row():
            tuned = gr.Dropdown(label="Tuned model", choices=[], info="Which adapter of the run answers on the right")
            temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Temperature",
                                    info="0: always the most likely answer; higher: more varied")
            chat_tokens = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens",
                                    info="Length limit of each reply")
        with gr.Row():
            base_chat = gr.Chatbot(label="Base model", height=320, feedback_options=None,
                                   placeholder="The base model, without training, answers here.")
            tuned_chat = gr.Chatbot(label="Tuned model", height=320, feedback_options=None,
                                    placeholder="The same model with the run's adapter answers here.")
        msg = gr.Textbox(label="Message", placeholder="Ask both models the same thing, then press Enter",
                         info="Both models answer; each remembers its own side of the conversation.")
        with gr.Row():
            send = gr.Button("Send", variant="primary", size="md", scale=0, min_width=120)
            clear = gr.Button("Clear both chats", size="md", scale=0, min_width=160)

    outs = [status, summary, chart, a, b, rows_table, tuned]
    seen = gr.State(None)
    live = gr.Timer(LIVE_SECONDS, active=False)  # on only while the shown run trains (view decides)
    # Every view is read from the run folder when it is needed, never kept from an earlier moment: on page load
    # and when another tab sets the run, when the user picks one, each time this tab is shown, and while the run
    # trains, when its status.json or adapters change.
    everything = [picker, *outs, rows, live, seen]
    keep = [a, b, which, tuned]
    # Only run_id as input: with triggers=None, a change of any input would fire it (picking Model A would jump
    # the picker back to the run another tab set).
    gr.on(triggers=None, fn=safe(bind(ctx, attach_view)), inputs=[shared.run_id], outputs=everything)
    picker.input(safe(bind(ctx, view)), inputs=[picker, *keep, seen], outputs=everything)
    on_shown(picker, safe(bind(ctx, view)), inputs=[picker, *keep, seen], outputs=everything)
    live.tick(safe(bind(ctx, tick)), inputs=[picker, seen, *keep], outputs=everything, show_progress="hidden")
    # One progress bar (on the summary) rather than a spinner over each of the seven outputs.
    def evaluate_clicked(run_id, n_rows, tokens, progress=gr.Progress()):
        # A named closure, not bind(): Gradio finds the progress bar by this default in the signature.
        return run_evaluation(ctx, run_id, n_rows, tokens, progress)

    go_btn.click(safe(evaluate_clicked), inputs=[picker, rows, max_tokens], outputs=outs,
                 concurrency_limit=1, concurrency_id="finetuner-evaluate", show_progress_on=[summary])
    gr.on([a.input, b.input, which.input], safe(bind(ctx, compare)), inputs=[picker, a, b, which], outputs=rows_table)

    def on_row(run_id, model_a, model_b, shown_rows, evt: gr.SelectData):
        if not run_id:
            return gr.skip()
        results, samples = ev.load_results(ctx.open_run(run_id))
        labels = {k: m["label"] for k, m in (results or {}).get("models", {}).items()}
        return row_detail(samples, model_a, model_b, evt.row_value, evt.index[0] if evt.index else None,
                          shown_rows, labels)

    rows_table.select(safe(on_row), inputs=[picker, a, b, which], outputs=row_box)
    gr.on([send.click, msg.submit], safe(bind(ctx, chat)),
          inputs=[picker, tuned, msg, base_chat, tuned_chat, temperature, chat_tokens],
          outputs=[msg, base_chat, tuned_chat])
    gr.on([clear.click, picker.change], lambda: ([], []), outputs=[base_chat, tuned_chat])
    picker.change(lambda: ROW_HINT, outputs=row_box)
