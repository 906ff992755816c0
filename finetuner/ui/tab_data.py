"""Tab 1, Data: upload a file (or name a Hugging Face dataset), say what it is for, and see whether it can train:
format, rows, columns, token lengths, every problem by line, and a preview through the chat template with the
trained text highlighted. Column mapping and the evaluation split live here too.

Fills `project["data"]` (path, name, method_hint, format, rows, columns, has_labels, ok, plus token lengths
for the Train tab's memory estimate) and `project["config"]["data"]` / `["method"]`. Handlers are plain
functions: `upload_data(ctx, project, file, *settings)`, `use_hub_id(project, hub_id, *settings)`,
`check(project, *settings)` with settings in the order of `SETTINGS`, and `from_project(project)`.
"""

from __future__ import annotations

import copy

import gradio as gr

from finetuner.config import DataConfig, help_for, iter_fields
from finetuner.data import check_data, detect_format, split_indices
from finetuner.planning import recommend
from graders.errors import DataError
from finetuner.ui import task_source
from finetuner.ui.context import AppContext, Shared, bind, safe
from finetuner.ui.data_view import TOKENIZER_LOCK, display_name, preview_html, report_markdown, save_upload, tokenizer_for

METHODS = [("SFT: learn from labelled answers", "sft"), ("RFT: learn from graders' scores", "rft"),
           ("SFT then RFT", "sft+rft")]
EVAL_SHARE, EVAL_FILE = "Hold out a share of the training data", "Use a separate evaluation file"
COLUMNS = ("messages_column", "prompt_column", "completion_column", "text_column")
# The settings every check reads, in the order handlers take them after `project`.
SETTINGS = ("method", "format", *COLUMNS, "split", "eval_mode", "eval_fraction", "max_rows")
FILE_TYPES = [".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq"]
DEFAULTS = DataConfig()


def _copy(project: dict | None) -> dict:
    from finetuner.ui.context import new_project

    return copy.deepcopy(project) if project else new_project()


def _data_cfg(project: dict) -> dict:
    return project.setdefault("config", {}).setdefault("data", {})


def _with_source(project: dict, path: str) -> dict:
    project = _copy(project)
    project["data"] = {"path": path, "name": display_name(path)}
    _data_cfg(project)["train"] = path
    model = project["config"].setdefault("model", {})
    switched = recommend.default_model(model.get("name"), path)
    if switched:
        # A person's own data on `tiny` would train on noise: the real small model becomes the choice (the
        # Train tab shows it and can change it back), and the status line says so.
        model["name"] = switched
        project["data"]["model_note"] = (f"Model set to `{switched}`, the real small model (the built-in `tiny` "
                                         f"knows only sums); change it on the Train tab.")
    return project


def upload_data(ctx: AppContext, project, file, *settings, progress=None):
    """A new training file: store a sanitised copy, then check it."""
    if not file:
        return gr.skip()
    return check(_with_source(project, str(save_upload(file, ctx.uploads_for()))), *settings, progress=progress)


def use_hub_id(project, hub_id, *settings):
    hub_id = (hub_id or "").strip()
    if not hub_id:
        raise DataError("Type a dataset id such as `openai/gsm8k`, or upload a file.")
    return check(_with_source(project, hub_id), *settings)


def use_typed_source(ctx: AppContext, project, hub_id, *settings):
    """use_hub_id for the page: a local path typed in the box may not be another user's upload (--auth)."""
    ctx.check_path(hub_id or "")
    return use_hub_id(project, hub_id, *settings)


def upload_side_file(ctx: AppContext, key: str, project, file, *settings):
    """The evaluation file (`eval`) or the RFT prompts (`rft_train`); a cleared upload removes it."""
    project = _copy(project)
    _data_cfg(project)[key] = str(save_upload(file, ctx.uploads_for())) if file else ""
    if key == "eval" and file:
        settings = list(settings)
        settings[SETTINGS.index("eval_mode")] = EVAL_FILE
    return check(project, *settings)


def load_made(project, train: str, held: str, *settings):
    """Files made here (a ready-made task, ui/task_source.py): train + held-out file, checked for RFT."""
    project = _with_source(project, train)
    _data_cfg(project)["eval"] = held
    settings = list(settings) or [None] * len(SETTINGS)
    settings[SETTINGS.index("method")], settings[SETTINGS.index("eval_mode")] = "rft", EVAL_FILE
    return check(project, *settings)


