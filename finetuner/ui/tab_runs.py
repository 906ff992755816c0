"""Runs tab: every run under the runs folder (it survives an app restart: the folders are the history),
open one in the Monitor or Evaluate tab, resume, compare several, export, delete.

A run whose training process died without a word is shown `failed` (runs.refresh_state notices it).
Exports are finetuner/runs/export.py's; this module only lays them out and hands over the files.
"""

from __future__ import annotations

import sys
import time

import gradio as gr
import yaml

from finetuner.runs import export, export_gguf
from graders.errors import RunError
from finetuner.runs import (ACTIVE_STATES, FINAL_STATES, launch_lock, refuse_if_busy,
                    start_child)
from finetuner.runs.queue import WAITING
from finetuner.ui import figures, queue_view
from finetuner.ui.context import AppContext, Shared, bind, confirm_row, safe
from finetuner.ui.run_watch import forget, get_watch, latest, tail_rows
from finetuner.ui.tab_monitor import run_choices
from finetuner.ui.tab_shown import on_shown

LIVE_SECONDS = 5.0  # the table's refresh while a run trains; off otherwise (opening the tab re-reads it)
HEADERS = ["run", "state", "method", "model", "steps", "started", "duration", "reward", "eval reward", "loss",
           "note"]


def _duration(st: dict) -> str:
    start = st.get("started") or st.get("created")
    if not start:
        return ""
    end = st.get("finished") if st.get("state") not in ACTIVE_STATES else None
    s = int((end or time.time()) - start)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _model(path) -> str:
    try:
        spec = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        return str((spec.get("model") or {}).get("name", ""))
    except (OSError, yaml.YAMLError):
        return ""


def _num(v) -> str:
    return "" if v is None else f"{v:.3f}"


def runs_table(ctx: AppContext) -> tuple[dict, list[str]]:
    """({"headers", "data"} for the table, run ids in table order). Reads only each metrics file's tail."""
    data, ids = [], []
    for st in ctx.list_runs():
        run = ctx.open_run(st["id"])
        tail = tail_rows(run.metrics_path)
        started = st.get("started") or st.get("created")
        steps = f"{st.get('run_step', st.get('step', 0)) or 0}"
        if st.get("state") in ACTIVE_STATES and st.get("total"):
            steps = f"{st.get('stage', '')} {st.get('step', 0)}/{st['total']}"
        note = str(st.get("error") or "").replace("`", "")  # a table cell shows Markdown marks literally
        data.append([st["id"], st.get("state", "?"), st.get("method", ""), _model(run.path), steps,
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "", _duration(st),
                     _num(latest(tail, "reward")), _num(latest(tail, "eval_reward")), _num(latest(tail, "loss")),
                     note[:120] + ("…" if len(note) > 120 else "")])
        ids.append(st["id"])
    return {"headers": HEADERS, "data": data}, ids


def refresh(ctx: AppContext, selected: str | None = None):
    table, ids = runs_table(ctx)
    choices = run_choices(ctx)
    value = selected if selected in ids else (ids[0] if ids else None)
    return table, ids, gr.update(choices=choices, value=value), gr.update(choices=choices)


def _live(table: dict) -> bool:
    state = HEADERS.index("state")
    # A waiting run starts by itself (the queue): the table must notice without a click.
    return any(row[state] in (*ACTIVE_STATES, WAITING) for row in table["data"])


def shown(ctx: AppContext, selected: str | None = None):
    """Page load, another tab set the run, or this tab was opened: the table read from the run folders now, and
    the timer on while a run trains (a table computed earlier showed a finished run as running)."""
    listing = refresh(ctx, selected)
    return (*listing, gr.Timer(active=_live(listing[0])), listing[0])


def auto_refresh(ctx: AppContext, last: dict | None):
    """The timer (on while a run trains): redraw the table only when a row changed (a run started, ended or
    moved on); it switches itself off once nothing trains."""
    table, ids = runs_table(ctx)
    if table == last:
        return gr.skip()
    choices = run_choices(ctx)
    return table, ids, gr.update(choices=choices), gr.update(choices=choices), table, gr.Timer(active=_live(table))


