"""OpenAI grader JSON (the examples from OpenAI's grader docs) loads and runs unchanged."""

import json

import pytest

from graders.errors import ConfigError
from graders.openai_compat import load_openai
from graders.testing import Reply, ScriptedJudgeServer

STRING_CHECK = {
    "type": "string_check", "name": "Example string check grader",
    "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}", "operation": "eq",
}
TEXT_SIMILARITY = {
    "type": "text_similarity", "name": "Example text similarity grader",
    "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}",
    "pass_threshold": 0.8, "evaluation_metric": "fuzzy_match",
}
PYTHON = {
    "type": "python", "name": "Example python grader", "image_tag": "2025-05-08",
    "source": "from rapidfuzz import fuzz, utils\n\n"
              "def grade(sample, item) -> float:\n"
              "    output_text = sample[\"output_text\"]\n"
              "    reference_answer = item[\"reference_answer\"]\n"
              "    return fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0\n",
}
SCORE_MODEL = {
    "type": "score_model", "name": "Example score model grader",
    "input": [{"role": "user", "content": "Score how close the reference answer is to the model answer. Score 1.0 if "
               "they are the same and 0.0 if they are different. Return just a floating point score\n\nReference "
               "answer: {{item.reference_answer}}\n\nModel answer: {{sample.output_text}}"}],
    "model": "o4-mini-2025-04-16", "range": [0, 1],
    "sampling_params": {"seed": 42, "temperature": 1, "max_completions_tokens": 32768, "top_p": 1,
                        "reasoning_effort": "medium"},
}
LABEL_MODEL = {
    "name": "First label grader", "type": "label_model", "model": "o3-mini-2025-01-31",
    "input": [{"type": "message", "role": "developer",
               "content": "Classify the sentiment of the following statement as one of positive, neutral, or negative"},
              {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                 "text": "Statement: {{item.response}}"}]}],
    "passing_labels": ["positive"], "labels": ["positive", "neutral", "negative"],
}
MULTI = {
    "type": "multi",
    "graders": {
        "name": {"name": "name_grader", "type": "text_similarity", "input": "{{sample.output_json.name}}",
                 "reference": "{{item.name}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
        "email": {"name": "email_grader", "type": "string_check", "input": "{{sample.output_json.email}}",
                  "reference": "{{item.email}}", "operation": "eq"},
    },
    "calculate_output": "(name + email) / 2",
}


def test_string_check_example():
    [g] = load_openai(STRING_CHECK)
    assert g.name == "Example string check grader"
    assert g.grade("Paris", {"reference_answer": "Paris"}).score == 1.0


def test_text_similarity_example():
    [g] = load_openai(json.dumps(TEXT_SIMILARITY))
    result = g.grade("fuzzy wuzzy had no hair", {"reference_answer": "fuzzy wuzzy was a bear"})
    assert 0.4 < result.score < 0.9 and "fail at 0.8" in result.log


def test_python_example():
    [g] = load_openai(PYTHON)
    assert g.grade("Hello world!", {"reference_answer": "hello world"}).score == pytest.approx(1.0)
    assert g.grade("goodbye", {"reference_answer": "hello world"}).score < 0.5


def test_multi_example_and_weighted_formula():
    [g] = load_openai(MULTI, name="contact")
    item = {"name": "Ada Lovelace", "email": "ada@example.com"}
    assert g.grade('{"name": "Ada Lovelace", "email": "ada@example.com"}', item).score == 1.0
    assert g.grade('{"name": "Ada Lovelace", "email": "ada@x"}', item).score == 0.5
    cringe = {"type": "multi", "graders": {
        "name": MULTI["graders"]["name"],
        "cringe_score": {"name": "cringe", "type": "python", "source": "def grade(sample, item):\n    return 0.2\n"}},
        "calculate_output": "0.5 * name + 0.5 * cringe_score"}
    [g2] = load_openai(cringe)
    assert g2.grade('{"name": "Ada Lovelace"}', item).score == pytest.approx(0.6)


def test_model_graders_run_unchanged_against_openai_compatible_server(monkeypatch):
    def script(body, n):
        if body["model"].startswith("o3"):
            return Reply('{"result": "positive"}' if "love" in body["messages"][-1]["content"] else "negative")
        return Reply('{"result": 0.9, "steps": []}')

    with ScriptedJudgeServer(script) as server:
        # no base_url in OpenAI's JSON: the openai client reads these variables, as it would for OpenAI itself
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        [score] = load_openai(SCORE_MODEL)
        [label] = load_openai({"grader": LABEL_MODEL})
        assert score.grade("Paris", {"reference_answer": "Paris"}).score == 0.9
        assert label.grade("x", {"response": "I love it"}).score == 1.0
        assert label.grade("x", {"response": "meh"}).score == 0.0
        body = server.requests[0]
        assert body["model"] == "o4-mini-2025-04-16" and body["max_completion_tokens"] == 32768
        assert body["reasoning_effort"] == "medium" and body["seed"] == 42
        assert server.headers[0]["authorization"] == "Bearer sk-test"
        assert server.requests[1]["messages"][-1]["content"] == "Statement: I love it"


@pytest.mark.parametrize("spec,needle", [
    (dict(TEXT_SIMILARITY, evaluation_metric="cosine"), "'cosine' is not supported here"),
    (dict(SCORE_MODEL, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "{{item.img}}"}]}]),
     "image and audio inputs are not supported"),
    ({"type": "multi", "graders": {"inner": MULTI}}, "cannot contain another multi"),
    ({"type": "endpoint", "name": "e", "url": "https://x"}, "unknown type 'endpoint'"),
])
def test_what_cannot_run_here_fails_clearly(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        load_openai(spec)
