"""Issue 10 item 10: step times are measured (an earlier run's metrics, or a probe of a few real steps) or
labelled a guess, and the method advice says when the base model scores ~0 and when `tiny` cannot do the task."""

import os
import time

import pytest

from finetuner.planning import step_time
from finetuner.config import from_dict, save_config
from graders.errors import RunError
from finetuner.planning.memory import detect_memory, resolve_quantization
from finetuner.planning.recommend import model_caveat, own_data, recommend
from finetuner.runs import RunFolder
from finetuner.ui.welcome import EXAMPLE, demo_project

EXACT = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
DEVICE = detect_memory()[0]  # what the Train tab's "this machine" plans for


def rft_cfg(**rft):
    return from_dict({"name": "emails", "method": "rft", "data": {"train": "/data/emails.csv"}, "graders": [EXACT],
                      "rft": {"batch_size": 8, "num_generations": 4, "max_completion_length": 128, **rft}})


def fake_run(runs_dir, run_id, cfg, step_times, stage="rft", device=DEVICE, created=None):
    """A finished run folder as training leaves it: config.yaml, status.json and metrics.jsonl rows."""
    run = RunFolder(runs_dir / run_id)
    run.path.mkdir(parents=True)
    save_config(cfg, run.config_path)
    quant = "4bit" if resolve_quantization(cfg.model.quantization, device) == "4bit" else "fp32"
    run.write_status(state="finished", device=device, quantization=quant, created=created or time.time())
    for i, s in enumerate(step_times, 1):
        run.append_metric({"stage": stage, "step": i, "run_step": i, "time": time.time(), "loss": 0.0,
                           "time/step_s": s})
    run.append_metric({"stage": stage, "step": len(step_times), "run_step": len(step_times), "eval_reward": 0.3})
    return run


# ------------------------------------------------------------------ measured or guessed


def test_an_earlier_comparable_run_gives_its_median_step_time(tmp_path):
    from finetuner.ui.tab_train import estimate_markdown

    cfg = rft_cfg()
    fake_run(tmp_path, "emails-1", cfg, [30.0, 7.9, 8.4, 9.5, 8.1])  # the first step is warm-up: left out
    found = step_time.measured_steps(tmp_path, cfg, DEVICE)
    assert found["rft"].seconds == pytest.approx(8.25) and found["rft"].steps == 4
    text = estimate_markdown({}, cfg, "detected", None, tmp_path)
    assert "**RFT per step (measured):**" in text and "measured on run emails-1: 8.2 s/step" in text
    assert "guess" not in text.split("RFT per step")[1]
    # Without the runs folder the same settings are a guess, and the text says so.
    guessed = estimate_markdown({}, cfg, "detected", None, tmp_path / "elsewhere")
    assert "**RFT per step (rough):**" in guessed and "rough guess, not measured" in guessed


