"""Run a handler each time the top-level tab holding a component is shown.

    on_shown(picker, safe(bind(ctx, view)), inputs=[picker], outputs=[...])

A tab's view of a run must be read when the person looks at it: a view computed at page load (or when the run
was launched) went stale, and Gradio renders a tab's contents only once it is first opened, so a `gr.Timer`
inside an unopened tab has not ticked yet either. A tab module gets only its components from `build`, so the
`gr.Tab` is found by walking up their parents (every Gradio block records the block it was rendered in).
"""

from __future__ import annotations


def enclosing_tab(block):
    """The nearest `gr.Tab` around `block`, or None (a block outside any tab, as in a test's bare Blocks)."""
    import gradio as gr

    parent = getattr(block, "parent", None)
    while parent is not None and not isinstance(parent, gr.Tab):
        parent = getattr(parent, "parent", None)
    return parent


def on_shown(block, fn, inputs, outputs) -> bool:
    """Wire `fn` to the select event of the tab around `block` (a click on the tab). False when there is none."""
    tab = enclosing_tab(block)
    if tab is None:
        return False
    tab.select(fn, inputs=inputs, outputs=outputs, show_progress="hidden")
    return True
