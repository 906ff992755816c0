"""Templates ({{sample.*}}, {{item.*}}) and sample normalization."""

import pytest

from graders.errors import ConfigError
from graders import build_graders, make_sample
from graders.base import GraderFailure
from graders.templating import Template, TemplateSyntaxError, render

SAMPLE = make_sample('{"city": "Paris", "tags": ["a", "b"], "n": 3}')
ITEM = {"answer": "42", "answers": ["x", "y"], "meta": {"source": {"name": "wiki"}}, "odd key": "ok",
        "num": 1.5, "flag": True, "empty": None, "obj": {"a": 1}}


@pytest.mark.parametrize("text,expected", [
    ("{{sample.output_text}}", '{"city": "Paris", "tags": ["a", "b"], "n": 3}'),
    ("{{ sample.output_json.city }}", "Paris"),
    ("{{sample.output_json.tags[1]}}", "b"),
    ("{{sample.output_json.tags.0}}", "a"),
    ("A={{item.answer}}!", "A=42!"),
    ("{{item.answers[0]}}/{{item.answers.1}}/{{item.answers[-1]}}", "x/y/y"),
    ("{{item.meta.source.name}}", "wiki"),
    ('{{item["odd key"]}}', "ok"),
    ("{{item.num}} {{item.flag}} [{{item.empty}}] {{item.obj}}", '1.5 true [] {"a": 1}'),
    ("no placeholders", "no placeholders"),
])
def test_render(text, expected):
    assert render(text, SAMPLE, ITEM) == expected


def test_chat_messages_render_as_lines():
    item = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]}
    assert render("{{item.prompt}}", {}, item) == "system: Be brief.\nuser: 2+2?"


@pytest.mark.parametrize("text,needle", [
    ("{{item.missing}}", "the row has no column 'missing' (it has: answer, answers"),
    ("{{item.answers[5]}}", "has 2 entries, no index 5"),
    ("{{item.answer.deeper}}", "is str, it has no 'deeper'"),
    ("{{item.meta.nope}}", "item.meta has no key 'nope'"),
])
def test_missing_variable_is_typed(text, needle):
    with pytest.raises(GraderFailure) as info:
        Template(text).render(SAMPLE, ITEM)
    assert info.value.type == "invalid_variable"
    assert needle in info.value.message


def test_output_json_missing_when_output_is_not_json():
    with pytest.raises(GraderFailure) as info:
        render("{{sample.output_json.city}}", make_sample("not json"), {})
    assert "not valid JSON" in info.value.message


@pytest.mark.parametrize("text", ["{{row.answer}}", "{{item..x}}", "{{1abc}}", "{{item.a[}}"])
def test_bad_templates_are_syntax_errors(text):
    with pytest.raises(TemplateSyntaxError):
        Template(text)


def test_bad_template_is_config_error_at_build():
    with pytest.raises(ConfigError, match="grader 'g' .* field 'input'.*'row'"):
        build_graders([{"name": "g", "type": "string_check", "input": "{{row.answer}}", "reference": "x",
                        "operation": "eq"}])


def test_missing_variable_scores_zero_as_error():
    [g] = build_graders([{"name": "g", "type": "string_check", "input": "{{sample.output_text}}",
                          "reference": "{{item.answer}}", "operation": "eq"}])
    result = g.grade({"output_text": "4"}, {"solution": "4"})
    assert result.score == 0.0 and result.error.type == "invalid_variable"
    assert "answer" in result.error.message


def test_make_sample():
    assert make_sample("```json\n{\"a\": 1}\n```")["output_json"] == {"a": 1}
    assert "output_json" not in make_sample("hello")
    assert make_sample([{"role": "assistant", "content": "hi"}]) == {
        "output_text": "hi", "output_tools": [], "tool_calls": [], "turns": 1, "tool_errors": 0, "unfinished": False,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": []}}]}
    assert make_sample({"output_text": "[1, 2]"})["output_json"] == [1, 2]
    assert make_sample([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}])["output_text"] == "a"
