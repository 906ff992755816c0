"""Tab 2b, Tools (Agent RFT, optional): give the model Python functions it may call while it answers.

A tool is written (or loaded from the built-in examples) in a code editor: a typed function with a docstring,
whose type hints and docstring are what the model is told. "Add / update tool" checks it with
`graders.tools.build_tool` (nothing runs) and stores its spec in `project["config"]["tools"]` (the run's
`tools:` list, so the Train tab's run file and the draft carry it); "Try it" runs one call by hand in the
grader sandbox. A CSV for `table_lookup` (any code reading `TABLE`) is copied into the uploads folder, like the
Data tab's files, so the draft still finds it after a restart. The notice at the top says whether the
project's model can use tools (tool_forms.support_note). Handlers are plain functions; the pieces without a
page live in tool_forms.py.
"""

from __future__ import annotations

import copy

import gradio as gr

from graders.errors import FinetunerError
from graders.tool_examples import EXAMPLES
from graders.tools import build_tool
from finetuner.ui import tool_forms as tf
from finetuner.ui.context import AppContext, Shared, bind, new_project, safe
from finetuner.ui.data_view import display_name, save_upload

SKIP5 = (gr.skip(),) * 5


def _view(project: dict, message: str = "", selected: str | None = None):
    """(project, list, schema, tool picker, arguments, message): what every change to the list redraws."""
    specs = tf.tools_of(project)
    names = [s.get("name") for s in specs]
    pick = selected if selected in names else (names[0] if names else None)
    return (project, tf.rows(specs), tf.schema_text(specs), gr.update(choices=names, value=pick),
            _arguments(specs, pick), message)


def _arguments(specs: list[dict], name: str | None) -> str:
    spec = tf.find(specs, name)
    tool = tf.built(spec)[0] if spec else None
    return tf.arguments_template(tool) if tool else ""


def _with_tools(project, specs: list[dict]) -> dict:
    project = copy.deepcopy(project) if project else new_project()
    project.setdefault("config", {})["tools"] = specs
    return project


def load_example(name):
    """The example's source for the editor (it replaces what is there: the person asked for it)."""
    if name not in EXAMPLES:
        return gr.skip(), "Pick an example first."
    source, _fn, desc = EXAMPLES[name]
    extra = " It reads the CSV you upload below as `TABLE`: upload one before adding it." if "TABLE" in source else ""
    return source, f"Loaded `{name}`: {desc}{extra} Edit it if you like, then **Add / update tool**."


def upload_table(ctx: AppContext, file):
    """Keep the uploaded CSV in the uploads folder (a stable path the draft can name); (path, message)."""
    if not file:
        return "", "No table: tools reading `TABLE` cannot be added."
    path = save_upload(file, ctx.uploads_for() / "tool-tables")
    return str(path), f"Table `{display_name(str(path))}` ready: tools reading `TABLE` will read it."


def add_tool(project, code, table):
    """Build the editor's tool and add it (or replace the tool of the same name); a bad tool says why here,
    and the editor keeps its code (it is not an output)."""
    try:
        spec, tool = tf.spec_from(code, table)
    except FinetunerError as err:
        return (*SKIP5, f"❌ {err}")
    specs, replaced = tf.upsert(tf.tools_of(project), spec)
    project = _with_tools(project, specs)
    verb = "Updated" if replaced else "Added"
    return _view(project, f"✅ {verb} `{tool.name}({tf.arguments_text(tool)})`.", tool.name)


def remove_tool(project, name):
    specs = tf.tools_of(project)
    if not tf.find(specs, name):
        return (*SKIP5, "Pick a tool first.")
    project = _with_tools(project, [s for s in specs if s.get("name") != name])
    return _view(project, f"Removed `{name}`.")


def edit_tool(project, name):
    """The picked tool's code back in the editor, with its table; (code, table, message)."""
    spec = tf.find(tf.tools_of(project), name)
    if spec is None or not spec.get("source"):
        return gr.skip(), gr.skip(), "Pick a tool first."
    table = spec.get("table") or ""
    return spec["source"], table, f"`{name}` is in the editor: change it, then **Add / update tool**."


def pick_tool(project, name):
    """Arguments pre-filled from the picked tool's signature."""
    return _arguments(tf.tools_of(project), name)


def try_tool(project, name, args_text):
    """One call by hand in the sandbox: the result or error the model would read, and the seconds."""
    spec = tf.find(tf.tools_of(project), name)
    if spec is None:
        return "Add a tool and pick it first."
    try:
        args = tf.parse_arguments(args_text)
        tool = build_tool(spec)
    except FinetunerError as err:
        return f"❌ {err}"
    return tf.call_markdown(tool, args)