def _eval_line(project: dict, report, method: str, dcfg: DataConfig, eval_mode: str, seed: int) -> tuple[str, list]:
    """(the Evaluation row of the table, errors of the side files)."""
    errors, line = [], ""
    side = _data_cfg(project)
    if eval_mode == EVAL_FILE and side.get("eval"):
        ev = check_data(side["eval"], method, None, dcfg)
        name = display_name(side["eval"])
        line = f"`{name}`: {ev.rows:,} rows" if ev.ok else f"`{name}` has problems (below)"
        errors += [f"Evaluation file: {e.replace(side['eval'], name)}" for e in ev.errors]
    elif eval_mode == EVAL_FILE:
        line = "no evaluation file uploaded yet: upload one below, or hold out a share"
    elif report.rows:
        held = len(split_indices(report.rows, dcfg.eval_fraction, seed)[1])
        line = (f"{held:,} of {report.rows:,} rows held out ({dcfg.eval_fraction:.0%}, seed {seed}); "
                f"{report.rows - held:,} train" if held else "nothing held out (eval fraction 0)")
    if method == "sft+rft" and side.get("rft_train"):
        rft = check_data(side["rft_train"], "rft", None, dcfg)
        name = display_name(side["rft_train"])
        line += f"<br>RFT prompts: `{name}`, {rft.rows:,} rows" if rft.ok else ""
        errors += [f"RFT prompts file: {e.replace(side['rft_train'], name)}" for e in rft.errors]
    return line, errors


def check(project, method="sft", fmt="auto", messages_column="", prompt_column="", completion_column="",
          text_column="", split="train", eval_mode=EVAL_SHARE, eval_fraction=0.1, max_rows=0, progress=None):
    """Check the project's data with these settings: (project, status, preview, format, the four column
    dropdowns, the column-mapping accordion). `progress(fraction, desc=...)` (a gr.Progress) hears how much of
    the file has been read."""
    project = _copy(project)
    path = project.get("data", {}).get("path")
    if not path:
        raise DataError("Upload a data file first (JSON Lines, CSV, Parquet or JSON), or type a dataset id.")
    given = {"messages_column": messages_column, "prompt_column": prompt_column,
             "completion_column": completion_column, "text_column": text_column}
    cols = {k: (v or "").strip() or getattr(DEFAULTS, k) for k, v in given.items()}
    dcfg = DataConfig(train=path, format=fmt or "auto", split=(split or "train").strip() or "train",
                      eval_fraction=float(eval_fraction or 0.0), max_rows=int(max_rows or 0), **cols)
    model = project.get("config", {}).get("model", {})
    tok, tok_note = tokenizer_for(model.get("name"))
    with TOKENIZER_LOCK:
        limit = (project.get("config", {}).get("rft") or {}).get("max_prompt_length")
        report = check_data(path, method, tok, dcfg, int(model.get("max_length") or 512), _reading(progress),
                            max_prompt_length=512 if limit is None else int(limit))
    seed = int(project.get("config", {}).get("seed", 42))
    line, side_errors = _eval_line(project, report, method, dcfg, eval_mode, seed)
    report.errors += side_errors
    report.ok = report.ok and not side_errors
    try:
        has_labels = bool(report.columns) and bool(detect_format(report.columns, "sft", dcfg))
    except DataError:
        has_labels = False
    s = report.lengths
    project["data"].update(
        name=display_name(path), method_hint=method, format=report.format, rows=report.rows,
        columns=report.columns, has_labels=has_labels, ok=report.ok,
        tokens={"what": s.what, "p95": s.p95, "max": s.max} if s else None)
    side = _data_cfg(project)
    side.update(train=path, format=dcfg.format, split=dcfg.split, eval_fraction=dcfg.eval_fraction,
                max_rows=dcfg.max_rows, **cols)
    if eval_mode != EVAL_FILE:
        side["eval"] = ""
    project["config"]["method"] = method
    unsure = any("_column" in e and "data." in e for e in report.errors)
    guess = _guess_columns(report.columns, method) if unsure and cols == _default_columns() else {}
    if guess:
        # Detection found no known column but the names are common ones: map them, and say so.
        mapped = {k: guess.get(k, "") for k in COLUMNS}
        out = check(project, method, fmt, *(mapped[k] for k in COLUMNS), split, eval_mode, eval_fraction, max_rows,
                    progress=progress)
        if out[0]["data"]["ok"]:
            said = ", ".join(f"{k.replace('_column', '')} ← `{v}`" for k, v in guess.items())
            note = f"\n\n**Columns mapped by their names:** {said}. Change them under Column mapping if that is wrong."
            return (out[0], out[1] + note, *out[2:-1], gr.update(open=True))
    switched = project["data"].get("model_note") if model.get("name") == recommend.OWN_DATA_MODEL else ""
    notes = [n for n in (switched, tok_note) if n]
    # Named as the person chose it (`smollm2-135m`, not its cache folder), unless another tokenizer stood in.
    counted_with = getattr(tok, "name_or_path", "") if tok_note or not model.get("name") else model["name"]
    status = report_markdown(report, display_name(path), line, notes, counted_with)
    col_updates = [gr.update(choices=_choices(report.columns, cols[k]), value=cols[k]) for k in COLUMNS]
    return (project, status, preview_html(report.preview), gr.update(value=dcfg.format), *col_updates,
            gr.update(open=True) if unsure else gr.skip())


