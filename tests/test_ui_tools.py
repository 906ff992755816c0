"""The Tools tab's handlers (Agent RFT) without a browser: adding an example tool and a broken one, the table
upload, "Try it" (a result, a tool error, bad JSON), removing, the model notice, the tools reaching the run
config that Launch starts (and Launch refusing a model whose template cannot do tools), and the draft keeping
the tools across a restart."""

import json
import shutil
from pathlib import Path

import gradio as gr
import pytest

from finetuner.modeling.tiny import tiny_path
from finetuner.ui import draft, tab_data, tab_tools, tab_train
from finetuner.ui import tool_forms as tf
from finetuner.ui.context import AppContext, Shared, new_project
from finetuner.ui.welcome import demo_project
from graders.tool_examples import EXAMPLES


@pytest.fixture
def ctx(tmp_path):
    return AppContext(tmp_path / "runs")


def added(project, name, table=""):
    source = tab_tools.load_example(name)[0]
    return tab_tools.add_tool(project, source, table)


def test_an_example_tool_is_added_with_its_schema_and_arguments():
    project, rows, schema, picker, args, msg = added(new_project(), "calculator")
    assert msg.startswith("✅ Added `calculator(expression: str)`")
    assert project["config"]["tools"] == [{"name": "calculator", "source": EXAMPLES["calculator"][0]}]
    assert rows == [["calculator", "expression: str", "Evaluate an arithmetic expression and return the result."]]
    shown = json.loads(schema)
    assert shown[0]["function"]["name"] == "calculator"
    assert shown[0]["function"]["parameters"]["properties"]["expression"]["type"] == "string"
    assert picker["choices"] == ["calculator"] and picker["value"] == "calculator"
    assert json.loads(args) == {"expression": ""}
    # The same function again replaces it rather than adding a second tool of that name.
    again = tab_tools.add_tool(project, EXAMPLES["calculator"][0].replace("and return", "then return"), "")
    assert again[5].startswith("✅ Updated") and len(again[0]["config"]["tools"]) == 1


def test_a_broken_tool_says_why_and_changes_nothing():
    project = added(new_project(), "calculator")[0]
    no_doc = "def add(a: int, b: int) -> int:\n    return a + b\n"
    out = tab_tools.add_tool(project, no_doc, "")
    assert all(v == {"__type__": "update"} for v in out[:5])  # project, list, schema, picker, arguments kept
    assert out[5].startswith("❌") and "no docstring" in out[5]
    bad = tab_tools.add_tool(project, "def f(x: int):\n    '''Doc.'''\n  return x\n", "")[5]
    assert "line 3" in bad and "syntax" in bad
    assert "upload the table" in tab_tools.add_tool(project, EXAMPLES["table_lookup"][0], "")[5]
    assert "editor is empty" in tab_tools.add_tool(project, "  ", "")[5]


def test_try_it_shows_the_result_the_error_and_where_json_is_wrong():
    project = added(new_project(), "calculator")[0]
    ok = tab_tools.try_tool(project, "calculator", '{"expression": "347+589"}')
    assert ok.startswith("✅ `calculator` answered in ") and " s;" in ok and "\n936\n" in ok
    failed = tab_tools.try_tool(project, "calculator", '{"expression": "__import__(1)"}')
    assert failed.startswith("❌ `calculator` failed after ") and "only numbers" in failed
    wrong_arg = tab_tools.try_tool(project, "calculator", '{"expr": "1"}')
    assert wrong_arg.startswith("❌") and "bad arguments" in wrong_arg
    bad_json = tab_tools.try_tool(project, "calculator", '{"expression": "1+1",}')
    assert "not valid JSON" in bad_json and "line 1, column 22" in bad_json
    assert "JSON object" in tab_tools.try_tool(project, "calculator", '["1+1"]')
    assert "pick it first" in tab_tools.try_tool(project, "nothing", "{}")


