"""`python -m finetuner bench`: the step-time arithmetic on crafted rows, the section choice, and (slow) a real
`bench --quick --out` whose headline figures must agree with the raw times the same JSON holds. No assert is
on speed."""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks import train as bench_train
from graders.errors import FinetunerError

ROOT = Path(__file__).resolve().parent.parent


def rows(stage, gaps, start=100.0, **extra):
    """Logged steps of one stage whose stamps are `gaps` apart, plus the trainer's closing summary row."""
    out, t = [], start
    for step in range(1, len(gaps) + 2):
        out.append({"stage": stage, "step": step, "time": t, **extra})
        if step <= len(gaps):
            t += gaps[step - 1]
    out.append({"stage": stage, "step": len(gaps) + 1, "time": t + 5, "train_runtime": 9.0})
    return out


def test_speed_skips_the_warm_up_and_resists_a_pause():
    warm = bench_train.WARMUP["sft"]
    # Slow first steps (loading, first calls), then 0.1 s steps with one 3 s pause from another process.
    gaps = [2.0] * warm + [0.1] * 10 + [3.0] + [0.1] * 10
    s = bench_train.speed(rows("sft", gaps), "sft")
    assert s["steps"] == 21 and s["gaps"] == pytest.approx([0.1] * 10 + [3.0] + [0.1] * 10)
    assert s["steps_per_s"] == pytest.approx(10.0)  # the median step ignores the pause
    with pytest.raises(bench_train.BenchError, match="too few to time"):
        bench_train.speed(rows("rft", [0.1] * bench_train.WARMUP["rft"]), "rft")


def test_anatomy_splits_the_rft_step_from_the_engine_rows():
    extra = {"time/step_s": 0.2, "time/generation_s": 0.1, "time/grading_s": 0.01, "time/training_s": 0.09}
    a = bench_train.anatomy(rows("rft", [0.2] * 8, **extra) + rows("sft", [0.1] * 8))
    assert a["generation"] == pytest.approx(0.5) and a["grading"] == pytest.approx(0.05)
    assert a["training"] == pytest.approx(0.45) and a["step_s"] == pytest.approx(0.2)
    warm = bench_train.WARMUP["rft"]
    assert len(a["steps"]) == 9 - warm - 1  # the steps after the warm-up, each with its wall-clock gap
    assert a["steps"][0] == pytest.approx({"step_s": 0.2, "gap_s": 0.2, "generation_s": 0.1, "grading_s": 0.01,
                                          "training_s": 0.09})


def test_bench_config_matches_what_the_plain_script_reads():
    from finetuner.config import from_dict

    cfg = from_dict(bench_train.bench_config(7, 5))
    assert (cfg.method, cfg.sft.max_steps, cfg.rft.max_steps, cfg.data.eval_fraction) == ("sft+rft", 7, 5, 0.0)
    assert [g["type"] for g in cfg.graders] == ["python"]
    # `custom`: the engine passes TRL's defaults plus loss_type, what plain_trl.py sets, not a preset's fields
    assert cfg.rft.algorithm == "custom" and cfg.rft.loss_type == "dapo"
    # The plain reward function and the sandboxed grader agree on every kind of answer.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import plain_trl
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from graders import build_graders

    [grader] = build_graders(cfg.graders)
    try:
        texts = ["Answer: 12", " Answer: 12\n", "Answer: 13", "Answer: -4", "Answer: twelve", "12", ""]
        mine = [grader.grade({"output_text": t}, {"answer": "12"}).score for t in texts]
    finally:
        grader.close()
    plain = plain_trl.reward([[{"role": "assistant", "content": t}] for t in texts], ["12"] * len(texts))
    assert mine == plain == [1.0, 1.0, 0.1, 0.1, 0.0, 0.0, 0.0]


def test_only_names_sections_and_refuses_unknown_ones():
    assert bench.parse_only(None) == ["train", "graders", "ui"]  # the long rollouts and rl only when named
    assert bench.parse_only("rl,rollouts") == ["rl", "rollouts"]
    assert bench.parse_only("ui, graders") == ["ui", "graders"]
    with pytest.raises(FinetunerError, match="Choose from train, graders, ui"):
        bench.parse_only("train,gpu")


@pytest.mark.slow
def test_quick_bench_figures_agree_with_the_raw_times_it_wrote(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-m", "finetuner", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "engine / plain TRL" in proc.stdout  # the table
    result = json.loads(out.read_text())
    positive = ("train_ratio_sft", "train_ratio_rft", "python_grades_per_s", "judge_speedup", "ui_refresh_ms_100k",
                "app_start_s", "ui_refresh_first_ms_100k", "launch_to_first_point_s", "engine_sft_steps_per_s",
                "plain_sft_steps_per_s", "engine_rft_steps_per_s", "plain_rft_steps_per_s", "sandbox_cpu_stop_s",
                "sandbox_c_kill_s")
    for key in positive:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, key
    assert not any("fast" in k or "implied" in k or k.endswith("_mean") for k in result)  # one ratio only
    train = result["details"]["train_cpu"]
    for stage in ("sft", "rft"):
        # The headline ratio, recomputed from the raw step times: per pair engine / plain (1 / median step).
        runs = {side: [statistics.median(r[stage]["gaps"]) for r in train["runs"][side]] for side in train["runs"]}
        ratios = [plain / engine for engine, plain in zip(runs["engine"], runs["plain"])]
        assert result[f"train_ratio_{stage}"] == pytest.approx(statistics.median(ratios)), stage
        assert result[f"engine_{stage}_steps_per_s"] == pytest.approx(statistics.median(1 / g for g in runs["engine"]))
        share = train["overhead"][f"{stage}_ms"] / 1000 * result[f"plain_{stage}_steps_per_s"]
        assert result[f"engine_overhead_share_{stage}"] == pytest.approx(share), stage
    assert result["engine_overhead_ms_rft"] > result["engine_overhead_ms_sft"] > 0  # RFT adds the grader pool
    # The RFT split against the wall clock: generation + grading + training make up each logged step time, and
    # that step time (timed inside the step) is no longer than the gap between two logged steps, nor far shorter.
    steps = train["anatomy"]["steps"]
    assert steps and all(s["step_s"] > 0 for s in steps)
    for s in steps:
        assert s["generation_s"] + s["grading_s"] + s["training_s"] == pytest.approx(s["step_s"], abs=1e-3), s
    step, gap = statistics.median(s["step_s"] for s in steps), statistics.median(s["gap_s"] for s in steps)
    assert 0.6 * gap <= step <= 1.05 * gap, (step, gap)
    assert result["rft_generation_share"] > 0 and result["rft_training_share"] > 0
    graders = result["details"]["graders"]  # the speed-up is the two timings the same run wrote
    assert result["judge_speedup"] == pytest.approx(graders["judge_sequential_s"] / graders["judge_concurrent_s"],
                                                    rel=0.01)
    assert result["machine"]["cpu_count"] >= 1 and "cpu" in result["devices"]
