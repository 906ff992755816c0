"""The Gradio app: one module per tab, all built over the engine's and graders' public functions.

    demo = build_app(AppContext("runs")); demo.launch(**launch_kwargs(ctx))

Tab modules each expose `build(ctx, shared)` (create the tab's components and wire its handlers) and keep
their handlers as plain functions, tested without a browser.
"""

from __future__ import annotations

from finetuner.ui.context import AppContext, Shared, new_project

TITLE = "Finetuner"
CSS = """
.ft-help {color: var(--body-text-color-subdued); font-size: 0.9em;}
.ft-warn {border-left: 4px solid #e0a000; padding-left: 8px;}
"""


def build_app(ctx: AppContext):
    import gradio as gr
    import transformers

    # Import transformers whole before any handler thread runs: its lazy module is in sys.modules while a first
    # import is still under way, and `datasets` (hashing a dataset in another handler) then finds no
    # `transformers.PreTrainedTokenizerBase` and fails (seen at page load: Evaluate and Monitor at once).
    transformers.PreTrainedTokenizerBase  # noqa: B018 - touching it finishes the import
    from finetuner.ui import (draft, tab_data, tab_evaluate, tab_graders, tab_lab, tab_monitor, tab_runs,
                              tab_tools, tab_train, welcome)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        project = gr.State(new_project())
        run_id = gr.State("")
        header = welcome.header(ctx)
        with gr.Tabs() as tabs:
            shared = Shared(project=project, run_id=run_id, tabs=tabs)
            with gr.Tab("1. Data", id="data"):
                tab_data.build(ctx, shared)
            with gr.Tab("2. Graders", id="graders"):
                tab_graders.build(ctx, shared)
            # Optional (Agent RFT), so it keeps the numbered steps' numbers: "2b", not a renumbering.
            with gr.Tab("3. Tools", id="tools"):
                tab_tools.build(ctx, shared)
            with gr.Tab("4. Train", id="train"):
                tab_train.build(ctx, shared)
            with gr.Tab("5. Monitor", id="monitor"):
                tab_monitor.build(ctx, shared)
            with gr.Tab("6. Evaluate & chat", id="evaluate"):
                tab_evaluate.build(ctx, shared)
            with gr.Tab("Lab", id="lab"):  # SFT vs RFT vs both, measured on the same data and budget
                tab_lab.build(ctx, shared)
            with gr.Tab("Runs", id="runs"):
                tab_runs.build(ctx, shared)
        welcome.wire_demo_button(ctx, shared)
        draft.wire(ctx, shared, header, demo)  # the draft on disk: restored on load, saved on change
    return demo


def launch_kwargs(ctx: AppContext) -> dict:
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS, "allowed_paths": [str(ctx.runs_dir)], "footer_links": [],
            "show_error": False}
