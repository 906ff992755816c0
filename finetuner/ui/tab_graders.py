"""Tab 2, Graders: define what a good answer is, then test the graders on the data before training.

Graders are added through forms (built-in checks, an LLM judge with ready-made rubrics and a connection test,
Python code, pasted OpenAI grader JSON, a formula combining them), each validated with `graders.build_graders`
as it is added. "Test on data" grades data rows (a column, or K base-model samples per prompt) and shows the
per-row table, a histogram and the dry run's warnings (too hard / too easy / no learning signal).

Fills `project["graders"]` (specs exactly as in a run's YAML) and `project["dry_run"]` (the dry run's
summary_json plus `source`: "base" | "column", `k`, and `graders_key`, the fingerprint of the graders it
tested). A grader that failed on every test row (summary `failed_graders`) blocks Launch while that test still
describes the current graders (grader_report.blocking_failure, which the Train tab asks). Graders see each row
as `graders.item.build_item` makes it, as in training. Handlers are plain functions; form building and spec
checks live in grader_forms.py, the test's tables and verdict in grader_report.py.
"""

from __future__ import annotations

import copy
import functools
import os

import gradio as gr
import yaml

from finetuner.config import from_dict, yaml_text
from graders.errors import DataError, FinetunerError
from finetuner.ui import grader_forms as gf
from finetuner.ui.context import Shared, new_project, safe
from finetuner.ui.grader_report import (blocking_failure, graders_key, histogram, rows_table,  # noqa: F401 - the tab's API
                            summary_markdown, warnings_markdown)

BASE, COLUMN = "Base-model samples (K per prompt)", "A data column (e.g. the reference answers)"
TABLE_HEAD = ["name", "type", "weight", "checks"]


def _copy(project):
    return copy.deepcopy(project) if project else new_project()


def describe(spec: dict) -> str:
    """One line saying what a grader checks, for the list of graders."""
    t = spec.get("type")
    if t in ("string_check", "text_similarity", "math"):
        op = spec.get("operation") or spec.get("evaluation_metric") or "equivalent to"
        return f"{spec.get('input', gf.OUTPUT)} {op} {spec.get('reference', '')}"
    if t == "regex":
        return f"{'not ' if spec.get('negate') else ''}{spec.get('mode', 'search')} /{spec.get('pattern', '')}/"
    if t == "length":
        bounds = f"{spec.get('min', '')}..{spec.get('max', '')}"
        return f"{bounds} {spec.get('unit', 'chars')} ({spec.get('penalty', 'hard')})"
    if t in ("score_model", "label_model"):
        return f"judge {spec.get('model', '?')} at {spec.get('base_url', 'OpenAI')}"
    if t == "multi":
        return spec.get("calculate_output") or f"mean of {', '.join(spec.get('graders', {}))}"
    if t == "python":
        first = next((ln for ln in (spec.get("source") or "").splitlines() if ln.startswith("def ")), "file")
        return first
    return t or "?"


def specs_table(specs: list[dict]) -> list[list]:
    return [[s.get("name"), s.get("type"), s.get("weight", 1), describe(s)[:90]] for s in specs or []]


def _list_view(project: dict, message: str = "", selected: str | None = None):
    """(project, table, yaml, grader picker, message): what every change to the list redraws."""
    specs = project.get("graders") or []
    text = yaml_text(specs) if specs else ""
    names = [s.get("name") for s in specs]
    picker = gr.update(choices=names, value=selected if selected in names else (names[0] if names else None))
    return project, specs_table(specs), text, picker, message


def _added(project, make):
    """Add the spec `make()` builds; a config mistake becomes the form's message, not a toast."""
    project = _copy(project)
    try:
        spec = make()
        project["graders"] = gf.add_spec(project.get("graders") or [], spec)
    except FinetunerError as err:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"❌ {err}"
    project["dry_run"] = None  # the graders changed, so the last test no longer describes them
    return _list_view(project, f"✅ Added `{spec['name']}` ({spec['type']}).")


def add_builtin(project, gtype, name, weight, *fields):
    return _added(project, lambda: gf.builtin_spec(gtype, name, weight, **dict(zip(gf.BUILTIN_KEYS, fields))))


