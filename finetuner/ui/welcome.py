"""The header above the tabs: what the app does in one line, and "Try the demo", which loads the offline
example project (data, graders, SFT->RFT on the built-in model) into every tab in one click."""

from __future__ import annotations

from pathlib import Path

import yaml

from .context import AppContext, Shared, new_project, safe

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


def wire_demo_button(ctx: AppContext, shared: Shared):
    import gradio as gr

    button = next(b for b in gr.context.Context.root_block.blocks.values()
                  if getattr(b, "elem_id", None) == "try-demo")

    @safe
    def load_demo():
        gr.Info("Loaded the arithmetic demo: data, two graders and an SFT then RFT plan on the built-in model. "
                "Check each tab, then press Launch on the Train tab.")
        return demo_project(), gr.Tabs(selected="train")

    event = button.click(load_demo, outputs=[shared.project, shared.tabs])
    for fn, outputs in shared.refreshers:
        event = event.then(safe(fn), inputs=[shared.project], outputs=outputs)
