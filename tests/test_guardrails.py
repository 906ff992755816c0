"""Reward-hacking guardrails (finetuner/training/guardrails.py): each check fires on a scripted history and
stays quiet on a healthy one; the callback writes status.json warnings and review.jsonl; the overlong grader."""

import json
from types import SimpleNamespace

import pytest

from finetuner.runs import RunFolder
from finetuner.training import guardrails as g
from graders import build_graders


def row(step, **values):
    return {"stage": "rft", "step": step, "run_step": step, **values}


def healthy(n=30):
    return [row(s, reward=0.3 + 0.01 * s, **{"completions/mean_length": 20.0 + 0.1 * (s % 3),
                                            "rewards/a/mean": 0.5 + 0.005 * s, "rewards/b/mean": 0.4})
            for s in range(1, n + 1)]


GRADERS = [{"name": "a", "type": "regex"}, {"name": "b", "type": "string_check"}]


def test_healthy_history_is_quiet():
    hist = healthy() + [row(10, eval_reward=0.3), row(20, eval_reward=0.35), row(30, eval_reward=0.4)]
    assert g.run_checks(hist, [], GRADERS) == []


def test_length_growing_faster_than_reward_fires():
    hist = [row(s, reward=0.50 + 0.001 * s, **{"completions/mean_length": 10.0 + 1.5 * s}) for s in range(1, 21)]
    (w,) = g.check_length(hist)
    assert w["id"] == "length_growth" and w["step"] == 20 and "tokens" in w["message"] and w["what_to_do"]
    # The same growth with reward growing alongside: the length earned it.
    assert g.check_length([{**r, "reward": 0.1 * r["step"]} for r in hist]) == []
    # Too few logged steps, or a tiny absolute change (3 -> 5 tokens is +66 %): quiet.
    assert g.check_length(hist[:9]) == []
    small = [row(s, reward=0.5, **{"completions/mean_length": 3.0 if s <= 10 else 5.0}) for s in range(1, 21)]
    assert g.check_length(small) == []


def test_train_up_eval_down_fires_for_eval_and_heldout():
    hist = [row(s, reward=0.2 + 0.02 * s) for s in range(1, 31)]
    hist += [row(10, eval_reward=0.6), row(20, eval_reward=0.5), row(30, eval_reward=0.3)]
    hist += [row(10, **{"heldout/reward": 0.5}), row(20, **{"heldout/reward": 0.55}),
             row(30, **{"heldout/reward": 0.2})]
    found = {w["id"]: w for w in g.check_eval(hist)}
    assert set(found) == {"eval_divergence", "heldout_divergence"}
    assert "0.600" in found["eval_divergence"]["message"] and "step 10" in found["eval_divergence"]["what_to_do"]
    # Two evals are not a trend.
    assert g.check_eval(hist[:30] + hist[30:32]) == []


def test_saturated_grader_while_another_falls():
    hist = [row(s, **{"rewards/a/mean": min(1.0, 0.7 + 0.05 * s), "rewards/b/mean": 0.6 - 0.02 * s})
            for s in range(1, 21)]
    (w,) = g.check_saturation(hist, GRADERS)
    assert w["id"] == "grader_saturated:a" and "`b` fell" in w["message"]
    # Saturated but nothing falls: fine. A score_model's max comes from its range.
    steady = [{**r, "rewards/b/mean": 0.4} for r in hist]
    assert g.check_saturation(steady, GRADERS) == []
    judge = [{"name": "a", "type": "score_model", "range": [0, 10]}, GRADERS[1]]
    assert g.check_saturation(hist, judge) == []  # 1.0 of 10 is not saturated


def test_judge_rising_on_rule_failures():
    specs = [{"name": "j", "type": "score_model", "range": [0, 1]}, {"name": "exact", "type": "string_check"}]
    samples = [{"step": s, "split": "train", "scores": {"exact": 0.0, "j": 0.1 + 0.08 * s}, "total": 0}
               for s in range(1, 9) for _ in range(8)]
    (w,) = g.check_judge(samples, specs)
    assert w["id"] == "judge_rising:j" and "`exact`" in w["message"]
    # When the rule-based grader passes those completions, the judge rising is fine.
    passing = [{**r, "scores": {**r["scores"], "exact": 1.0}} for r in samples]
    assert g.check_judge(passing, specs) == []
    assert g.check_judge(samples, GRADERS) == []  # no judge


def _args(tmp_path):
    return SimpleNamespace(output_dir=str(tmp_path / "checkpoints" / "rft"))


