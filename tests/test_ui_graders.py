"""The Graders tab's handlers: adding each grader type through its form, validation messages next to the form,
the LLM judge's connection test, OpenAI JSON import, the Python template, and "Test on data" on the
arithmetic example (a data column, and K base-model samples from the built-in model)."""

import copy

import pytest

from finetuner.ui import grader_forms as gf
from finetuner.ui import tab_graders as tg
from finetuner.ui.context import new_project
from finetuner.ui.welcome import EXAMPLE, demo_project
from graders.testing import Reply, ScriptedJudgeServer

BUILTIN = dict(zip(gf.BUILTIN_KEYS, [gf.OUTPUT, "{{item.answer}}", "eq", "fuzzy_match", None, "", "search", [],
                                     False, '{"type": "object"}', "words", None, None, "hard", None]))


def builtin(project, gtype, name, **fields):
    return tg.add_builtin(project, gtype, name, 1.0, *{**BUILTIN, **fields}.values())


def judge_fields(url, **over):
    system, user = gf.rubric_messages("correctness")
    fields = dict(kind="score_model", name="judge", weight=1, system=system, user=user, base_url=url, model="j",
                  key_env="", low=0, high=1, labels="", passing="")
    return list({**fields, **over}.values())


def arithmetic_rft():
    """The arithmetic example's labelled rows as an RFT project: its `completion` column is the reference."""
    project = demo_project()
    project["config"]["method"] = "rft"
    return project


def test_add_each_builtin_type():
    project = new_project()
    cases = [("string_check", "exact", {}), ("text_similarity", "close", {"evaluation_metric": "rouge_l"}),
             ("regex", "fmt", {"pattern": r"^Answer: \d+$", "mode": "fullmatch", "flags": ["MULTILINE"]}),
             ("json_schema", "js", {}), ("math", "math_ok", {}),
             ("length", "short", {"max": 20, "penalty": "linear", "tolerance": 10})]
    for gtype, name, fields in cases:
        project, table, text, picker, message = builtin(project, gtype, name, **fields)
        assert message.startswith("✅") and name in text
    specs = {s["name"]: s for s in project["graders"]}
    assert [s["type"] for s in project["graders"]] == [c[0] for c in cases]
    assert specs["fmt"]["flags"] == ["MULTILINE"] and "reference" not in specs["fmt"]
    assert specs["js"]["schema"] == {"type": "object"} and specs["short"]["tolerance"] == 10
    assert len(table) == 6 and picker["choices"][-1] == "short"


def test_bad_regex_is_shown_next_to_the_form():
    project = builtin(new_project(), "string_check", "exact")[0]
    out = builtin(project, "regex", "bad", pattern="(unclosed")
    assert out[0] == {"__type__": "update"} or out[0] is not project  # gr.skip(): the list is unchanged
    assert out[4].startswith("❌") and "not a valid regular expression" in out[4] and "'bad'" in out[4]
    bad_schema = builtin(project, "json_schema", "js", schema="{not json")
    assert "not valid JSON" in bad_schema[4]
    no_bounds = builtin(project, "length", "len")
    assert "min" in no_bounds[4] or "max" in no_bounds[4]


def test_judge_form_and_connection_test():
    good = ScriptedJudgeServer(lambda body, n: Reply(content='{"result": 0.75, "steps": []}')).start()
    garbled = ScriptedJudgeServer(lambda body, n: Reply(content="I think it is fine")).start()
    try:
        message = tg.judge_connection(demo_project(), *judge_fields(good.base_url))
        assert message.startswith("✅") and "0.75" in message
        sent = good.requests[0]["messages"]
        assert "Add 20 and 11." in sent[-1]["content"]  # the first row of the RFT stage's data (prompts.jsonl)
        assert "could not be read" in tg.judge_connection(new_project(), *judge_fields(garbled.base_url))
    finally:
        good.stop()
        garbled.stop()
    down = tg.judge_connection(new_project(), *judge_fields("http://127.0.0.1:9/v1"))
    assert down.startswith("❌") and "Could not use the judge" in down
    project, _t, text, _p, message = tg.add_judge(new_project(), *judge_fields("http://localhost:8000/v1",
                                                                               key_env="JUDGE_KEY"))
    spec = project["graders"][0]
    assert spec["type"] == "score_model" and spec["api_key_env"] == "JUDGE_KEY" and spec["range"] == [0, 1]
    assert "{{item.answer}}" in spec["input"][1]["content"]
    leaked = tg.add_judge(new_project(), *judge_fields("http://x/v1", key_env="sk-abc123-secret"))
    assert "NAME of an environment variable" in leaked[4]
    assert "give the model name" in tg.add_judge(new_project(), *judge_fields("http://x/v1", model=" "))[4]
    assert tg.picked(project, "judge") == {"value": 1, "__type__": "update"}
    labels = tg.add_judge(new_project(), *judge_fields("http://x/v1", kind="label_model", labels="good, bad",
                                                       passing="good"))[0]["graders"][0]
    assert labels["labels"] == ["good", "bad"] and labels["passing_labels"] == ["good"]


def test_rubric_change_fills_the_messages():
    system, user, about = gf.rubric_changed("faithfulness")
    assert "context" in system.lower() and "{{item.context}}" in user and "rename" in about


