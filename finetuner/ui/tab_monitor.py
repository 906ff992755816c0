"""Tab: monitor (placeholder until built)."""


def build(ctx, shared):
    import gradio as gr

    gr.Markdown("This tab is being built.")