def limits_markdown(project: dict) -> str:
    rft = ((project or {}).get("config") or {}).get("rft") or {}
    calls, length = rft.get("max_tool_calls", 3), rft.get("max_completion_length", 128)
    method = ((project or {}).get("config") or {}).get("method") or "sft"
    sft_only = "" if "rft" in method else ("\n\n⚠️ The method is SFT: tools are used by the RFT stage only. "
                                            "Choose RFT or SFT then RFT on the Train tab.")
    return (f"**Limits** (Train tab → *Advanced: RFT stage*): **Max tool calls** = {calls} rounds of calls per "
            f"answer; **Max completion length** = {length} tokens bounds the whole trajectory (the calls, the "
            f"tools' answers and the final answer). Each call has 5 s and 1 GB by default (set `timeout_s`, `memory_mb` "
            f"in the run file).{sft_only}")


def from_project(project, pick=None, typed=None):
    """Redraw the list, schema, picker, arguments, model notice and limits from the project. Arguments typed
    for the tool still picked are kept (another tab's change must not wipe them)."""
    project = project or new_project()
    _p, table, schema, picker, args, _m = _view(project, selected=pick)
    if typed and picker.get("value") == pick and pick:
        args = gr.skip()
    note = tf.support_note(project)
    return table, schema, picker, args, gr.update(value=note, visible=bool(note)), limits_markdown(project)


def build(ctx: AppContext, shared: Shared):
    gr.Markdown("Optional, for **Agent RFT**: Python functions the model may call while it answers (a calculator, "
                "a table lookup...). RFT rewards the final answer, so the model learns when a call helps. "
                "Tools run in the graders' sandbox (time and memory limits, no network).", elem_classes="ft-help")
    notice = gr.Markdown(visible=False, elem_classes="ft-warn")
    with gr.Row():
        with gr.Column(scale=3, min_width=440):
            gr.Markdown("### Write a tool")
            with gr.Row():
                example = gr.Dropdown(tf.example_choices(), value="calculator", label="Start from an example",
                                      scale=3, info="A built-in tool to read, edit and add.")
                load_btn = gr.Button("Load into the editor", size="md", scale=1, min_width=160)
            code = gr.Code(EXAMPLES["calculator"][0], language="python", lines=16, max_lines=30, label="Tool code")
            gr.Markdown("The tool is the first function whose name does not start with `_`. Its **type hints and "
                        "docstring are what the model is told** (describe each argument under `Args:`); it "
                        "returns text, which the model reads.", elem_classes="ft-help")
            table_file = gr.File(label="Table for `TABLE` (CSV, for table_lookup)", file_types=[".csv"],
                                 height=130)
            table = gr.Textbox("", visible=False, label="Table path", info="Where the uploaded CSV is kept.")
            add_btn = gr.Button("Add / update tool", variant="primary")
            form_msg = gr.Markdown()
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("### Your tools")
            listing = gr.Dataframe(headers=tf.HEAD, value=[], interactive=False, wrap=True, max_height=220,
                                   column_widths=["24%", "36%", "40%"])
            pick = gr.Dropdown([], label="Tool", info="Pick one to try, edit or remove it.")
            with gr.Row():
                edit_btn = gr.Button("Edit", size="sm")
                rm_btn = gr.Button("Remove", size="sm", variant="stop")
            list_msg = gr.Markdown()
            gr.Markdown("### Try it")
            args = gr.Code("", language="json", lines=3, label="Arguments (JSON)")
            try_btn = gr.Button("Call the tool", size="sm")
            result = gr.Markdown()
            limits = gr.Markdown(limits_markdown(new_project()), elem_classes="ft-help")
            with gr.Accordion("What the model is shown (JSON schema)", open=False):
                schema = gr.Code("", language="json", lines=10, label="tools")
    view = [shared.project, listing, schema, pick, args]
    load_btn.click(safe(load_example), [example], [code, form_msg])
    table_file.upload(safe(bind(ctx, upload_table)), [table_file], [table, form_msg])
    table_file.clear(lambda: ("", ""), None, [table, form_msg])
    add_btn.click(safe(add_tool), [shared.project, code, table], view + [form_msg])
    rm_btn.click(safe(remove_tool), [shared.project, pick], view + [list_msg])
    edit_btn.click(safe(edit_tool), [shared.project, pick], [code, table, list_msg])
    pick.input(safe(pick_tool), [shared.project, pick], [args])
    try_btn.click(safe(try_tool), [shared.project, pick, args], [result])
    outputs = [listing, schema, pick, args, notice, limits]
    shared.on_project_loaded(from_project, outputs)
    shared.project.change(safe(from_project), [shared.project, pick, args], outputs, show_progress="hidden")
