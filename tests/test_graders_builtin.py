"""Built-in graders: string_check, text_similarity, regex, json_schema, length, math."""

import json

import pytest

from graders.errors import ConfigError
from graders import build_graders


def one(**spec):
    spec.setdefault("name", "g")
    [g] = build_graders([spec])
    return g


def score(g, text, item=None):
    result = g.grade({"output_text": text}, item or {})
    assert result.error is None, result.error
    return result.score


# -- string_check
@pytest.mark.parametrize("op,text,ref,expected", [
    ("eq", "Paris", "Paris", 1), ("eq", "paris", "Paris", 0), ("ne", "Rome", "Paris", 1), ("ne", "a", "a", 0),
    ("like", "It is Paris.", "Paris", 1), ("like", "It is paris.", "Paris", 0),
    ("ilike", "It is PARIS.", "paris", 1), ("ilike", "Rome", "paris", 0),
])
def test_string_check(op, text, ref, expected):
    g = one(type="string_check", input="{{sample.output_text}}", reference="{{item.ref}}", operation=op)
    assert score(g, text, {"ref": ref}) == expected


def test_string_check_bad_operation_suggests():
    with pytest.raises(ConfigError, match="operation.*Did you mean 'ilike'"):
        one(type="string_check", input="a", reference="b", operation="ilik")


# -- text_similarity
@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                                    "rouge_4", "rouge_5", "rouge_l"])
def test_text_similarity_metrics(metric):
    g = one(type="text_similarity", input="{{sample.output_text}}", reference="{{item.ref}}",
            evaluation_metric=metric)
    ref = "the quick brown fox jumps over the lazy dog today"
    same = score(g, ref, {"ref": ref})
    close = score(g, "the quick brown fox jumps over a lazy dog today", {"ref": ref})
    far = score(g, "completely unrelated words here", {"ref": ref})
    assert same == pytest.approx(1.0, abs=1e-6) or metric == "meteor" and same > 0.99
    assert same >= close > far >= 0.0


def test_text_similarity_pass_threshold_and_meteor_note():
    g = one(type="text_similarity", input="{{sample.output_text}}", reference="abc", evaluation_metric="fuzzy_match",
            pass_threshold=0.9)
    assert "fail at 0.9" in g.grade({"output_text": "abd"}, {}).log
    g = one(type="text_similarity", input="{{sample.output_text}}", reference="a b", evaluation_metric="meteor")
    assert "meteor" in g.grade({"output_text": "a b"}, {}).log


def test_cosine_is_refused_clearly():
    with pytest.raises(ConfigError, match="'cosine' is not supported here: needs an embedding model"):
        one(type="text_similarity", input="a", reference="b", evaluation_metric="cosine")


def test_unknown_metric_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'rouge_l'"):
        one(type="text_similarity", input="a", reference="b", evaluation_metric="rouge-l")


# -- regex
def test_regex_modes_and_flags():
    g = one(type="regex", pattern=r"answer: \d+")
    assert score(g, "so the answer: 42.") == 1 and score(g, "no") == 0
    g = one(type="regex", pattern=r"\d+", mode="fullmatch")
    assert score(g, "42") == 1 and score(g, "42!") == 0
    g = one(type="regex", pattern="^final", flags=["IGNORECASE", "MULTILINE"])
    assert score(g, "x\nFINAL") == 1
    g = one(type="regex", pattern="^final", flags="im")
    assert score(g, "x\nFINAL") == 1
    g = one(type="regex", pattern="sorry", negate=True, flags="i")
    assert score(g, "Sorry, I can't") == 0 and score(g, "Sure") == 1


def test_regex_templated_pattern_escapes_values():
    g = one(type="regex", pattern=r"\b{{item.answer}}$")
    assert score(g, "result 1+1", {"answer": "1+1"}) == 1
    assert score(g, "result 11", {"answer": "1+1"}) == 0  # '+' was escaped, not a repeat
    g = one(type="regex", pattern="{{item.p}}", escape_variables=False)
    assert score(g, "aaa", {"p": "a+"}) == 1
    bad = g.grade({"output_text": "a"}, {"p": "(unclosed"})
    assert bad.error.type == "runtime_error"