def add_judge(project, kind, name, weight, system, user, base_url, model, key_env, low, high, labels, passing):
    return _added(project, lambda: gf.judge_spec(kind, name, weight, system, user, base_url, model, key_env, low,
                                                 high, labels, passing))


def judge_connection(project, kind, name, weight, system, user, base_url, model, key_env, low, high, labels,
                     passing):
    """One request through the judge, with the first data row when there is one."""
    spec = gf.judge_spec(kind, name, weight, system, user, base_url, model, key_env, low, high, labels, passing)
    return gf.test_connection(spec, _first_item(project, spec))[1]


def add_python(project, name, weight, source, timeout_s):
    return _added(project, lambda: gf.python_spec(name, weight, source, timeout_s))


def import_openai(project, text, name):
    project = _copy(project)
    try:
        specs = gf.openai_specs(text, name or "openai")
        current = project.get("graders") or []
        for spec in specs:
            current = gf.add_spec(current, spec)
    except FinetunerError as err:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"❌ {err}"
    project["graders"], project["dry_run"] = current, None
    return _list_view(project, f"✅ Imported {', '.join(s['name'] for s in specs)}.")


def combine(project, name, formula):
    """Replace the graders by one multi grader computing `formula` over their names."""
    project = _copy(project)
    try:
        spec = gf.multi_spec(project.get("graders") or [], name, formula)
        gf.check_specs([spec])
    except FinetunerError as err:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"❌ {err}"
    project["graders"], project["dry_run"] = [spec], None
    return _list_view(project, f"✅ Combined into `{spec['name']}`: {formula or 'the mean'}.")


def set_weight(project, name, weight):
    if weight is None or weight == "":
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), "Give a weight first."
    project = _copy(project)
    for spec in project.get("graders") or []:
        if spec.get("name") == name:
            spec["weight"] = gf._num(weight) if gf._num(weight) is not None else 1
    project["dry_run"] = None
    return _list_view(project, f"Weight of `{name}` is now {weight:g}." if name else "Pick a grader first.", name)


def picked(project, name):
    """The picked grader's weight, to edit."""
    spec = next((s for s in (project or {}).get("graders") or [] if s.get("name") == name), None)
    return gr.update(value=spec.get("weight", 1)) if spec else gr.skip()


def remove(project, name):
    project = _copy(project)
    project["graders"] = [s for s in project.get("graders") or [] if s.get("name") != name]
    project["dry_run"] = None
    return _list_view(project, f"Removed `{name}`." if name else "Pick a grader first.")


def apply_yaml(project, text):
    """Replace the list with edited YAML (a list of grader specs), validated first."""
    project = _copy(project)
    try:
        specs = yaml.safe_load(text or "") or []
    except yaml.YAMLError as err:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"❌ That is not valid YAML: {err}"
    if isinstance(specs, dict):
        specs = specs.get("graders", [specs])
    try:
        gf.check_specs(specs)
    except FinetunerError as err:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"❌ {err}"
    project["graders"], project["dry_run"] = specs, None
    return _list_view(project, f"✅ {len(specs)} grader{'s' if len(specs) != 1 else ''} from the YAML.")


# ---------------------------------------------------------------- the data the graders see


def _rft_source(project: dict) -> str:
    data = project.get("config", {}).get("data", {})
    if project.get("config", {}).get("method") == "sft+rft" and data.get("rft_train"):
        return data["rft_train"]
    return data.get("train") or project.get("data", {}).get("path") or ""


def _first_row(project: dict) -> dict | None:
    """The first row of the data the RFT stage grades (a copy), or None."""
    path = _rft_source(project)
    if not path:
        return None
    try:
        stat = os.stat(path)
        stamp = (stat.st_mtime, stat.st_size)
    except OSError:
        stamp = None  # a Hugging Face id
    row = _read_first_row(path, stamp)
    return dict(row) if row is not None else None


def _first_item(project: dict, spec: dict) -> dict | None:
    """The first row the RFT stage grades, as graders see it in training (`item.prompt` is its text), or None.
    `spec` (the grader being tried) stands in for the project's graders, which may not exist yet."""
    from graders.item import build_item

    from finetuner.evaluation.grader_check import rft_items
    from finetuner.ui.data_view import TOKENIZER_LOCK, tokenizer_for

    row = _first_row(project)
    if row is None:
        return None
    try:
        cfg = dry_run_cfg({**project, "graders": [spec]})
        tok, _note = tokenizer_for("tiny")  # items do not depend on the tokenizer: the prompt is text in them
        with TOKENIZER_LOCK:
            items = rft_items(cfg, tok, 1)[1]
    except FinetunerError:
        items = []  # data the stage cannot read yet: the file's first row as it is
    return items[0] if items else build_item(row)


