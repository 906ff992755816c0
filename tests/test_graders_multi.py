"""The safe formula language and `multi` graders."""

import math

import pytest

from graders.errors import ConfigError
from graders import build_graders
from graders.formula import Formula, FormulaError, FormulaSyntaxError


@pytest.mark.parametrize("text,expected", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ^ 3 ^ 2", 512), ("-2 ^ 2", -4), ("2 ** 3", 8), ("2 ^ -1", 0.5),
    ("10 / 4 - 1", 1.5), ("--3", 3), ("+3", 3), ("min(a, b, 0.7)", 0.25), ("max(a, b)", 0.5), ("abs(-a)", 0.5),
    ("floor(2.7) + ceil(2.1)", 5), ("exp(0) + sqrt(16)", 5), ("log(exp(2))", 2), ("log(8, 2)", 3),
    ("0.5 * a + 0.5 * b", 0.375), (".5e1", 5), ("1e-2 * 100", 1),
])
def test_formula_values(text, expected):
    assert Formula(text, names={"a", "b"}).evaluate({"a": 0.5, "b": 0.25}) == pytest.approx(expected)


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("a +", "ends too early"), ("a b", "unexpected 'b'"), ("(a + b", "expected '\\)'"),
    ("nmae + 1", "'nmae' is not a grader in this multi. Did you mean 'name'"), ("pow(a, 2)", "unknown function"),
    ("sqrt(a, b)", "takes 1 argument"), ("min()", "unexpected"), ("a; b", "';' is not allowed"),
    ("__import__('os')", "is not allowed"), ("a.b", "'.' is not allowed"), ("a[0]", "'\\[' is not allowed"),
])
def test_formula_syntax_errors(text, needle):
    with pytest.raises(FormulaSyntaxError, match=needle):
        Formula(text, names={"a", "b", "name"})


def test_formula_syntax_error_points_at_position():
    with pytest.raises(FormulaSyntaxError) as info:
        Formula("a + nope", names={"a"})
    assert info.value.pos == 4 and "    ^" in str(info.value)


@pytest.mark.parametrize("text", ["a / b", "log(b)", "sqrt(b - 1)", "exp(1000)", "10 ^ 400", "(b - 1) ^ 0.5"])
def test_formula_runtime_errors(text):
    with pytest.raises(FormulaError):
        Formula(text, names={"a", "b"}).evaluate({"a": 1.0, "b": 0.0})


def _multi(**extra):
    spec = {"name": "m", "type": "multi", "graders": {
        "name": {"name": "name_grader", "type": "string_check", "input": "{{sample.output_json.name}}",
                 "reference": "{{item.name}}", "operation": "eq"},
        "email": {"type": "string_check", "input": "{{sample.output_json.email}}", "reference": "{{item.email}}",
                  "operation": "eq"}}}
    spec.update(extra)
    [g] = build_graders([spec])
    return g


ITEM = {"name": "Ada", "email": "ada@x.org"}


def test_multi_formula():
    g = _multi(calculate_output="(name + email) / 2")
    assert g.grade('{"name": "Ada", "email": "no"}', ITEM).score == 0.5
    assert g.grade('{"name": "Ada", "email": "ada@x.org"}', ITEM).score == 1.0
    result = g.grade('{"name": "Ada", "email": "no"}', ITEM)
    assert "name=1.000" in result.log and "email=0.000" in result.log


def test_multi_weights_and_default_mean():
    g = _multi(weights={"name": 3, "email": 1})
    assert g.grade('{"name": "Ada", "email": "no"}', ITEM).score == 0.75
    g = _multi()
    assert g.grade('{"name": "Ada", "email": "no"}', ITEM).score == 0.5


def test_multi_sub_error_is_the_multis_error():
    g = _multi(calculate_output="name + email")
    result = g.grade("not json", ITEM)
    assert result.score == 0 and result.error.type == "invalid_variable" and result.error.message.startswith("name:")


def test_multi_formula_error_is_typed():
    g = _multi(calculate_output="name / email")
    result = g.grade('{"name": "Ada", "email": "no"}', ITEM)
    assert result.score == 0 and result.error.type == "formula_error" and "division by zero" in result.error.message


@pytest.mark.parametrize("extra,needle", [
    ({"calculate_output": "name + emial"}, "calculate_output.*Did you mean 'email'"),
    ({"calculate_output": "name +"}, "calculate_output': cannot be read"),
    ({"calculate_output": "name", "weights": {"name": 1}}, "either 'calculate_output' or 'weights'"),
    ({"weights": {"nam": 1}}, "'nam' is not one of this multi's graders"),
    ({"weights": {"name": 0, "email": 0}}, "all zero"),
])
def test_multi_config_errors(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        _multi(**extra)


def test_multi_inside_multi_is_refused():
    inner = {"type": "multi", "graders": {"a": {"type": "length", "max": 3}}}
    with pytest.raises(ConfigError, match="cannot contain another multi"):
        build_graders([{"name": "m", "type": "multi", "graders": {"inner": inner}}])


@pytest.mark.parametrize("graders,needle", [
    ({}, "is empty"), ({"not valid": {"type": "length", "max": 1}}, "cannot be used in a formula"),
    ({"a": "length"}, "must be a grader spec"),
    ({"a": {"type": "lenght", "max": 1}}, "grader 'a' in multi 'm': unknown type 'lenght'"),
    ({"a": {"type": "length"}}, "grader 'm.a' \\(length\\)"),
])
def test_multi_sub_config_errors(graders, needle):
    with pytest.raises(ConfigError, match=needle):
        build_graders([{"name": "m", "type": "multi", "graders": graders}])


def test_multi_mixes_python_and_builtin():
    [g] = build_graders([{"name": "m", "type": "multi", "calculate_output": "max(py, 0) * len",
                          "graders": {"py": {"type": "python", "source": "def grade(s, i):\n    return 0.5\n"},
                                      "len": {"type": "length", "max": 10}}}])
    results = g.grade_batch(["short", "far too long text"], [{}, {}])
    assert [r.score for r in results] == [0.5, 0.0]
    assert g.score_range is None and not math.isnan(results[0].score)
