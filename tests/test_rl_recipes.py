"""rft.algorithm presets reach TRL's GRPOConfig; AdaRFT's curriculum follows its rule in a real run and
resumes; the dry run's advice before launch."""

import json
import math

import pytest

from finetuner.config import from_dict
from finetuner.runs import RunFolder
from finetuner.training import algorithms
from finetuner.training.curriculum import AdaRFT, CurriculumSampler, rescale
from graders.errors import ConfigError

GRADERS = [{"name": "correct", "type": "string_check", "input": "{{sample.output_text}}",
            "reference": "Answer: {{item.answer}}", "operation": "eq"},
           {"name": "format", "type": "regex", "pattern": "^Answer: -?\\d+$", "mode": "fullmatch", "weight": 0.1}]


def cfg_for(tmp_path, **rft):
    return from_dict({"name": "t", "method": "rft", "model": {"name": "tiny", "max_length": 64},
                      "data": {"train": str(tmp_path / "p.jsonl")}, "graders": GRADERS,
                      "rft": {"max_steps": 2, "batch_size": 8, "num_generations": 4, **rft}})


def grpo_config(cfg, tmp_path):
    """The GRPOConfig the engine builds for `cfg` (TRL's own object, so its validation runs too)."""
    from trl import GRPOConfig

    from finetuner.training.stages import _grpo_args

    return GRPOConfig(**_grpo_args(cfg, RunFolder(tmp_path / "run"), "cpu", [1.0, 0.1], False))


@pytest.fixture
def data(tmp_path):
    from finetuner.demo import arith

    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in arith.rft_rows(64, seed=3)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.mark.parametrize("preset, want", [
    ("grpo", {"loss_type": "grpo", "scale_rewards": "group", "importance_sampling_level": "token"}),
    ("dr_grpo", {"loss_type": "dr_grpo", "scale_rewards": "none", "importance_sampling_level": "token"}),
    ("dapo", {"loss_type": "dapo", "epsilon_high": 0.28, "mask_truncated_completions": True}),
    ("gspo", {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4}),
])
def test_each_preset_sets_its_papers_fields_in_trls_config(data, preset, want):
    args = grpo_config(cfg_for(data, algorithm=preset), data)
    assert {k: getattr(args, k) for k in want} == want


def test_custom_leaves_trls_defaults_and_a_field_set_by_hand_wins_over_the_preset(data):
    from trl import GRPOConfig

    plain = GRPOConfig(output_dir=str(data / "x"), use_cpu=True, bf16=False)
    custom = grpo_config(cfg_for(data, algorithm="custom"), data)
    for name in ("loss_type", "scale_rewards", "importance_sampling_level", "epsilon", "epsilon_high",
                 "mask_truncated_completions", "multi_objective_aggregation"):
        assert getattr(custom, name) == getattr(plain, name), name
    mixed = grpo_config(cfg_for(data, algorithm="dapo", importance_sampling_level="sequence",
                                mask_truncated_completions="off", reward_aggregation="normalize_then_sum",
                                top_entropy_quantile=0.2), data)
    assert (mixed.loss_type, mixed.epsilon_high) == ("dapo", 0.28)  # the rest of the preset stays
    assert mixed.importance_sampling_level == "sequence" and mixed.mask_truncated_completions is False
    assert mixed.multi_objective_aggregation == "normalize_then_sum" and mixed.top_entropy_quantile == 0.2
    assert "set by hand: importance_sampling_level=sequence" in algorithms.describe(
        cfg_for(data, algorithm="dapo", importance_sampling_level="sequence").rft)


def test_unknown_algorithm_is_refused_with_the_choices(data):
    with pytest.raises(ConfigError, match="dr_grpo"):
        cfg_for(data, algorithm="ppo")


# ------------------------------------------------------------------ AdaRFT


def test_target_follows_the_update_rule_and_is_clipped():
    c = AdaRFT([0, 50, 100], 1, start=0.0)
    assert c.update(1.0) == pytest.approx(50 * math.tanh(2 * 0.5))  # all right: harder, by eta * tanh(alpha/2)
    assert c.update(0.5) == pytest.approx(50 * math.tanh(1.0))  # at beta: stays
    c.update(0.0)
    c.update(0.0)
    assert c.target == 0.0  # clipped at d_min
    for _ in range(5):
        c.update(1.0)
    assert c.target == 100.0  # and at d_max


def test_batch_takes_the_prompts_closest_to_the_target_in_trls_layout():
    c = AdaRFT([90, 10, 40, 55, 0, 45], 2, start=50.0)
    assert sorted(c.next_batch()) == [3, 5]  # 55 and 45 are 5 away
    sampler = CurriculumSampler(c, num_generations=3, repeat_count=2, batches_per_epoch=1)
    got = list(sampler)
    first = got[:6]
    assert len(got) == len(sampler) == 12 and got[6:] == first  # the block repeated for reuse
    assert first[0] == first[1] == first[2] and first[3] == first[4] == first[5]  # whole groups
    assert {first[0], first[3]} == {3, 5}


