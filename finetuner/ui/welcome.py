"""The header above the tabs: what the app does in one line, and "Try the demo", which in one click launches
the offline example run (SFT->RFT on the built-in model), opens the Monitor on it and loads its project (data,
graders, settings) into every tab."""

from __future__ import annotations

from pathlib import Path

import yaml

from finetuner.ui.context import AppContext, Shared, bind, confirm_row, new_project, safe

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "arithmetic"


def demo_project() -> dict:
    """The arithmetic example as a project: its data file, graders and run settings."""
    spec = yaml.safe_load((EXAMPLE / "run.yaml").read_text(encoding="utf-8"))
    project = new_project()
    project["data"] = {"path": str(EXAMPLE / "train.jsonl"), "name": "train.jsonl", "ok": True}
    project["graders"] = spec.pop("graders")
    data = spec.pop("data")
    for key in ("train", "rft_train", "eval"):
        data[key] = str(EXAMPLE / data[key])
    spec["data"] = data
    project["config"] = spec
    return project


def header(ctx: AppContext):
    import gradio as gr

    with gr.Row(equal_height=False):
        gr.Markdown("## Finetuner\nTeach a language model from your data and your own graders: **SFT** learns "
                    "from labelled answers, **RFT** learns from scores of its own attempts, **SFT then RFT** "
                    "does both. Work through the numbered tabs.", elem_classes="ft-intro")
        gr.Button("Try the demo", variant="secondary", size="md", elem_id="try-demo", scale=0, min_width=160)
        start = gr.Button("Start over", variant="secondary", size="md", elem_id="start-over", scale=0, min_width=130)
    # Your draft (data, graders, settings) is kept on disk and restored on reload (draft.py); these empty it.
    confirm = confirm_row("**Start over?** This empties the data choice, column mapping, graders and Train "
                          "settings on this page and deletes the saved draft. Runs are kept.", "Yes, start over")
    note = gr.Markdown(visible=False, elem_id="draft-note", elem_classes="ft-help")
    return {"start_over": start, "confirm": confirm, "note": note}


def start_demo(ctx: AppContext):
    """The "Try the demo" button: launch examples/arithmetic/run.yaml (what `python -m finetuner demo` runs) and open the
    Monitor on it; its project (data, graders, settings) goes to every tab, to read or to change and relaunch.
    Returns (project, run id, tabs). While a run trains the demo waits in the queue, and says its place."""
    import gradio as gr

    from finetuner.config import load_config
    from finetuner.ui.queue_view import position_text

    cfg = load_config(EXAMPLE / "run.yaml")
    same = _demo_in_progress(ctx, cfg)
    if same is not None:  # a second click (or a second tab): show the demo that is on its way, not a copy of it
        gr.Info(f"The arithmetic demo is already {same['state']} ({same['id']}): the Monitor shows it.")
        return demo_project(), same["id"], gr.Tabs(selected="monitor")
    run = ctx.launch(cfg)  # starts now, or waits its turn in the queue behind another run
    queued = position_text(ctx, run.id)
    if queued:
        gr.Info(f"{queued} The arithmetic demo ({run.id}) starts by itself when the machine is free; the Monitor "
                f"shows it meanwhile.")
        return demo_project(), run.id, gr.Tabs(selected="monitor")
    gr.Info(f"Started the arithmetic demo ({run.id}): SFT teaches the \"Answer: N\" format, then RFT rewards "
            f"correct sums, on the built-in model, about 3 minutes. Watch the held-out score rise on the Monitor; "
            f"the demo's data, graders and settings are in every tab.")
    return demo_project(), run.id, gr.Tabs(selected="monitor")


def _demo_in_progress(ctx: AppContext, cfg) -> dict | None:
    """This user's run of exactly the demo's config that is waiting or training, if any."""
    from finetuner.config import load_config, portable_config, to_dict
    from finetuner.runs import ACTIVE_STATES, WAITING, RunFolder

    demo = to_dict(portable_config(cfg))
    for status in ctx.list_runs():
        if status.get("state") in (*ACTIVE_STATES, WAITING) and status.get("name") == cfg.name:
            try:
                if to_dict(load_config(RunFolder(status["path"]).config_path)) == demo:
                    return status
            except Exception:  # noqa: BLE001 - a config that no longer loads is simply not the demo
                continue
    return None


def wire_demo_button(ctx: AppContext, shared: Shared):
    import gradio as gr

    button = next(b for b in gr.context.Context.root_block.blocks.values()
                  if getattr(b, "elem_id", None) == "try-demo")

    event = button.click(safe(bind(ctx, start_demo)), outputs=[shared.project, shared.run_id, shared.tabs])
    for fn, outputs in shared.refreshers:
        event = event.then(safe(fn), inputs=[shared.project], outputs=outputs)