MB = 1 << 20


def _reading(progress):
    """check_data's (bytes read, total) callback, shown as "Read N MB of M MB" by a gr.Progress."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(done / max(total, 1), desc=f"Read {done / MB:.0f} MB of {total / MB:.0f} MB")

    return report


def with_progress(fn, n_inputs: int, *first):
    """fn(*first, *inputs, progress=gr.Progress()) as a Gradio handler: Gradio injects a Progress only into a
    named parameter after the inputs, so the wrapper declares exactly `n_inputs` of them, then `progress`.
    `first` are leading arguments that are not Gradio inputs (the AppContext)."""
    import inspect

    def handler(*args):
        *inputs, progress = args
        return fn(*first, *inputs, progress=progress)

    params = [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    handler.__signature__ = inspect.Signature(params)
    handler.__name__ = fn.__name__
    return handler


def _default_columns() -> dict:
    return {k: getattr(DEFAULTS, k) for k in COLUMNS}


def _guess_columns(columns: list[str], method: str) -> dict:
    """Likely column overrides from common names (question/answer, instruction/output, conversations...)."""
    from finetuner.data.rows import LIKELY

    lowered = {c.lower(): c for c in columns}
    guess = {}
    for key, aliases in LIKELY.items():
        if method == "rft" and key in ("completion_column", "text_column"):
            continue
        found = next((lowered[a] for a in aliases if a in lowered), None)
        if found and found not in guess.values():
            guess[key] = found
    if "messages_column" in guess:
        return {"messages_column": guess["messages_column"]}
    if "prompt_column" in guess:
        guess.pop("text_column", None)
    return guess


def _choices(columns: list[str], current: str) -> list[str]:
    return list(dict.fromkeys([*columns, current]))


def eval_mode_changed(mode):
    return gr.update(visible=mode == EVAL_SHARE), gr.update(visible=mode == EVAL_FILE)


def from_project(project):
    """Redraw the tab for a project loaded from outside (the demo, a run's project)."""
    project = _copy(project)
    cfg = project.get("config", {})
    d = {**{k: getattr(DEFAULTS, k) for k in ("format", *COLUMNS, "split", "eval_fraction", "max_rows")},
         **cfg.get("data", {})}
    method = cfg.get("method") or project.get("data", {}).get("method_hint") or "sft"
    mode = EVAL_FILE if d.get("eval") else EVAL_SHARE
    settings = [method, d["format"], *(d[k] for k in COLUMNS), d["split"], mode, d["eval_fraction"], d["max_rows"]]
    controls = [gr.update(value=method), gr.update(value=d["split"]), gr.update(value=mode),
                gr.update(value=d["eval_fraction"], visible=mode == EVAL_SHARE), gr.update(value=d["max_rows"]),
                gr.update(visible=mode == EVAL_FILE)]
    if not project.get("data", {}).get("path"):
        cleared = (project, "", "", *[gr.update(value=d[k]) for k in ("format", *COLUMNS)], gr.skip())
        return (*cleared, *controls)
    return (*check(project, *settings), *controls)


def sync(project):
    """The project changed elsewhere: re-check only when the Train tab chose another method for this data."""
    project = project or {}
    data, method = project.get("data") or {}, (project.get("config") or {}).get("method")
    if not data.get("path") or not method or method == data.get("method_hint"):
        return gr.skip()
    return from_project(project)


def _help(dotted: str) -> str:
    return help_for(dotted).replace("`", "")


def build(ctx: AppContext, shared: Shared):
    choices = dict((name, c) for name, _t, _d, _h, c in iter_fields() if c)
    gr.Markdown("Bring the examples to learn from. **SFT** needs answers (chat `messages`, `prompt` + `completion`, "
                "or `text`); **RFT** needs only prompts, plus graders on the next tab. Nothing is dropped silently: "
                "every problem is listed with its line.", elem_classes="ft-help")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            upload = gr.File(label="Training data: .jsonl, .csv, .parquet or .json", file_types=FILE_TYPES,
                             type="filepath", height=140)
            with gr.Row(equal_height=True):
                hub = gr.Textbox(label="…or a Hugging Face dataset id", placeholder="e.g. openai/gsm8k", scale=3,
                                 info="Needs the Hub (this app runs offline unless started with FINETUNER_ONLINE=1) "
                                      "or the dataset in the local cache.")
                hub_btn = gr.Button("Load", scale=0, min_width=80)
            task_controls = task_source.build_controls()
            method = gr.Radio(METHODS, value="sft", label="This data is for", info=_help("method"))
            with gr.Accordion("Column mapping (when detection is unsure, or to override)", open=False) as col_acc:
                fmt = gr.Dropdown(list(choices["data.format"]), value="auto", label="Format", info=_help("data.format"))
                col_boxes = [gr.Dropdown([getattr(DEFAULTS, k)], value=getattr(DEFAULTS, k), allow_custom_value=True,
                                         label=k.replace("_", " ").capitalize(), info=_help(f"data.{k}"))
                             for k in COLUMNS]
            with gr.Accordion("Evaluation split and limits", open=False):
                eval_mode = gr.Radio([EVAL_SHARE, EVAL_FILE], value=EVAL_SHARE, label="Held-out rows",
                                     info="Evaluation rows are never trained on; they measure progress.")
                fraction = gr.Slider(0, 0.5, value=0.1, step=0.01, label="Eval fraction",
                                     info=_help("data.eval_fraction"))
                eval_file = gr.File(label="Evaluation file (data.eval)", file_types=FILE_TYPES, type="filepath",
                                    height=100, visible=False)
                rft_file = gr.File(label="Separate RFT prompts for SFT then RFT (optional, data.rft_train)",
                                   file_types=FILE_TYPES, type="filepath", height=100)
                gr.Markdown(_help("data.rft_train"), elem_classes="ft-help")
                split = gr.Textbox(value="train", label="Split (Hub datasets)", info=_help("data.split"))
                max_rows = gr.Number(value=0, precision=0, minimum=0, label="Max rows", info=_help("data.max_rows"))
            check_btn = gr.Button("Check data", variant="primary")
        with gr.Column(scale=3, min_width=420):
            status = gr.Markdown("Upload a file to see its format, size, token lengths and a preview.")
            preview = gr.HTML()
    settings = [method, fmt, *col_boxes, split, eval_mode, fraction, max_rows]
    outputs = [shared.project, status, preview, fmt, *col_boxes, col_acc]
    # One source at a time: a file empties the id box, an id empties the file box.
    n_settings = len(settings)
    upload.upload(safe(with_progress(upload_data, 2 + n_settings, ctx)), [shared.project, upload, *settings],
                  outputs, api_name="data_upload").then(
        lambda: "", None, [hub])
    for event in (hub_btn.click, hub.submit):
        event(safe(bind(ctx, use_typed_source)), [shared.project, hub, *settings], outputs).then(
            lambda: None, None, [upload])
    for key, comp in (("eval", eval_file), ("rft_train", rft_file)):
        handler = bind(ctx, upload_side_file, key)
        comp.upload(safe(handler), [shared.project, comp, *settings], outputs)
        comp.clear(safe(handler), [shared.project, comp, *settings], outputs)
    task_source.wire(ctx, load_made, task_controls, shared.project, settings,
                     [*outputs, method, eval_mode, fraction, eval_file])
    checker = safe(check)
    check_btn.click(safe(with_progress(check, 1 + n_settings)), [shared.project, *settings], outputs)
    for comp in (method, fmt, *col_boxes):
        comp.input(checker, [shared.project, *settings], outputs)
    fraction.release(checker, [shared.project, *settings], outputs)
    for comp in (max_rows, split):
        comp.submit(checker, [shared.project, *settings], outputs)
    eval_mode.input(eval_mode_changed, [eval_mode], [fraction, eval_file]).then(
        checker, [shared.project, *settings], outputs)
    redraw = outputs + [method, split, eval_mode, fraction, max_rows, eval_file]
    shared.on_project_loaded(from_project, redraw)
    shared.project.change(safe(sync), [shared.project], redraw, show_progress="hidden")