def test_only_similar_settings_on_the_same_device_count(tmp_path):
    cfg = rft_cfg()
    fake_run(tmp_path, "other-groups", rft_cfg(num_generations=8), [9.0, 9.0, 9.0])
    fake_run(tmp_path, "other-device", cfg, [9.0, 9.0, 9.0], device="mps")
    fake_run(tmp_path, "other-model", from_dict({**_spec(cfg), "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}}),
             [9.0, 9.0, 9.0])
    fake_run(tmp_path, "much-longer", rft_cfg(max_completion_length=512), [9.0, 9.0, 9.0])
    fake_run(tmp_path, "sft-only", from_dict({**_spec(cfg), "method": "sft"}), [9.0, 9.0, 9.0], stage="sft")
    assert step_time.measured_steps(tmp_path, cfg, DEVICE) == {}
    close = fake_run(tmp_path, "a-bit-longer", rft_cfg(max_completion_length=150), [5.0, 6.0, 6.0, 6.0])
    found = step_time.measured_steps(tmp_path, cfg, DEVICE)["rft"]
    assert (found.run_id, found.seconds) == (close.id, 6.0)
    assert found.same_data and "other data" not in found.text()


def test_the_newest_comparable_run_wins_and_other_data_is_said(tmp_path):
    cfg = rft_cfg()
    fake_run(tmp_path, "old", cfg, [4.0, 4.0, 4.0], created=1000.0)
    other = from_dict({**_spec(cfg), "data": {"train": "/data/other.csv"}})
    fake_run(tmp_path, "new", other, [7.0, 7.0, 7.0], created=2000.0)
    found = step_time.measured_steps(tmp_path, cfg, DEVICE)["rft"]
    assert found.run_id == "new" and "on other data" in found.text()


def test_probe_config_keeps_the_step_cost_and_drops_everything_else():
    cfg = from_dict({**_spec(rft_cfg()), "method": "sft+rft", "report_to": ["tensorboard"],
                     "rft": {"max_steps": 500, "eval_steps": 10, "batch_size": 8, "num_generations": 4,
                             "max_completion_length": 256}})
    probe = step_time.probe_config(cfg)
    for stage in ("sft", "rft"):
        s = getattr(probe, stage)
        assert s.max_steps == step_time.PROBE_STEPS and s.save_steps > 1000 and s.logging_steps == 1
    assert probe.rft.eval_steps == 0 and probe.report_to == [] and probe.name.startswith("probe-")
    assert (probe.rft.batch_size, probe.rft.num_generations, probe.rft.max_completion_length) == (8, 4, 256)
    assert probe.model.name == cfg.model.name and probe.data.train == cfg.data.train


def test_no_probe_beside_a_training_run(tmp_path):
    busy = RunFolder(tmp_path / "training-now")
    busy.path.mkdir()
    busy.write_status(state="running", pid=os.getpid(), created=time.time())  # this process: alive
    with pytest.raises(RunError, match="measure neither"):
        step_time.start_probe(rft_cfg(), tmp_path)
    assert not (tmp_path / step_time.PROBES).exists()


def _spec(cfg):
    from finetuner.config import to_dict

    return to_dict(cfg)


# ------------------------------------------------------------------ the advice


def test_zero_base_pass_rate_with_labels_says_so_and_recommends_sft_first():
    rec = recommend(True, 30, 1, base_pass_rate=0.0, verifiable=True)
    assert rec.method == "sft+rft" and "SFT first" in rec.reason and "almost never passes" in rec.reason
    assert "0%" in rec.reason
    judge = recommend(True, 5000, 1, base_pass_rate=0.0, verifiable=False)
    assert judge.method == "sft" and "almost never passes" in judge.reason


def test_zero_base_pass_rate_without_labels_says_rft_cannot_learn():
    rec = recommend(False, 30, 1, base_pass_rate=0.0, verifiable=True)
    text = rec.markdown()
    assert text.startswith("⚠️ **RFT cannot learn from all-zero rewards")
    assert "Labelled examples are needed" in rec.warning and any("SFT then RFT" in c for c in rec.caveats)
    assert not recommend(False, 30, 1, base_pass_rate=0.4, verifiable=True).warning


def test_tiny_on_own_data_points_to_a_real_model(tmp_path):
    assert own_data(str(tmp_path / "emails.csv")) and not own_data(str(EXAMPLE / "train.jsonl"))
    note = model_caveat("tiny", True, 0.0)
    assert "`smollm2-135m`" in note and "Qwen2.5-0.5B-Instruct" in note and "0%" in note
    assert model_caveat("tiny", False) == "" and model_caveat("Qwen/Qwen2.5-0.5B-Instruct", True) == ""


def test_train_tab_advice_for_the_first_hour_case(tmp_path):
    """The issue's case: 30 labelled rows of the user's own emails, tiny, base samples scoring 0."""
    from finetuner.ui.tab_train import recommendation_markdown, use_recommended

    csv = tmp_path / "emails.csv"
    csv.write_text("prompt,answer\nhi,billing\n")
    project = {"data": {"path": str(csv), "rows": 30, "has_labels": True, "ok": True}, "graders": [EXACT],
               "dry_run": {"source": "base", "mean": 0.0, "range": [0, 1]},
               "config": {"model": {"name": "tiny"}, "data": {"train": str(csv)}}}
    text = recommendation_markdown(project, "rft")
    assert text.startswith("⚠️ **The built-in `tiny` model knows only sums (the demo): on your data it writes noise")
    assert "Recommended: SFT then RFT" in text and "almost never passes" in text and "You chose RFT" in text
    assert use_recommended(project)["value"] == "sft+rft"
    # A real model picked in the form (not yet stored in the project) drops the tiny warning.
    real = recommendation_markdown(project, "sft+rft", "Qwen/Qwen2.5-0.5B-Instruct")
    assert "tiny" not in real and "Recommended: SFT then RFT" in real
    # The demo's own data on tiny is what tiny was made for: no warning.
    demo = {**project, "data": {**project["data"], "path": str(EXAMPLE / "train.jsonl")}, "dry_run": None}
    assert "tiny" not in recommendation_markdown(demo, "sft+rft")


# ------------------------------------------------------------------ a real probe


@pytest.mark.slow  # launches `python -m finetuner train` on the built-in model: 3 SFT + 3 RFT steps
def test_measure_a_step_runs_a_real_probe_and_the_estimate_then_quotes_it(tmp_path):
    from finetuner.ui import tab_data, tab_train
    from finetuner.ui.context import AppContext

    ctx = AppContext(tmp_path / "runs")
    project = tab_data.from_project(demo_project())[0]
    vals = [*tab_train.form_values(project), "detected", None]
    before = tab_train.preview(ctx, project, *vals)[1]
    assert "**RFT per step (rough):**" in before and "SFT per step:** not measured" in before
    message = tab_train.measure_step(ctx, project, *vals)
    assert message.startswith("✅ Measured"), message
    assert "**SFT**" in message and "**RFT**" in message
    probes = [p for p in (ctx.runs_dir / step_time.PROBES).iterdir() if p.is_dir()]
    assert len(probes) == 1
    probe = RunFolder(probes[0])
    assert probe.read_status()["state"] == "finished"  # the run folder contract, kept
    rows = [r for r in probe.metrics() if "time/step_s" in r]
    assert {r["stage"] for r in rows} == {"sft", "rft"} and max(r["step"] for r in rows) == step_time.PROBE_STEPS
    assert not probe.adapter.exists()  # a three-step adapter is not worth the disk
    after = tab_train.preview(ctx, project, *vals)[1]
    assert f"measured by a probe ({probe.id})" in after and "**RFT per step (measured):**" in after
    assert "**SFT per step (measured):**" in after
    assert not [p for p in ctx.runs_dir.iterdir() if (p / "status.json").exists()]  # the Runs tab lists none


def test_tiny_scoring_on_own_data_gets_no_noise_warning():
    """Sums in a file of the user's own: tiny does score there, so saying it "writes noise" would be false."""
    assert model_caveat("tiny", True, 0.4) == ""
    untested = model_caveat("tiny", True, None)
    assert "Test your graders on base-model samples" in untested and "0%" not in untested


def test_base_pass_rate_without_a_declared_range_uses_the_weights():
    """A Python grader declares no range, so the dry run has none; 1.248 of a possible 3 is 42 %, not 100 %."""
    from finetuner.planning.recommend import base_pass_rate

    dry = {"source": "base", "mean": 1.248, "range": None,
           "graders": {"correct": {"weight": 1, "mean": 0.0}, "partial": {"weight": 1, "mean": 0.698},
                       "judge": {"weight": 1, "mean": 0.55}}}
    assert abs(base_pass_rate(dry) - 1.248 / 3) < 1e-9
    assert base_pass_rate({**dry, "range": [0.0, 2.0]}) == 1.248 / 2