def test_difficulty_column_is_rescaled_and_a_flat_or_text_column_refused():
    assert rescale([3, 1, 2], "level") == [100.0, 0.0, 50.0]
    with pytest.raises(ConfigError, match="easier and harder"):
        rescale([2, 2], "level")
    with pytest.raises(ConfigError, match="number per row"):
        rescale([1, "hard"], "level")


def _rft_rows(run):
    return [r for r in run.metrics() if r.get("stage") == "rft" and "curriculum/target" in r]


# Passes about half the time whatever the model writes, so the target moves in both directions.
ODD = [{"name": "odd", "type": "python",
        "source": "def grade(sample, item):\n    return float(len(sample['output_text']) % 2)\n"}]


@pytest.mark.slow
def test_real_run_batches_follow_the_rule_and_a_resume_keeps_the_target(data, caplog):
    """The built-in model, RFT with the curriculum on a difficulty column: every logged step's next target is
    the rule applied to that step's pass rate, each batch is the nearest prompts to the target the loader had
    (one step behind: it reads a batch ahead), each checkpoint keeps the target, and a resume starts from it."""
    import shutil

    from finetuner.training.stages import train_run

    rows = [json.loads(line) for line in (data / "p.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["level"] = i % 5  # five levels -> difficulty 0, 25, 50, 75, 100
    (data / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = dict(max_steps=6, curriculum="adarft", difficulty="column", difficulty_column="level",
                    learning_rate=2e-4, save_steps=3, logging_steps=1, curriculum_eta=30.0, curriculum_start=50.0)
    cfg = cfg_for(data, **settings)
    cfg.graders = ODD
    run = RunFolder(data / "run")
    assert train_run(cfg, run)["state"] == "finished"
    steps = _rft_rows(run)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    levels = [25.0 * (i % 5) for i in range(len(rows))]
    for prev, r in zip(steps, steps[1:]):
        rule = min(100, max(0, r["curriculum/target"] + 30 * math.tanh(2 * (r["curriculum/pass_rate"] - 0.5))))
        assert r["curriculum/next_target"] == pytest.approx(rule, abs=1e-4)  # metrics pass through float32
        assert r["curriculum/target"] == pytest.approx(prev["curriculum/next_target"], abs=1e-4)  # metrics pass through float32
        # the batch (2 prompts) the loader drew with the previous step's target: the 2 nearest levels' mean
        nearest = sorted(levels, key=lambda d: abs(d - prev["curriculum/target"]))[:2]
        assert r["curriculum/difficulty"] == pytest.approx(sum(nearest) / 2)
    saved = json.loads((run.checkpoints / "rft" / "checkpoint-3" / "curriculum.json").read_text())
    assert saved == {"target": pytest.approx(steps[2]["curriculum/next_target"], abs=1e-4), "steps": 3}
    assert saved["target"] != 50.0  # it moved, so restoring it is visible

    # Leave the folder as a crash after step 3 would, and resume.
    shutil.rmtree(run.checkpoints / "rft" / "checkpoint-6")
    run.write_status(state="failed", stages_done=[], stage_steps={})
    run.metrics_path.write_text("")
    caplog.set_level("INFO")
    assert train_run(cfg, run, resume=True)["state"] == "finished"
    after = _rft_rows(run)
    assert after[0]["step"] == 4 and after[0]["curriculum/target"] == pytest.approx(saved["target"], abs=1e-4)  # metrics pass through float32
    assert "Curriculum resumed at target difficulty" in caplog.text


@pytest.mark.slow
def test_measured_difficulty_comes_from_the_models_own_samples(data, caplog):
    """`difficulty: measured` samples the model as RFT starts, keeps 100 x (1 - pass rate) per prompt, and the
    curriculum draws from the measured prompts only."""
    from finetuner.training.stages import train_run

    cfg = cfg_for(data, max_steps=1, curriculum="adarft", curriculum_rows=16, curriculum_samples=2)
    run = RunFolder(data / "run")
    caplog.set_level("INFO")
    assert train_run(cfg, run)["state"] == "finished"
    saved = json.loads((run.path / "curriculum_difficulty.json").read_text())
    assert len(saved["difficulty"]) == 16 and set(saved["difficulty"]) <= {0.0, 50.0, 100.0}
    assert saved["pass_rate"] == pytest.approx(1 - sum(saved["difficulty"]) / 1600)
    assert "rft: 16 training rows" in caplog.text and "measured the difficulty of 16 prompts" in caplog.text


# ------------------------------------------------------------------ advice before launch


@pytest.mark.parametrize("texts, words", [
    (["Answer: 5"] * 4, "little to learn"),
    (["no idea"] * 4, "SFT first"),
    (["Answer: 5", "Answer: 4", "Answer: 5", "x"], "learning signal"),
])
def test_dry_run_on_model_samples_advises_with_the_numbers(texts, words):
    from graders import build_graders
    from graders.dryrun import dry_run

    report = dry_run(build_graders(GRADERS), [{"answer": "5"}] * 3, samples=[texts] * 3)
    summary = report.summary_json()
    assert words in summary["advice"] and "of 12 samples" in summary["advice"]
    assert summary["pass_rate"] == pytest.approx(sum(t == "Answer: 5" for t in texts) / 4)
    assert "ADVICE:" in report.text()


def test_reference_answers_from_a_column_give_no_advice():
    from graders import build_graders
    from graders.dryrun import dry_run

    report = dry_run(build_graders(GRADERS), [{"answer": "5", "completion": "Answer: 5"}], sample_column="completion")
    assert report.summary_json()["advice"] == "" and report.summary_json()["pass_rate"] is None


def test_rl_bench_summary_counts_steps_to_the_threshold_from_held_out_scores():
    from benchmarks import rl

    rows = [{"stage": "rft", "step": s, "heldout/correct": acc} for s, acc in ((0, 0.70), (10, 0.72), (20, 0.76),
                                                                                 (30, 0.74))]
    rows += [{"stage": "rft", "step": s, "frac_reward_zero_std": z} for s, z in ((1, 0.0), (2, 0.5))]
    one = rl.summarise(rows, None, 30, 12.0)
    assert (one["start"], one["final"], one["best"]) == (0.70, 0.74, 0.76)
    assert one["steps_to_threshold"] == 20 and one["reached"] and one["zero_signal"] == 0.25
    never = rl.summarise(rows, 0.75, 30, 12.0)  # from a shared start of 0.75: 0.80 is never reached
    assert not never["reached"] and never["steps_to_threshold"] == 30 + rl.EVAL_EVERY
    table = rl.markdown({"steps": 30, "seeds": [0], "start_accuracy": 0.70, "threshold": 0.75,
                         "arms": {"dapo": rl._aggregate([one])}})
    assert "| dapo | 0.740 (0.740-0.740) | 20 (1/1) | 25.0% | 12 |" in table


@pytest.mark.slow
def test_a_real_zero_spread_run_is_explained_on_the_monitor(data):
    """RFT straight on the built-in model, which never writes the "Answer: N" format: every group scores 0
    everywhere, and the Monitor says so in plain words with the remedies."""
    from finetuner.training.stages import train_run
    from finetuner.ui import tab_monitor
    from finetuner.ui.context import AppContext

    run = RunFolder(data / "runs" / "zero")
    assert train_run(cfg_for(data, max_steps=6, logging_steps=1), run)["state"] == "finished"
    assert all(r["frac_reward_zero_std"] == 1.0 for r in run.metrics() if "frac_reward_zero_std" in r)
    out = tab_monitor.view(AppContext(runs_dir=str(data / "runs")), tab_monitor.MonitorRequest("zero"), force=True)
    assert "in 100% of prompts every completion scored the same" in out["notes"]
    assert "scored 0 everywhere" in out["notes"] and "SFT first" in out["notes"]


def test_difficulty_source_is_checked_before_any_weights_load(data):
    from types import SimpleNamespace

    import datasets

    from finetuner.training.curriculum import source

    rows = SimpleNamespace(train=datasets.Dataset.from_dict({"prompt": ["a", "b"], "level": [1, 1]}))
    assert source(cfg_for(data, curriculum="adarft"), rows) == ("measured", None)  # auto, no `difficulty` column
    with pytest.raises(ConfigError, match="no column `difficulty`"):
        source(cfg_for(data, curriculum="adarft", difficulty="column"), rows)
    with pytest.raises(ConfigError, match="easier and harder"):
        source(cfg_for(data, curriculum="adarft", difficulty_column="level"), rows)  # auto finds it: flat


def test_overlong_penalty_counts_as_a_penalty_in_the_pass_share():
    from graders import build_graders
    from graders.dryrun import dry_run

    graders = build_graders([GRADERS[0], {"name": "long", "type": "overlong", "max_tokens": 4, "cache_tokens": 2}])
    report = dry_run(graders, [{"answer": "5"}], samples=[["Answer: 5", "Answer: 5 and five more words"]])
    assert report.range == (-1.0, 1.0)
    # right and short: the top of the span [-1, 1], a pass; padded: not the answer and penalised, -1, a fail
    assert report.pass_rate == 0.5