def select_row(ids: list[str], row_index: int | None, row_value=None):
    """The run of a clicked row: its own first cell (the run id), since the timer may have redrawn the table
    (a new run on top) between the page drawing it and the click arriving; else its place in `ids`."""
    if row_value and row_value[0] in (ids or []):
        return row_value[0]
    if row_index is None or not (0 <= row_index < len(ids or [])):
        return gr.skip()
    return ids[row_index]


def open_in(ctx: AppContext, tab: str, run_id: str):
    """Show `run_id` in another tab ("monitor" or "evaluate")."""
    if not run_id:
        raise RunError("Pick a run in the table first.")
    ctx.open_run(run_id)
    return run_id, gr.Tabs(selected=tab)


def resume(ctx: AppContext, run_id: str):
    """Continue a stopped or failed run from its last checkpoint, as a new child process."""
    if not run_id:
        raise RunError("Pick a run in the table first.")
    run = ctx.open_run(run_id)
    with launch_lock(ctx.runs_dir):  # the same lock as Launch: two clicks cannot start two processes
        refuse_if_busy(ctx.runs_dir)
        state = run.read_status().get("state")
        if state == "finished":
            raise RunError(f"Run {run_id} already finished; there is nothing to resume. Start a new run instead.")
        if state not in FINAL_STATES:
            raise RunError(f"Run {run_id} is {state}; only a stopped or failed run can be resumed.")
        run.write_status(state="queued", error=None, pid=None, queued=time.time())
        start_child(run, [sys.executable, "-m", "finetuner", "train", "--resume", str(run.path)])
    gr.Info(f"Resuming {run_id} from its last checkpoint. Watch it in the Monitor tab.")
    return run_id, gr.Tabs(selected="monitor")


def delete(ctx: AppContext, run_id: str):
    if not run_id:
        raise RunError("Pick a run in the table first.")
    run = ctx.open_run(run_id)
    export.delete_run(run)
    forget(run.path)
    gr.Info(f"Deleted run {run_id}.")
    return (gr.update(visible=False), *refresh(ctx))


# ------------------------------------------------------------------ compare


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def config_diff(ctx: AppContext, run_ids: list[str]) -> dict:
    """The config fields that differ between the runs: one row per field, one column per run."""
    flats = []
    for rid in run_ids:
        spec = yaml.safe_load(ctx.open_run(rid).config_path.read_text(encoding="utf-8")) or {}
        flats.append(_flatten(export.strip_secrets(spec)))
    keys = sorted(set().union(*flats)) if flats else []
    data = []
    for key in keys:
        values = [f.get(key, "—") for f in flats]
        if len({repr(v) for v in values}) > 1:
            data.append([key, *[str(v) for v in values]])
    if flats and not data:
        data = [["(no differences)", *["" for _ in flats]]]
    return {"headers": ["field", *run_ids], "data": data}


def compare(ctx: AppContext, run_ids: list[str], metric: str | None, smoothing: float):
    """Overlaid curves of `metric` and the config diff for 2+ runs; also the metrics they share."""
    run_ids = list(run_ids or [])
    if len(run_ids) < 2:
        fig = figures.empty_figure("Compare runs", "Pick two or more runs to compare.")
        return fig, {"headers": ["field"], "data": []}, gr.update()
    watches = [(rid, get_watch(ctx.open_run(rid).path)) for rid in run_ids]
    shared = set.intersection(*(set(w.columns.keys()) for _r, w in watches)) or \
        set().union(*(w.columns.keys() for _r, w in watches))
    preferred = [m for m in ("reward", "loss", "eval_reward") if m in shared]
    choices = preferred + sorted(shared - set(preferred))
    metric = metric if metric in choices else (choices[0] if choices else "reward")
    fig = figures.compare_figure([(rid, w.columns) for rid, w in watches], metric, smoothing or 0.0)
    return fig, config_diff(ctx, run_ids), gr.update(choices=choices, value=metric)


# ------------------------------------------------------------------ export


def _run(ctx, run_id):
    if not run_id:
        raise RunError("Pick a run in the table first.")
    return ctx.open_run(run_id)


def export_adapter(ctx: AppContext, run_id: str):
    path = export.export_adapter(_run(ctx, run_id))
    return str(path), f"Adapter saved as `{path}`; download it above."


