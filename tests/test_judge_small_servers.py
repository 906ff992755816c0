"""LLM judges against real small judges: `transformers serve` over HTTP, and the local likelihood judge."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from graders import aio, build_graders
from graders.judge_parse import LENIENT_MARK

pytestmark = [pytest.mark.real, pytest.mark.slow]
ROWS = [{"q": "What is 2+3?"}, {"q": "What is the capital of France?"}, {"q": "What is 2+2?"}]
OUTS = ["5", "Paris", "7"]
LABEL_IN = [{"role": "user", "content": "Question: {{item.q}}\nAnswer: {{sample.output_text}}\nIs this answer "
             "correct or incorrect? Reply with one word: correct or incorrect."}]
SCORE_IN = [{"role": "user", "content": "Question: {{item.q}}\nAnswer: {{sample.output_text}}\nRate the answer "
             "from 0 to 10. Reply like: Score: N/10"}]


@pytest.fixture(scope="module")
def serve_url(real_model):
    cli = os.path.join(os.path.dirname(sys.executable), "transformers")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             real_model], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not come up on port {port} (exit {proc.poll()})")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_judges_on_transformers_serve_parse_prose_answers(serve_url, real_model):
    # the server pins the model and wants its path as `model`; it ignores response_format, so answers are prose
    common = dict(base_url=serve_url, model=real_model, output_instructions=False, timeout_s=300,
                  sampling_params={"max_tokens": 20, "temperature": 0})
    lab, sc = build_graders([
        dict(name="lab", type="label_model", input=LABEL_IN, labels=["correct", "incorrect"],
             passing_labels=["correct"], **common),
        dict(name="sc", type="score_model", input=SCORE_IN, range=[0, 10], **common)])
    labels = lab.grade_batch(OUTS, ROWS)
    assert all(r.ok for r in labels), [r.error for r in labels]
    assert any(LENIENT_MARK in r.log for r in labels)  # at least one prose answer read leniently
    scores = sc.grade_batch(OUTS, ROWS)
    parsed = [r for r in scores if r.ok]
    # this 135M model often answers the question instead of rating it ("2 + 3 = 5"): those stay parse
    # errors saying why; the answers naming one score parse
    assert parsed and all(0 <= r.score <= 10 and LENIENT_MARK in r.log for r in parsed)
    assert all(r.error.type == "judge_parse_error" and "read leniently" in r.error.message
               for r in scores if not r.ok)
    lab.close()
    sc.close()


def test_local_likelihood_judge_picks_the_argmax_label_and_expected_score(real_model):
    q = [{"role": "user", "content": "Question: {{item.q}}\nAnswer: {{sample.output_text}}\nIs the answer correct?"}]
    lab, sc = build_graders([
        {"name": "lab", "type": "label_model", "provider": "local", "model": real_model, "input": q,
         "labels": ["correct", "incorrect"], "passing_labels": ["correct"]},
        {"name": "sc", "type": "score_model", "provider": "local", "model": real_model, "input": q,
         "range": [0, 10]}])
    assert lab.likelihood and sc.likelihood
    msgs = lab._prepare(OUTS[:2], ROWS[:2])
    probs = aio.run(lab.backend.choose_many(msgs, lab.candidates(), lab.stats))
    results = lab.grade_batch(OUTS[:2], ROWS[:2])
    for p, r in zip(probs, results):
        assert set(p) == {"correct", "incorrect"} and abs(sum(p.values()) - 1) < 1e-5
        best = max(p, key=p.get)
        assert r.ok and r.score == (1.0 if best == "correct" else 0.0) and repr(best) in r.log
    scores = sc.grade_batch(OUTS[:2], ROWS[:2])
    assert all(r.ok and 0 <= r.score <= 10 and "expected score" in r.log for r in scores)
    assert len({round(r.score, 6) for r in scores}) == 2  # a weighted value, not a constant
    lab.close()
    sc.close()