def test_python_template_lists_the_data_columns():
    text = gf.python_template(["prompt", "completion", "answer"], {"prompt": "Add 1 and 2.", "answer": "3"})
    assert 'item["answer"]' in text and "e.g. '3'" in text and 'item["completion"]' in text
    assert 'expected = str(item["answer"]).strip()' in text
    compile(text, "grader.py", "exec")
    out = tg.from_project(arithmetic_rft())
    assert 'item["answer"]' in out[3] and out[3] == out[4]  # the template, and the state remembering it
    project, _t, _y, _p, message = tg.add_python(new_project(), "py", 1, text, 10)
    assert message.startswith("✅") and project["graders"][0]["source"] == text
    broken = tg.add_python(new_project(), "py", 1, "def grade(sample, item):\n  return (", 10)
    assert broken[4].startswith("❌")


def test_edited_python_code_is_kept_when_the_project_changes():
    project = arithmetic_rft()
    template = tg.from_project(project)[3]
    kept = tg.from_project(project, "def grade(s, i):\n    return 1.0\n", template)
    assert kept[3] == {"__type__": "update"}  # gr.skip(): the person's code stays
    assert tg.from_project(project, template, template)[3] == template


def test_openai_json_import():
    payload = ('{"method": {"type": "reinforcement", "reinforcement": {"grader": {"type": "string_check", '
               '"name": "oa", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", '
               '"operation": "eq", "id": "g-1"}}}}')
    project, _t, text, _p, message = tg.import_openai(new_project(), payload, "")
    assert message.startswith("✅") and project["graders"] == [
        {"type": "string_check", "name": "oa", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}]
    assert "not JSON" in tg.import_openai(new_project(), "{oops", "x")[4]


def test_weights_remove_yaml_and_formula():
    project = demo_project()
    project = tg.set_weight(project, "format", 0.5)[0]
    assert project["graders"][1]["weight"] == 0.5
    combined, _t, _y, picker, message = tg.combine(project, "score", "correct * (1 + 0.1 * format)")
    assert message.startswith("✅") and [s["type"] for s in combined["graders"]] == ["multi"]
    assert set(combined["graders"][0]["graders"]) == {"correct", "format"} and picker["choices"] == ["score"]
    assert "cannot be read" in tg.combine(project, "score", "correct *")[4]
    assert "cannot contain another" in tg.combine(combined, "again", "score")[4]
    removed = tg.remove(project, "correct")[0]
    assert [s["name"] for s in removed["graders"]] == ["format"]
    edited, _t, _y, _p, message = tg.apply_yaml(removed, "- {name: n, type: length, max: 3}\n")
    assert edited["graders"] == [{"name": "n", "type": "length", "max": 3}] and message.startswith("✅")
    assert "unknown type" in tg.apply_yaml(removed, "- {name: n, type: nope}\n")[4]


def test_dry_run_on_a_data_column_of_the_arithmetic_example():
    project, summary, warn, fig, table, results = tg.test_on_data(arithmetic_rft(), 12, tg.COLUMN, "completion", 4)
    dry = project["dry_run"]
    assert dry["source"] == "column" and dry["samples"] == 12 and dry["mean"] == pytest.approx(1.1)
    assert "too easy" in warn["value"] and "Mean reward 1.100" in summary and "error rate 0%" in summary
    assert sum(fig.data[0].y) == 12  # the histogram counts every graded sample
    rows = table["value"]
    assert rows["headers"] == ["row", "sample", "output", "item", "correct", "format", "total", "errors", "logs"]
    first = rows["data"][0]
    assert first[2].startswith("Answer: ") and "answer=" in first[3] and first[6] == 1.1 and "eq" in first[8]
    assert table["visible"] and results["visible"]


def test_dry_run_counts_grader_errors():
    project = arithmetic_rft()
    project["graders"] = [{"name": "boom", "type": "python", "source": "def grade(s, i):\n    return 1 / 0\n"}]
    _p, summary, warn, _f, table, _r = tg.test_on_data(project, 3, tg.COLUMN, "completion", 2)
    assert "error rate 100%" in summary and "failed" in warn["value"]
    assert "ZeroDivisionError" in table["value"]["data"][0][7]


def test_dry_run_with_base_model_samples():
    project, summary, warn, _f, table, _r = tg.test_on_data(demo_project(), 3, tg.BASE, "", 2)
    dry = project["dry_run"]
    assert dry["source"] == "base" and dry["k"] == 2 and dry["samples"] == 6 and dry["samples_per_row"] == 2
    assert "2 base-model samples per prompt" in summary
    assert [r[1] for r in table["value"]["data"][:2]] == [1, 2]  # sample numbers within a row
    assert "too hard" in warn["value"]  # the untrained model never writes "Answer: N"


def test_dry_run_needs_data_and_graders():
    from graders.errors import DataError

    with pytest.raises(DataError, match="Data tab"):
        tg.test_on_data(new_project(), 5, tg.COLUMN, "completion", 2)
    project = copy.deepcopy(demo_project())
    project["graders"] = []
    with pytest.raises(DataError, match="Add a grader"):
        tg.test_on_data(project, 5, tg.COLUMN, "completion", 2)


def test_sample_columns_follow_the_rft_data():
    assert tg.sample_columns(demo_project()) == ["answer"]  # prompts.jsonl: the RFT stage's own file
    assert tg.sample_columns(arithmetic_rft()) == ["completion", "answer"]
    assert (EXAMPLE / "prompts.jsonl").exists()