def test_the_table_lookup_reads_the_uploaded_csv_from_a_stable_copy(ctx, tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text("item,price\napple,3\npear,5\n", encoding="utf-8")
    table, msg = tab_tools.upload_table(ctx, str(csv))
    assert Path(table).parent == ctx.uploads / "tool-tables" and "prices.csv" in msg
    csv.unlink()  # Gradio's temporary upload goes away; the tool keeps reading the copy
    project, rows, _s, _p, args, msg = added(new_project(), "table_lookup", table)
    assert msg.startswith("✅") and project["config"]["tools"][0]["table"] == table
    assert json.loads(args) == {"key": "", "column": ""}
    assert "\n5\n" in tab_tools.try_tool(project, "lookup", '{"key": "Pear", "column": "price"}')
    code, kept, _m = tab_tools.edit_tool(project, "lookup")
    assert code == EXAMPLES["table_lookup"][0] and kept == table


def test_remove_takes_the_tool_out():
    project = added(added(new_project(), "calculator")[0], "python_eval")[0]
    assert [r[0] for r in tab_tools.from_project(project)[0]] == ["calculator", "python_eval"]
    project, rows, schema, picker, _a, msg = tab_tools.remove_tool(project, "calculator")
    assert msg == "Removed `calculator`." and [s["name"] for s in project["config"]["tools"]] == ["python_eval"]
    assert rows[0][0] == "python_eval" and "calculator" not in schema and picker["value"] == "python_eval"
    assert tab_tools.remove_tool(project, "calculator")[5] == "Pick a tool first."


def test_the_model_notice_and_the_limits():
    project = new_project()
    assert tf.support_note(project) == tf.TINY_NOTE and "tiny-agent" in tf.TINY_NOTE
    project["config"]["model"] = {"name": "someone/not-on-this-machine"}
    assert "cannot be checked here" in tf.support_note(project)
    project["config"]["rft"] = {"max_tool_calls": 7}
    limits = tab_tools.limits_markdown(project)
    assert "Max tool calls** = 7" in limits and "whole trajectory" in limits and "SFT" in limits
    assert "rft.max_tool_calls" in tab_train.RFT  # the Train tab shows the field the limits line points to


def no_tools_model(tmp_path) -> str:
    """tiny's tokenizer with a chat template that shows no tools (like SmolLM2-135M's)."""
    folder = tmp_path / "no-tools-model"
    shutil.copytree(tiny_path(), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return str(folder)


def values(project, **over):
    vals = dict(zip(tab_train.FIELDS, tab_train.form_values(project)))
    vals.update(over)
    return [*vals.values(), "detected", None]


def test_the_tools_reach_the_launched_run_config(ctx, monkeypatch):
    project = tab_data.from_project(demo_project())[0]
    project = added(project, "calculator")[0]
    project = tab_train.update(project, *values(project))  # a Train control changed: the tools stay
    launched = []
    monkeypatch.setattr(ctx, "launch", lambda cfg: launched.append(cfg) or type("R", (), {"id": "r-1"})())
    run_id, _tabs, msg = tab_train.launch(ctx, project, *values(project, method="rft"))
    assert run_id == "r-1" and msg.startswith("✅"), msg
    assert [t["name"] for t in launched[0].tools] == ["calculator"]
    assert launched[0].tools[0]["source"] == EXAMPLES["calculator"][0]


def test_launch_refuses_a_model_whose_template_cannot_do_tools(ctx, monkeypatch, tmp_path):
    project = added(tab_data.from_project(demo_project())[0], "calculator")[0]
    model = no_tools_model(tmp_path)
    project["config"]["model"] = {"name": model}
    assert "cannot show tool calls" in tf.support_note(project)
    monkeypatch.setattr(ctx, "launch", lambda cfg: pytest.fail("must not launch"))
    run_id, _tabs, msg = tab_train.launch(ctx, project, *values(project, method="rft", **{"model.name": model}))
    assert run_id == {"__type__": "update"} and msg.startswith("❌") and "cannot use the tools (calculator)" in msg


def test_the_draft_keeps_the_tools_across_a_restart(ctx, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("k,v\na,1\n", encoding="utf-8")
    table = tab_tools.upload_table(ctx, str(csv))[0]
    project = added(added(new_project(), "calculator")[0], "table_lookup", table)[0]
    draft.save_draft(ctx.runs_dir, "b-" + "0" * 32, project)
    back = draft.restore(AppContext(ctx.runs_dir).runs_dir, "b-" + "0" * 32)
    assert back.project["config"]["tools"] == project["config"]["tools"]
    assert "2 tools" in draft.note_for(back)
    rows = tab_tools.from_project(back.project)[0]
    assert [r[0] for r in rows] == ["calculator", "lookup"] and not any("⚠️" in r[2] for r in rows)
    Path(table).unlink()  # the table went: the list says so rather than failing
    assert "⚠️" in tab_tools.from_project(back.project)[0][1][2]


def test_the_tab_builds_explains_its_controls_and_its_refresher_fits(ctx):
    with gr.Blocks() as demo:
        shared = Shared(project=gr.State(new_project()), run_id=gr.State(""), tabs=gr.Tabs())
        tab_tools.build(ctx, shared)
    controls = [b for b in demo.blocks.values() if isinstance(b, (gr.Textbox, gr.Dropdown))]
    assert len(controls) == 3 and all((b.info or "").strip() for b in controls)
    code = next(b for b in demo.blocks.values() if isinstance(b, gr.Code) and b.language == "python")
    assert "def calculator" in code.value
    (fn, outputs), = shared.refreshers
    assert len(fn(added(new_project(), "calculator")[0])) == len(outputs)