@functools.lru_cache(maxsize=8)
def _read_first_row(path: str, stamp) -> dict | None:
    # Cached per file version: every project change redraws this tab, and files can be large.
    from finetuner.data import read_source

    try:
        return read_source(path).rows[0]
    except FinetunerError:
        return None


def sample_columns(project: dict) -> list[str]:
    """Columns a dry run can take the text to grade from (graders see a chat's last answer as `completion`)."""
    row = _first_row(project) or {}
    cols = [c for c in row if c not in ("prompt", "messages")]
    return list(dict.fromkeys((["completion"] if "messages" in row or "completion" in row else []) + cols))


def dry_run_cfg(project: dict):
    """The RunConfig a test grades with: the project's data, model and graders, the RFT stage's sampling."""
    cfg = project.get("config", {})
    if not (cfg.get("data") or {}).get("train"):
        raise DataError("Load data on the Data tab first: the test grades its rows.")
    if not project.get("graders"):
        raise DataError("Add a grader first.")
    rft = {k: v for k, v in (cfg.get("rft") or {}).items() if k in ("temperature", "max_completion_length")}
    method = cfg.get("method") if cfg.get("method") in ("rft", "sft+rft") else "rft"
    return from_dict({"name": "dry-run", "method": method, "model": cfg.get("model") or {}, "data": cfg["data"],
                      "graders": project["graders"], "rft": rft, "seed": cfg.get("seed", 42)})


def test_on_data(project, rows, source, column, k):
    """Grade `rows` rows: the text from `column`, or `k` base-model samples per prompt."""
    from finetuner.evaluation.grader_check import dry_run_config, rft_items
    from finetuner.ui.data_view import TOKENIZER_LOCK, tokenizer_for

    project = _copy(project)
    cfg = dry_run_cfg(project)
    tok, note = tokenizer_for(cfg.model.name)
    base = source == BASE
    if note and not base:
        cfg.model.name = "tiny"  # only prompts are rendered here; any tokenizer gives the same grader items
    if base and cfg.model.name != "tiny":
        gr.Info(f"Sampling {k} answers per prompt from {cfg.model.name}: this can take minutes on this machine.")
    try:
        report = dry_run_config(cfg, rows=int(rows), samples="base" if base else "column", k=int(k),
                                sample_column=column or None)
    except DataError as err:
        raise DataError(str(err).replace("Name one with --sample-column", "Pick another column").replace(
            "--samples base", "base-model samples")) from None
    with TOKENIZER_LOCK:
        _prompts, items = rft_items(cfg, tok, int(rows))
    summary = report.summary_json()
    project["dry_run"] = {**summary, "source": "base" if base else "column", "k": int(k) if base else 1,
                          "graders_key": graders_key(project["graders"])}
    return (project, summary_markdown(summary, base), warnings_markdown(summary, blocking_failure(project)),
            histogram(summary), gr.update(value=rows_table(report, items), visible=True), gr.update(visible=True))


def from_project(project, code=None, last_template=None, source=None, column=None, pick=None):
    """Redraw the list, the Python template and the test's choices from the project. Called with only the
    project (a project loaded from outside) it resets them; with the tab's current values (the project
    changed on another tab) it keeps the person's choices and any edited Python code."""
    project = _copy(project)
    cols = sample_columns(project)
    row = _first_row(project) or {}
    columns = [("completion" if c == "messages" else c) for c in row] or project.get("data", {}).get("columns") or []
    template = gf.python_template(columns, row)
    untouched = code is None or code == last_template or not code.strip()
    default_col = column if column in cols else ("completion" if "completion" in cols else (cols[0] if cols else None))
    tiny = (project.get("config", {}).get("model", {}).get("name") or "tiny") == "tiny"
    _p, table, text, picker, _m = _list_view(project, selected=pick)
    return (table, text, picker, template if untouched else gr.skip(), template if untouched else gr.skip(),
            gr.update(choices=cols, value=default_col), gr.update(value=source or (BASE if tiny else COLUMN)))


