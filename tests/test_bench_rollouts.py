"""benchmarks/rollouts.py: the engine settings it passes to GRPOConfig, the paged cache sizing, the table rows
for benchmarks/__main__.py, and (slow) a quick run on the built-in model. No assert is on speed."""

import math

import pytest

from benchmarks import rollouts


def test_engine_args_select_each_engine():
    assert rollouts.engine_args("generate", 64, 12) == {}
    assert rollouts.engine_args("static", 64, 12) == {"cache_implementation": "static"}
    cb = rollouts.engine_args("cb", 64, 12)
    assert cb["use_transformers_continuous_batching"] is True
    assert cb["transformers_continuous_batching_config"]["max_requests_per_batch"] == 64


def test_cb_cache_holds_every_request_of_the_batch():
    # Too few pages would make the scheduler queue or evict requests, which is not what is being timed.
    cfg = rollouts.cb_config(32, 32, max_prompt_tokens=96)
    per_request = math.ceil((96 + 32) / cfg["page_size"])
    assert cfg["num_blocks"] >= 32 * per_request
    assert cfg["use_async_batching"] is False


def test_table_rows_have_the_table_format_and_known_keys():
    for key, label, target, passes, fmt in rollouts.TABLE_ROWS:
        assert key.startswith("rollout_") and key.rsplit("_", 1)[1] in rollouts.SHAPES
        assert label and isinstance(target, str)
        assert passes is None or passes(1.0) in (True, False)
        fmt.format(1.5)


def test_batch_prompts_repeat_each_prompt_num_generations_times():
    prompts = rollouts.batch_prompts("tiny")
    _, n_prompts, n_gen, _ = rollouts.SHAPES["tiny"]
    assert len(prompts) == n_prompts * n_gen
    assert prompts[0] == prompts[n_gen - 1] != prompts[n_gen]


@pytest.mark.slow
def test_quick_run_measures_every_working_engine_on_tiny():
    result = rollouts.run(quick=True)
    assert not any(k.endswith("_smollm2") for k in result)
    assert result["rollout_tok_s_generate_tiny"] > 0
    for engine in rollouts.ENGINES:
        error = result.get(f"rollout_error_{engine}_tiny")
        if error is None:
            assert result[f"rollout_tok_s_{engine}_tiny"] > 0
            if engine != "generate":
                assert 0.0 <= result[f"rollout_greedy_same_{engine}_tiny"] <= 1.0
                assert result[f"rollout_{engine}_speedup_tiny"] > 0
        else:
            assert f"rollout_tok_s_{engine}_tiny" not in result and error
