"""The local judge (`provider: local`) on the built-in tiny model, when it has been built."""

import os

import pytest

from graders import build_graders


def _tiny():
    tiny = pytest.importorskip("finetuner.modeling.tiny")
    if not os.path.isfile(os.path.join(tiny.TINY_DIR, "model.safetensors")):
        pytest.skip("the built-in tiny model is not built (finetuner/modeling/assets/tiny)")
    return tiny.tiny_path()


def test_local_judge_generates_and_parses():
    path = _tiny()
    [g] = build_graders([{"name": "local", "type": "score_model", "base_url": "local", "model": path,
                          "input": [{"role": "user", "content": "{{item.q}}={{sample.output_text}}"}],
                          "sampling_params": {"max_completion_tokens": 6, "temperature": 0},
                          "output_instructions": False, "structured": "off"}])  # generate, then parse
    results = g.grade_batch(["4", "5", "4"], [{"q": "2+2"}, {"q": "2+3"}, {"q": "2+2"}])
    for result in results:
        # the tiny model answers arithmetic in words ("That makes 4."), not JSON: a typed parse error that
        # keeps what it generated in the log; a bare number would parse
        assert result.error is None or (result.error.type == "judge_parse_error" and result.log.strip())
    stats = g.drain_stats()
    assert stats["judge_calls"] == 2 and stats["judge_cache_hits"] == 0  # one duplicate prompt deduplicated
    assert stats["judge_completion_tokens"] > 0 and stats["judge_latency_s"] > 0
    g.close()


def test_local_judge_with_missing_model_is_a_typed_error(tmp_path):
    [g] = build_graders([{"name": "local", "type": "score_model", "provider": "local", "model": str(tmp_path),
                          "input": "Rate {{sample.output_text}}"}])
    result = g.grade("x", {})
    assert result.score == 0 and result.error.type == "judge_server_error"
    assert "local judge model" in result.error.message
