"""A first judge, set up as a new user would: OpenAI's grader JSON pasted with no key in the environment says
at once which variable to set (no placeholder key, no retries); a local server needs no key; "Test connection"
to a server that is not running asks whether it is; `neq` is read as `ne`."""

import json

import pytest
from test_faults_graders import closed_port

from finetuner.ui import grader_forms as gf
from graders import build_graders
from graders.openai_compat import load_openai
from graders.testing import Reply, ScriptedJudgeServer

INPUT = [{"role": "user", "content": "Q: {{item.prompt}}\nAnswer: {{sample.output_text}}"}]
OPENAI_JSON = {"type": "score_model", "name": "judge", "model": "gpt-4o-mini", "input": INPUT, "range": [0, 1]}


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_a_judge_bound_for_openai_without_a_key_says_so_before_any_request(no_key):
    # Retries with a 30 s backoff: had it sent anything and retried, the grade would not come back at once.
    [g] = load_openai(dict(OPENAI_JSON, max_retries=3, retry_backoff_s=30))
    results = g.grade_batch(["4", "5"], [{"prompt": "2+2?"}] * 2)
    for r in results:
        assert r.error.type == "judge_server_error" and "OPENAI_API_KEY" in r.error.message
        assert "not set" in r.error.message and "base_url" in r.error.message and "api_key_env" in r.error.message
    stats = g.drain_stats()
    assert stats["judge_calls"] == 0 and stats["judge_retries"] == 0
    assert g.backend._client is None  # no client, so no placeholder key went anywhere
    g.close()


def test_the_same_judge_runs_once_the_key_or_a_server_is_given(no_key, monkeypatch):
    with ScriptedJudgeServer(lambda body, n: Reply('{"result": 0.5}')) as server:
        [local] = build_graders([dict(OPENAI_JSON, base_url=server.base_url)])  # a local server: no key needed
        assert local.grade("4", {"prompt": "2+2?"}).score == 0.5
        local.close()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # the official client's own variable
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
        [g] = load_openai(OPENAI_JSON)
        assert g.grade("4", {"prompt": "2+2?"}).score == 0.5
        g.close()
        assert server.headers[-1]["authorization"] == "Bearer sk-test-123"
        assert server.requests[-1]["messages"][-1]["content"] == "Q: 2+2?\nAnswer: 4"


def test_test_connection_without_a_key_names_the_variable(no_key):
    ok, message = gf.test_connection(gf.openai_specs(json.dumps(OPENAI_JSON))[0])
    assert not ok and "OPENAI_API_KEY" in message and "not set" in message


def test_test_connection_to_a_dead_endpoint_asks_whether_the_server_runs():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    spec = gf.judge_spec("score_model", "judge", 1, "", INPUT[0]["content"], url, "m")
    ok, message = gf.test_connection(spec, {"prompt": "2+2?"})
    assert not ok and message.startswith("❌") and "connection failed" in message
    assert f"Is the server running at {url}?" in message


@pytest.mark.parametrize("output,score", [("billing", 0.0), ("shipping", 1.0)])
def test_neq_is_read_as_ne(output, score):
    spec = {"name": "not_billing", "type": "string_check", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "neq"}
    [g] = build_graders([spec])
    assert g.operation == "ne" and g.grade(output, {"answer": "billing"}).score == score
    [pasted] = load_openai(json.dumps(spec))  # OpenAI's grader JSON, as its guide spells it
    assert pasted.grade(output, {"answer": "billing"}).score == score