def export_bundle(ctx: AppContext, run_id: str):
    path = export.export_bundle(_run(ctx, run_id))
    return str(path), (f"Bundle saved as `{path}`: run.yaml, data, graders, README with the "
                       f"commands to train it again from the Finetuner project folder (`.venv/bin/python -m "
                       f"finetuner train BUNDLE/run.yaml`, or under `accelerate launch`).")


def export_merged(ctx: AppContext, run_id: str, progress=gr.Progress()):
    path = export.export_merged(_run(ctx, run_id), progress=lambda f, text: progress(f, desc=text))
    return gr.skip(), (f"Merged model saved in `{path}` (a plain transformers folder: load it with "
                       f"`AutoModelForCausalLM.from_pretrained`). Push it to the Hub below, or copy the folder.")


def make_gguf(ctx: AppContext, run_id: str, quant: str, progress=gr.Progress()):
    path = export_gguf.export_gguf(_run(ctx, run_id), quant, progress=lambda f, text: progress(f, desc=text))
    return str(path), (f"GGUF saved as `{path}` (download it above) for llama.cpp, LM Studio or Ollama. The Ollama "
                       f"`Modelfile` is beside it in `{path.parent}`; there run `ollama create {path.stem} -f "
                       f"Modelfile`, then `ollama run {path.stem}`.")


def push(ctx: AppContext, run_id: str, repo_id: str, token: str, what: str, private: bool):
    url = export.push_to_hub(_run(ctx, run_id), repo_id, token, "merged" if what.startswith("merged") else
                             "adapter", private)
    # The token box is cleared so it does not stay on the page either.
    return "", f"Uploaded to {url}"