def build(ctx, shared: Shared):
    gr.Markdown("Graders define a good answer: RFT trains the model to raise their weighted sum, and evaluation "
                "reports each one. Templates read the answer as `{{sample.output_text}}` and the data row as "
                "`{{item.<column>}}`. Add graders, then **Test on data** before training.", elem_classes="ft-help")
    with gr.Row():
        with gr.Column(scale=3, min_width=420):
            gr.Markdown("### Add a grader")
            with gr.Tabs():
                forms = [(gf.builtin_form(), add_builtin), (gf.judge_form(), add_judge),
                         (gf.python_form(), add_python), (gf.openai_form(), import_openai),
                         (gf.formula_form(), combine)]
        with gr.Column(scale=2, min_width=340):
            gr.Markdown("### Your graders")
            table = gr.Dataframe(headers=TABLE_HEAD, value=[], interactive=False, wrap=True, max_height=260,
                                 column_widths=["22%", "20%", "14%", "44%"])
            with gr.Row(equal_height=True):
                pick = gr.Dropdown([], label="Grader", scale=2, info="Pick one to change its weight or remove it.")
                weight = gr.Number(1.0, label="Weight", scale=1, info=gf.FIELD_HELP["weight"])
            with gr.Row():
                set_btn, rm_btn = gr.Button("Set weight", size="sm"), gr.Button("Remove", size="sm", variant="stop")
            list_msg = gr.Markdown()
            with gr.Accordion("Edit all graders as YAML (as in the run file)", open=False):
                code = gr.Code(language="yaml", lines=10, label="graders:")
                yaml_btn = gr.Button("Apply YAML", size="sm")
    view = [shared.project, table, code, pick]
    for form, fn in forms:
        form["button"].click(safe(fn), [shared.project, *form["inputs"]], view + [form["message"]])
    judge = forms[1][0]
    judge["test"].click(safe(judge_connection), [shared.project, *judge["inputs"]], [judge["message"]])
    pick.input(safe(picked), [shared.project, pick], [weight])
    set_btn.click(safe(set_weight), [shared.project, pick, weight], view + [list_msg])
    rm_btn.click(safe(remove), [shared.project, pick], view + [list_msg])
    yaml_btn.click(safe(apply_yaml), [shared.project, code], view + [list_msg], api_name="graders_yaml")
    source, column = _test_section(shared)
    py_code, last_template = forms[2][0]["code"], gr.State(forms[2][0]["code"].value)
    outputs = [table, code, pick, py_code, last_template, column, source]
    shared.on_project_loaded(from_project, outputs)
    # New data, model or graders from another tab: redraw, keeping the person's choices and edited code.
    shared.project.change(safe(from_project), [shared.project, py_code, last_template, source, column, pick],
                          outputs, show_progress="hidden")


def source_changed(source):
    """The column picker with a data column; K with base-model samples."""
    return gr.update(visible=source == COLUMN), gr.update(visible=source == BASE)


def _test_section(shared):
    gr.Markdown("### Test on data")
    with gr.Row(equal_height=True):
        rows = gr.Slider(2, 200, value=20, step=1, label="Rows", info="How many data rows to grade.")
        source = gr.Radio([BASE, COLUMN], value=BASE, label="Text to grade",
                          info="Base-model samples show whether RFT gets a learning signal; a column (the "
                               "reference answers) checks the graders themselves.")
        column = gr.Dropdown([], label="Column", allow_custom_value=True, visible=False,
                             info="The column holding the text to grade.")
        k = gr.Slider(2, 16, value=4, step=1, label="K samples per prompt",
                      info="Seconds on the built-in model; slow for big models without a GPU.")
    run_btn = gr.Button("Test graders", variant="primary")
    warn = gr.Markdown(visible=False, elem_classes="ft-warn")
    with gr.Row(visible=False) as results:
        summary = gr.Markdown()
        plot = gr.Plot(label="Reward histogram", show_label=False)
    table = gr.Dataframe(interactive=False, wrap=True, max_height=420, label="Per sample", visible=False)
    source.change(source_changed, [source], [column, k])
    run_btn.click(safe(test_on_data), [shared.project, rows, source, column, k],
                  [shared.project, summary, warn, plot, table, results], api_name="graders_test")
    return source, column
