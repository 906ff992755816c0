"""LLM judges against a real HTTP server on 127.0.0.1 (scripted answers, errors, slowness, garbage)."""

import asyncio
import json
import threading
import time

import pytest

from graders.errors import ConfigError
from graders import build_graders
from graders.rubrics import RUBRICS, rubric_spec
from graders.testing import Reply, ScriptedJudgeServer

MESSAGES = [{"role": "developer", "content": "You grade answers."},
            {"role": "user",
             "content": "Q: {{item.question}}\nReference: {{item.answer}}\nAnswer: {{sample.output_text}}"}]
ITEM = {"question": "2+2?", "answer": "4"}


@pytest.fixture
def serve():
    servers = []

    def start(script=None, latency_s=0.0):
        server = ScriptedJudgeServer(script or (lambda body, n: Reply()), latency_s=latency_s).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def judge(server, **extra):
    spec = {"name": "judge", "type": "score_model", "model": "judge-model", "base_url": server.base_url,
            "input": MESSAGES, "retry_backoff_s": 0.01}
    spec.update(extra)
    [g] = build_graders([spec])
    return g


def test_score_model_request_and_result(serve):
    server = serve(lambda body, n: Reply('{"result": 0.8, "steps": [{"description": "checked", "conclusion": "ok"}]}'))
    g = judge(server, sampling_params={"temperature": 0.2, "max_completions_tokens": 64, "seed": 1, "top_k": 5})
    result = g.grade("4", ITEM)
    assert result.score == 0.8 and result.error is None and "checked - ok" in result.log
    body = server.requests[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.2 and body["seed"] == 1
    assert body["max_completion_tokens"] == 64 and body["top_k"] == 5  # unknown keys go in extra_body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]  # developer -> system
    system = body["messages"][0]["content"]
    assert system.startswith("You grade answers.") and '"result"' in system
    assert body["messages"][1]["content"] == "Q: 2+2?\nReference: 4\nAnswer: 4"


@pytest.mark.parametrize("content,expected", [
    ("0.3", 0.3), ("```json\n{\"result\": 1}\n```", 1.0), ("<think>hmm {\"result\": 0}</think>{\"result\": 0.6}", 0.6),
    ("Reasoning first. Then: {\"steps\": [], \"result\": 0.9} done", 0.9), ("7", 1.0), ("-2", 0.0),
    ('{"result": "0.25"}', 0.25),
])
def test_answers_are_parsed_and_clipped(serve, content, expected):
    g = judge(serve(lambda body, n: Reply(content)))
    assert g.grade("4", ITEM).score == pytest.approx(expected)


@pytest.mark.parametrize("reply,kind", [
    (Reply("I think it is quite good"), "judge_parse_error"),
    (Reply('{"result": "great"}'), "judge_parse_error"),
    (Reply('{"result": NaN}'), "judge_parse_error"),
    (Reply(None), "judge_parse_error"),
    (Reply(raw=b"<html>502 bad gateway</html>"), "judge_parse_error"),
    (Reply(raw=b'{"choices": [{"message": '), "judge_parse_error"),
    (Reply("no", status=400), "judge_server_error"),
    (Reply("who are you", status=401), "judge_server_error"),
])
def test_garbage_and_client_errors_are_typed(serve, reply, kind):
    server = serve(lambda body, n: reply)
    result = judge(server).grade("4", ITEM)
    assert result.score == 0.0 and result.error.type == kind, result
    if reply.status in (400, 401):
        assert len(server.requests) == 1  # not retried
        assert f"HTTP {reply.status}" in result.error.message


def test_429_and_500_are_retried_with_backoff(serve):
    def script(body, n):
        if n == 0:
            return Reply(status=429, headers={"retry-after-ms": "20"})
        if n == 1:
            return Reply(status=503)
        return Reply('{"result": 0.5}')

    server = serve(script)
    g = judge(server)
    started = time.monotonic()
    assert g.grade("4", ITEM).score == 0.5
    assert len(server.requests) == 3 and time.monotonic() - started >= 0.02
    assert g.drain_stats()["judge_retries"] == 2


def test_persistent_500_gives_up(serve):
    server = serve(lambda body, n: Reply("boom", status=500))
    result = judge(server, max_retries=2).grade("4", ITEM)
    assert result.error.type == "judge_server_error" and "gave up after 3 tries" in result.error.message
    assert "HTTP 500" in result.error.message and len(server.requests) == 3


def test_slow_answer_times_out(serve):
    server = serve(lambda body, n: Reply("0.5", delay_s=2.0))
    result = judge(server, timeout_s=0.2, max_retries=1).grade("4", ITEM)
    assert result.error.type == "judge_server_error" and "timed out" in result.error.message
    assert len(server.requests) == 2  # the first try and one retry, each cut off by the timeout


def test_unreachable_server_is_a_server_error():
    [g] = build_graders([{"name": "j", "type": "score_model", "model": "m", "input": MESSAGES, "max_retries": 0,
                          "base_url": "http://127.0.0.1:9/v1", "timeout_s": 1}])
    result = g.grade("4", ITEM)
    assert result.error.type == "judge_server_error" and "connection" in result.error.message


def test_cache_and_dedup_by_rendered_prompt(serve):
    server = serve(lambda body, n: Reply("1"))
    g = judge(server)
    results = g.grade_batch(["4", "4", "5"], [ITEM, ITEM, ITEM])  # a GRPO group repeats completions
    assert [r.score for r in results] == [1.0, 1.0, 1.0] and len(server.requests) == 2
    g.grade("4", ITEM)
    assert len(server.requests) == 2
    stats = g.drain_stats()
    assert stats["judge_cache_hits"] == 1 and stats["judge_calls"] == 2 and stats["judge_latency_s"] > 0
    assert stats["judge_prompt_tokens"] > 0 and stats["judge_completion_tokens"] > 0
    g_nocache = judge(server, cache=False)
    g_nocache.grade("4", ITEM)
    g_nocache.grade("4", ITEM)
    assert len(server.requests) == 4


def test_concurrency_limit(serve):
    # The speed-up itself is measured by `python -m finetuner bench` (judge_speedup), not asserted on time.
    server = serve(latency_s=0.2)
    g = judge(server, concurrency=10)
    results = g.grade_batch([str(i) for i in range(20)], [ITEM] * 20)
    assert all(r.score == 1.0 for r in results)
    assert 1 < server.max_in_flight <= 10  # requests overlapped, never more than the limit


def test_api_key_comes_from_the_named_variable(serve, monkeypatch):
    server = serve()
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-local-123")
    judge(server, api_key_env="MY_JUDGE_KEY").grade("4", ITEM)
    assert server.headers[0]["authorization"] == "Bearer sk-local-123"
    result = judge(server, api_key_env="MISSING_JUDGE_KEY").grade("4", ITEM)
    assert result.error.type == "judge_server_error" and "MISSING_JUDGE_KEY" in result.error.message


def test_invalid_variable_sends_nothing(serve):
    server = serve()
    result = judge(server).grade("4", {"question": "q"})
    assert result.error.type == "invalid_variable" and server.requests == []


def test_label_model(serve):
    answers = {"great": '{"result": "positive"}', "meh": "Neutral", "bad": '{"result": "angry"}'}

    def script(body, n):
        text = body["messages"][-1]["content"]
        return Reply(answers[text.split(": ")[1]])

    server = serve(script)
    [g] = build_graders([{"name": "sentiment", "type": "label_model", "model": "m", "base_url": server.base_url,
                          "input": [{"role": "user", "content": "Statement: {{sample.output_text}}"}],
                          "labels": ["positive", "neutral", "negative"], "passing_labels": ["positive"]}])
    great, meh, bad = g.grade_batch(["great", "meh", "bad"], [{}, {}, {}])
    assert (great.score, meh.score) == (1.0, 0.0) and great.error is None and meh.error is None
    assert bad.error.type == "judge_parse_error" and "not one of the labels" in bad.error.message
    assert "positive, neutral, negative" in server.requests[0]["messages"][0]["content"]


def test_async_grading_from_other_event_loops(serve):
    server = serve(latency_s=0.05)
    g = judge(server)
    assert asyncio.run(g.agrade_batch(["a", "b"], [ITEM, ITEM]))[0].score == 1.0
    box = {}
    loop = asyncio.new_event_loop()  # like TRL's daemon loop for async reward functions
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        box["r"] = asyncio.run_coroutine_threadsafe(g.agrade_batch(["c"], [ITEM]), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert box["r"][0].score == 1.0


@pytest.mark.parametrize("key", list(RUBRICS))
def test_rubrics_build_and_run(serve, key):
    server = serve(lambda body, n: Reply('{"result": 0.7}'))
    assert {"title", "description", "variables", "input"} <= set(RUBRICS[key])
    [g] = build_graders([rubric_spec(key, model="m", base_url=server.base_url)])
    item = {"prompt": "Say hi", "answer": "hi", "context": "The sky is blue."}
    assert g.grade("hi", item).score == 0.7
    [g2] = build_graders([{"name": "r", "type": "score_model", "rubric": key, "model": "m",
                           "base_url": server.base_url}])
    assert g2.grade("hi", item).score == 0.7


@pytest.mark.parametrize("extra,needle", [
    ({"range": [1, 0]}, "range.*low then high"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "image"),
    ({"input": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"input": None}, "input': is missing"),
    ({"input": "Grade {{row.x}}"}, "'row'"),
    ({"provider": "ollama"}, "provider"),
    ({"sampling_params": "hot"}, "sampling_params"),
])
def test_judge_config_errors(extra, needle):
    spec = {"name": "j", "type": "score_model", "model": "m", "input": MESSAGES}
    spec.update(extra)
    if spec["input"] is None:
        del spec["input"]
    with pytest.raises(ConfigError, match=needle):
        build_graders([spec])


@pytest.mark.parametrize("extra,needle", [
    ({"labels": "yes"}, "labels.*list"), ({"passing_labels": ["maybe"]}, "'maybe' is not in labels"),
])
def test_label_config_errors(extra, needle):
    spec = {"name": "j", "type": "label_model", "model": "m", "input": MESSAGES, "labels": ["yes", "no"],
            "passing_labels": ["yes"]}
    spec.update(extra)
    with pytest.raises(ConfigError, match=needle):
        build_graders([spec])


def test_key_is_never_in_the_spec_or_logs(serve, monkeypatch):
    monkeypatch.setenv("JUDGE_SECRET", "sk-do-not-leak")
    server = serve(lambda body, n: Reply("nonsense"))
    g = judge(server, api_key_env="JUDGE_SECRET")
    result = g.grade("4", ITEM)
    assert "sk-do-not-leak" not in json.dumps([result.log, result.error.message, server.requests])


def test_an_echoed_long_key_is_redacted_even_where_the_message_is_cut_short(serve, monkeypatch):
    # OpenAI project keys run to ~164 characters; the error text is cut to 200, often mid-key.
    key = "sk-proj-" + "A1b2C3d4" * 20
    monkeypatch.setenv("LONG_JUDGE_KEY", key)
    body = json.dumps({"error": {"message": "Incorrect API key provided: " + "x" * 60 + " " + key}})
    server = serve(lambda body_, n: Reply(raw=body.encode(), status=401))
    result = judge(server, api_key_env="LONG_JUDGE_KEY", max_retries=0).grade("4", ITEM)
    assert result.error.type == "judge_server_error" and "HTTP 401" in result.error.message
    assert "***" in result.error.message and key[:12] not in result.error.message


@pytest.mark.parametrize("name", ["HF_TOKEN", "SK_JUDGE", "GHS_TOKEN", "JUDGE_API_KEY"])
def test_upper_case_variable_names_are_names_not_keys(name):
    [g] = build_graders([{"name": "j", "type": "score_model", "model": "m", "input": MESSAGES,
                          "api_key_env": name}])
    assert g.backend.api_key_env == name  # kept as the variable to read, not refused as a pasted key