def test_callback_writes_warnings_review_and_stops(tmp_path):
    run = RunFolder(tmp_path)
    hist = [row(s, reward=0.5, **{"completions/mean_length": 10.0 + 2 * s}) for s in range(1, 21)]
    for r in hist:
        run.append_metric(r)
    run.append_samples([{"step": 20, "split": "eval", "prompt": f"p{i}", "completion": "x" * i, "total": i / 10,
                         "scores": {"a": i / 10}, "stage": "rft"} for i in range(8)])
    run.append_metric(row(20, eval_reward=0.4))
    cb = g.GuardrailCallback(run, GRADERS, stop=True, keep_best=2)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    cb.on_log(_args(tmp_path), None, control)
    (w,) = run.read_status()["warnings"]
    assert w["id"] == "length_growth" and control.should_training_stop
    assert "guardrail" in cb.stop_reason and "checkpoint-20" in cb.stop_reason and str(run.adapter) in cb.stop_reason
    review = [json.loads(line) for line in (tmp_path / "review.jsonl").read_text().splitlines()]
    assert [r["total"] for r in review] == [0.7, 0.6, 0.5, 0.4, 0.3] and review[0]["completion"] == "x" * 7
    # A second log with nothing new keeps one warning per id and writes no second review.
    cb.on_log(_args(tmp_path), None, control)
    assert len(run.read_status()["warnings"]) == 1
    assert len((tmp_path / "review.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("words,score", [(5, 0.0), (6, 0.0), (8, -0.5), (10, -1.0), (12, -1.0)])
def test_overlong_grader_soft_punishment(words, score):
    # max 10, cache 4: free up to 6, linear to -1 at 10, -1 beyond (DAPO / TRL's formula).
    (grader,) = build_graders([{"name": "o", "type": "overlong", "max_tokens": 10, "cache_tokens": 4}])
    (result,) = grader.grade_batch([" ".join(["w"] * words)], [{}])
    assert result.ok and result.score == pytest.approx(score)


def test_overlong_counts_model_tokens_and_checks_fields():
    from graders.errors import ConfigError
    from finetuner.modeling.tiny import tiny_path

    (grader,) = build_graders([{"name": "o", "type": "overlong", "max_tokens": 4, "cache_tokens": 2,
                                "tokenizer": str(tiny_path())}])
    text = "a much longer completion than four tokens"
    (result,) = grader.grade_batch([text], [{}])
    assert result.ok and result.score == -1.0 and "tokens" in result.log
    with pytest.raises(ConfigError, match="cache_tokens"):
        build_graders([{"name": "o", "type": "overlong", "max_tokens": 4, "cache_tokens": 9}])


# ------------------------------------------------------------------ end to end, a real RFT run on `tiny`

LONGER = {"name": "longer", "type": "python",  # a length bonus on a flat base: the shape of length hacking
          "source": "def grade(sample, item):\n    return 0.5 + 0.001 * len(sample['output_text'])\n"}


def _real_run(tmp_path):
    from finetuner.config import from_dict
    from finetuner.demo import arith
    from finetuner.training.stages import train_run

    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in arith.rft_rows(32, seed=5)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = from_dict({"name": "t", "method": "rft", "model": {"name": "tiny", "max_length": 64},
                     "data": {"train": str(tmp_path / "p.jsonl")}, "graders": [LONGER],
                     "rft": {"max_steps": 14, "batch_size": 16, "num_generations": 4, "max_completion_length": 24,
                             "learning_rate": 1e-2, "save_steps": 100, "guardrail_stop": True,
                             "algorithm": "dapo"}})  # what the numbers above were measured with
    run = RunFolder(tmp_path / "run")
    return run, train_run(cfg, run)


@pytest.mark.slow
def test_real_length_hacking_run_warns_and_stops(tmp_path):
    """A real RFT run on the built-in model whose grader pays for length: at a high learning rate the model
    learns to fill max_completion_length within a few steps while the reward barely moves, and the length
    check fires with its ordinary thresholds (measured: 11 -> 24 tokens, reward 0.510 -> 0.523, at step 10);
    with rft.guardrail_stop the run ends there, stopped, adapter saved."""
    run, status = _real_run(tmp_path)
    assert status["state"] == "stopped", status.get("error")
    assert "reward-hacking guardrail" in status["error"] and "rft.eval_steps" in status["error"]
    (w,) = run.read_status()["warnings"]
    assert w["id"] == "length_growth" and "tokens" in w["message"] and w["what_to_do"]
    assert run.read_status()["step"] < 14 and (run.adapter / "adapter_config.json").exists()
