"""build_graders: every config mistake is a ConfigError naming the grader and field and saying what to do."""

import pytest

from graders.errors import ConfigError
from graders import GraderConfigError, build_graders
from graders.python_grader import MAX_SOURCE_BYTES

OK = {"name": "g", "type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "eq"}
PY = "def grade(sample, item):\n    return 1.0\n"


@pytest.mark.parametrize("specs,needle", [
    ([dict(OK, type="string_chek")], "unknown type 'string_chek'. Did you mean 'string_check'"),
    ([{"name": "g"}], "field 'type' is missing"),
    ([dict(OK, name="")], "field 'name' is missing"),
    ([{k: v for k, v in OK.items() if k != "name"}], "field 'name' is missing"),
    ([OK, OK], "two graders have this name"),
    ([dict(OK, name="a/b")], "may not contain '/'"),
    ([dict(OK, refrence="x")], "'refrence': is not a field.* Did you mean 'reference'"),
    ([{k: v for k, v in OK.items() if k != "reference"}],
     "grader 'g' \\(string_check\\), field 'reference': is missing"),
    ([dict(OK, weight="heavy")], "field 'weight': must be a number"),
    (["string_check"], "graders\\[0\\] must be a mapping"),
    ("graders", "must be a list"),
    ([{"name": "p", "type": "python", "source": "x = 1\n"}], "defines no function grade"),
    ([{"name": "p", "type": "python", "source": "def grade(sample, item)\n    return 1\n"}], "syntax error on line 1"),
    ([{"name": "p", "type": "python", "source": "def grade(sample):\n    return 1\n"}], "must take \\(sample, item\\)"),
    ([{"name": "p", "type": "python", "source": "async def grade(s, i):\n    return 1\n"}], "plain `def grade"),
    ([{"name": "p", "type": "python"}], "exactly one of 'source'"),
    ([{"name": "p", "type": "python", "source": PY, "file": "g.py"}], "exactly one of 'source'"),
    ([{"name": "p", "type": "python", "file": "missing.py"}], "field 'file': cannot read"),
    ([{"name": "p", "type": "python", "source": PY + "#" * MAX_SOURCE_BYTES}], "at most 256 kB"),
    ([{"name": "p", "type": "python", "source": PY, "timeout_s": 0}], "timeout_s': is 0"),
    ([{"name": "p", "type": "python", "source": PY, "memory_mb": 10.5}], "memory_mb"),
])
def test_config_errors(specs, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        build_graders(specs)
    assert isinstance(info.value, GraderConfigError)


def test_python_file_relative_to_base_dir(tmp_path):
    (tmp_path / "g.py").write_text(PY)
    [g] = build_graders([{"name": "p", "type": "python", "file": "g.py", "weight": 2}], base_dir=str(tmp_path))
    assert g.weight == 2.0 and g.grade({"output_text": "x"}, {}).score == 1.0


def test_python_file_too_large(tmp_path):
    (tmp_path / "big.py").write_text(PY + "#" * MAX_SOURCE_BYTES)
    with pytest.raises(ConfigError, match="over 256 kB"):
        build_graders([{"name": "p", "type": "python", "file": "big.py"}], base_dir=str(tmp_path))


# Each `grade` binding the static check accepts, graded on a row it must score 1 and one it must score 0, so a
# source accepted but then run wrongly (or not at all) fails here, not only one the check rejects.
EQ_LAMBDA = "grade = lambda sample, item: float(sample['output_text'] == item['answer'])\n"


NO_TOOLS = {"output_tools": [], "tool_calls": [], "turns": 1, "tool_errors": 0, "unfinished": False,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "seven", "tool_calls": []}}]}


@pytest.mark.parametrize("source,hit,miss", [
    (EQ_LAMBDA, ({"output_text": "7"}, {"answer": "7"}), ({"output_text": "8"}, {"answer": "7"})),
    ("grade: object = " + EQ_LAMBDA.removeprefix("grade = "),
     ({"output_text": "7"}, {"answer": "7"}), ({"output_text": "8"}, {"answer": "7"})),
    # operator.eq(sample, item): the whole sample equals the whole item, its bool counting as 1.0 / 0.0 (text
    # that is not JSON, since a JSON output would add `output_json` to the sample; every sample has the tool
    # fields, empty without tools)
    ("from operator import eq as grade\n", ({"output_text": "seven"}, {"output_text": "seven", **NO_TOOLS}),
     ({"output_text": "seven"}, {"output_text": "eight", **NO_TOOLS})),
])
def test_grade_bound_by_assignment_or_import_is_accepted(source, hit, miss):
    [g] = build_graders([{"name": "p", "type": "python", "source": source}])
    right, wrong = g.grade(*hit), g.grade(*miss)
    assert (right.score, right.error) == (1.0, None) and (wrong.score, wrong.error) == (0.0, None)


def test_grade_imported_with_the_wrong_arity_builds_and_scores_a_typed_error():
    """`from math import floor as grade` binds `grade`, so it builds; floor(sample, item) then fails per row."""
    [g] = build_graders([{"name": "q", "type": "python", "source": "from math import floor as grade\n"}])
    result = g.grade({"output_text": "7"}, {"answer": "7"})
    assert result.score == 0.0 and result.error.type == "runtime_error" and "floor" in result.error.message


def test_defaults_and_openai_only_fields():
    g1, g2 = build_graders([OK, {"name": "p", "type": "python", "source": EQ_LAMBDA, "image_tag": "2025-05-08"}])
    assert g1.weight == 1.0 and g1.type == "string_check" and g2.type == "python"
    # OK checks output == "x"; the python grader (its OpenAI-only image_tag ignored) output == item answer
    assert [g1.grade({"output_text": t}, {}).score for t in ("x", "y")] == [1.0, 0.0]
    assert [g2.grade({"output_text": t}, {"answer": "x"}).score for t in ("x", "y")] == [1.0, 0.0]


def test_a_grader_bug_is_a_typed_error_not_an_exception(monkeypatch):
    [g] = build_graders([OK])
    monkeypatch.setattr(type(g), "_grade_one", lambda self, s, i: 1 / 0)
    result = g.grade({"output_text": "x"}, {})
    assert result.score == 0 and result.error.type == "runtime_error" and "ZeroDivisionError" in result.error.message
