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


def test_grade_bound_by_assignment_or_import_is_accepted():
    build_graders([{"name": "p", "type": "python", "source": "grade = lambda sample, item: 1.0\n"},
                   {"name": "q", "type": "python", "source": "from math import floor as grade\n"}])


def test_defaults_and_openai_only_fields():
    g1, g2 = build_graders([OK, {"name": "p", "type": "python", "source": PY, "image_tag": "2025-05-08"}])
    assert g1.weight == 1.0 and g1.type == "string_check" and g2.type == "python"


def test_a_grader_bug_is_a_typed_error_not_an_exception(monkeypatch):
    [g] = build_graders([OK])
    monkeypatch.setattr(type(g), "_grade_one", lambda self, s, i: 1 / 0)
    result = g.grade({"output_text": "x"}, {})
    assert result.score == 0 and result.error.type == "runtime_error" and "ZeroDivisionError" in result.error.message