def test_regex_bad_pattern_and_flag_are_config_errors():
    with pytest.raises(ConfigError, match="pattern.*not a valid regular expression"):
        one(type="regex", pattern="(unclosed")
    with pytest.raises(ConfigError, match="flags.*not a regex flag"):
        one(type="regex", pattern="a", flags=["CASELESS"])


def test_regex_runaway_pattern_times_out():
    g = one(type="regex", pattern=r"(a|aa)+$", timeout_s=0.2)
    result = g.grade({"output_text": "a" * 60 + "b"}, {})
    assert result.error.type == "timeout" and result.score == 0


# -- json_schema
SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


def test_json_schema():
    g = one(type="json_schema", schema=SCHEMA)
    assert score(g, '{"answer": 3}') == 1
    assert score(g, '```json\n{"answer": 3}\n```') == 1
    bad = g.grade({"output_text": '{"answer": "3"}'}, {})
    assert bad.score == 0 and bad.error is None and "answer" in bad.log
    notjson = g.grade({"output_text": "three"}, {})
    assert notjson.score == 0 and notjson.error is None and "not JSON" in notjson.log


def test_json_schema_from_file(tmp_path):
    (tmp_path / "s.yaml").write_text("type: object\nrequired: [a]\n")
    [g] = build_graders([{"name": "s", "type": "json_schema", "schema_file": "s.yaml"}], base_dir=str(tmp_path))
    assert score(g, '{"a": 1}') == 1 and score(g, '{"b": 1}') == 0


@pytest.mark.parametrize("spec,needle", [
    ({"schema": {"type": "objekt"}}, "not a valid JSON schema"),
    ({}, "exactly one of 'schema'"),
    ({"schema_file": "nope.json"}, "cannot be read"),
    ({"schema": "{not json"}, "not JSON"),
])
def test_json_schema_config_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        one(type="json_schema", **spec)


# -- length
def test_length_bounds():
    g = one(type="length", min=3, max=5)
    assert [score(g, "x" * n) for n in (2, 3, 5, 6)] == [0, 1, 1, 0]
    g = one(type="length", unit="words", max=2, penalty="linear", tolerance=2)
    assert [score(g, t) for t in ("a b", "a b c", "a b c d", "a b c d e")] == [1, 0.5, 0, 0]


def test_length_tokens(tmp_path):
    pytest.importorskip("tokenizers")
    from finetuner.modeling.tiny import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)  # character-level: one token per character
    g = one(type="length", unit="tokens", max=4, tokenizer=str(tmp_path))
    assert score(g, "abcd") == 1 and score(g, "abcde") == 0


@pytest.mark.parametrize("spec,needle", [
    ({}, "give 'min', 'max' or both"), ({"min": 5, "max": 2}, "larger than max"),
    ({"max": 3, "unit": "tokens"}, "tokenizer.*needed"), ({"max": -1}, "at least 0"),
])
def test_length_config_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        one(type="length", **spec)


# -- math
@pytest.mark.parametrize("text,ref,expected", [
    ("The answer is $\\frac{1}{2}$", "0.5", 1), ("so \\boxed{42}", "42", 1), ("\\boxed{41}", "42", 0),
    ("x = $2\\sqrt{2}$", "\\sqrt{8}", 1), ("I don't know", "3", 0),
])
def test_math(text, ref, expected):
    g = one(type="math", reference="{{item.answer}}")
    assert score(g, text, {"answer": ref}) == expected


def test_math_errors_are_typed():
    g = one(type="math", reference="{{item.answer}}")
    results = g.grade_batch([{"output_text": "1"}] * 2, [{"solution": "1"}, {"answer": ""}])
    assert results[0].error.type == "invalid_variable"
    assert results[1].error.type == "runtime_error" and "reference" in results[1].error.message


def test_grade_result_logs_are_json_safe():
    g = one(type="string_check", input="{{sample.output_text}}", reference="x", operation="eq")
    json.dumps(g.grade({"output_text": "\udce9"}, {}).log)