def build(ctx: AppContext, shared: Shared):
    gr.Markdown("Every run in the runs folder, newest first. This list is the folders themselves, so it survives "
                "restarting the app; a run whose process died is marked failed.", elem_classes="ft-help")
    # Fixed widths: sized by content, an empty column (no eval reward yet) squeezed its header to one letter a line.
    table = gr.Dataframe(interactive=False, wrap=True, max_height=360, label="Runs (click a row to select it)",
                         column_widths=["17%", "7%", "7%", "6%", "6%", "11%", "7%", "7%", "7%", "6%", "19%"])
    ids = gr.State([])
    with gr.Row():
        selected = gr.Dropdown(label="Selected run", choices=[], scale=2,
                               info="The run the buttons and exports act on; clicking a table row selects it.")
        with gr.Column(scale=3):
            with gr.Row():
                monitor_btn = gr.Button("Open in Monitor", variant="primary", size="md", min_width=160)
                eval_btn = gr.Button("Evaluate", size="md", min_width=90)
                resume_btn = gr.Button("Resume", size="md", min_width=90)
                refresh_btn = gr.Button("↻ Refresh", size="md", min_width=90)
                delete_btn = gr.Button("Delete…", variant="stop", size="md", min_width=90)
            gr.Markdown("**Resume** continues a stopped or failed run from its last checkpoint. **Delete** removes "
                        "the run folder (asks first; not while it trains).", elem_classes="ft-help")
    queue_view.build(ctx, shared)  # the runs waiting their turn: Up, Down, Cancel
    confirm, yes, no = confirm_row("**Delete this run folder for good?** Its checkpoints, adapters, metrics and "
                                   "exports are removed. A run that is training cannot be deleted.",
                                   "Yes, delete it")
    with gr.Accordion("Compare runs", open=False):
        with gr.Row():
            chosen = gr.Dropdown(label="Runs to compare", choices=[], multiselect=True, scale=3,
                                 info="Two or more: their curves are overlaid and their configs compared.")
            metric = gr.Dropdown(label="Metric", choices=["reward"], value="reward", scale=2,
                                 info="Any metric the runs logged")
            smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Smoothing", scale=2,
                                  info="Exponential moving average (0 = raw)")
        compare_plot = gr.Plot(show_label=False)
        diff = gr.Dataframe(label="Config fields that differ", interactive=False, wrap=True)
    with gr.Accordion("Export the selected run", open=False):
        gr.Markdown("**Adapter**: the small LoRA weights (load on top of the base model). **Merged model**: base and "
                    "adapter in one folder, for tools that do not know adapters. **GGUF**: the merged model as one "
                    "file for llama.cpp, LM Studio and Ollama (with an Ollama Modelfile), written by llama.cpp's own "
                    "converter (fetched once, 77 MB). **Bundle**: config, data, graders "
                    "and commands to train the same run elsewhere (no secrets).", elem_classes="ft-help")
        with gr.Row():
            adapter_btn = gr.Button("Download adapter (.zip)", size="md")
            merged_btn = gr.Button("Make merged model", size="md")
            bundle_btn = gr.Button("Download reproducible bundle (.zip)", size="md")
        with gr.Row():
            quant = gr.Dropdown(["q8_0", "f16"], value="q8_0", label="GGUF quantization", scale=1,
                                info="q8_0: near-lossless, half the size of f16")
            gguf_btn = gr.Button("Make GGUF", size="md", scale=1)
        download = gr.File(label="Download", interactive=False)
        with gr.Row():
            repo = gr.Textbox(label="Hub repository", placeholder="your-name/model-name", scale=2,
                              info="Created if missing")
            token = gr.Textbox(label="Hugging Face token", type="password", scale=2,
                               info="Needs write access. Used for this upload only, never saved.")
            what = gr.Radio(["adapter", "merged model"], value="adapter", label="Upload", scale=1,
                            info="Merged: make it first")
            private = gr.Checkbox(True, label="Private repository", scale=1, info="Only you can see it")
        with gr.Row():
            push_btn = gr.Button("Push to Hub", size="md", scale=0, min_width=160)
            export_msg = gr.Markdown()

    listing = [table, ids, selected, chosen]
    last = gr.State(None)
    timer = gr.Timer(LIVE_SECONDS, active=False)
    gr.on(triggers=None, fn=safe(bind(ctx, shown)), inputs=[shared.run_id], outputs=[*listing, timer, last])
    on_shown(table, safe(bind(ctx, shown)), inputs=[selected], outputs=[*listing, timer, last])
    timer.tick(safe(bind(ctx, auto_refresh)), inputs=[last], outputs=[*listing, last, timer], show_progress="hidden")
    refresh_btn.click(safe(bind(ctx, shown)), inputs=[selected], outputs=[*listing, timer, last],
                      api_name="runs_refresh")

    def on_select(ids_now, evt: gr.SelectData):
        return select_row(ids_now, evt.index[0] if evt.index else None, evt.row_value)

    table.select(safe(on_select), inputs=[ids], outputs=selected)
    monitor_btn.click(safe(bind(ctx, open_in, "monitor")), inputs=[selected], outputs=[shared.run_id, shared.tabs])
    eval_btn.click(safe(bind(ctx, open_in, "evaluate")), inputs=[selected], outputs=[shared.run_id, shared.tabs])
    resume_btn.click(safe(bind(ctx, resume)), inputs=[selected], outputs=[shared.run_id, shared.tabs])
    delete_btn.click(lambda: gr.update(visible=True), outputs=confirm)
    no.click(lambda: gr.update(visible=False), outputs=confirm)
    yes.click(safe(bind(ctx, delete)), inputs=[selected], outputs=[confirm, *listing])
    gr.on([chosen.change, metric.input, smoothing.release], safe(bind(ctx, compare)),
          inputs=[chosen, metric, smoothing], outputs=[compare_plot, diff, metric])
    adapter_btn.click(safe(bind(ctx, export_adapter)), inputs=[selected], outputs=[download, export_msg])
    bundle_btn.click(safe(bind(ctx, export_bundle)), inputs=[selected], outputs=[download, export_msg])
    def merge_clicked(run_id, progress=gr.Progress()):
        # A named closure, not bind(): Gradio finds the progress bar by this default in the signature.
        return export_merged(ctx, run_id, progress)

    merged_btn.click(safe(merge_clicked), inputs=[selected], outputs=[download, export_msg],
                     concurrency_limit=1, concurrency_id="finetuner-evaluate")
    def gguf_clicked(run_id, quant_now, progress=gr.Progress()):
        return make_gguf(ctx, run_id, quant_now, progress)

    gguf_btn.click(safe(gguf_clicked), inputs=[selected, quant], outputs=[download, export_msg],
                   concurrency_limit=1, concurrency_id="finetuner-evaluate")
    push_btn.click(safe(bind(ctx, push)), inputs=[selected, repo, token, what, private], outputs=[token, export_msg])
