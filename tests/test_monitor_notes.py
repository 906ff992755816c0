"""The Monitor's notes (finetuner/ui/monitor_notes.py) through the tab's `view`: guardrail warnings from
status.json, the zero-signal explanation, the curriculum chart and the review list."""

import json
import os
import time

from finetuner.runs import RunFolder
from finetuner.ui import monitor_notes, tab_monitor
from finetuner.ui.context import AppContext


def _run(root, rows, samples=(), review=(), **status):
    run = RunFolder(root / "r")
    run.path.mkdir(parents=True)
    run.config_path.write_text("name: r\n")
    run.write_status(state="running", pid=os.getpid(), name="r", method="rft", stages=["rft"], stage="rft", step=5,
                     total=10, started=time.time() - 60, created=time.time(), **status)
    for r in rows:
        run.append_metric(r)
    run.append_samples(list(samples))
    if review:
        run.append_jsonl(run.path / "review.jsonl", list(review))
    return run


def _view(tmp_path):
    ctx = AppContext(runs_dir=str(tmp_path))
    return tab_monitor.view(ctx, tab_monitor.MonitorRequest("r"), force=True)


def _group(step, prompt, score, n=4):
    return [{"step": step, "split": "train", "prompt": prompt, "completion": f"c{i}", "scores": {"a": score},
             "total": score, "stage": "rft"} for i in range(n)]


def test_zero_spread_is_explained_with_remedies(tmp_path):
    rows = [{"stage": "rft", "step": s, "run_step": s, "reward": 0.1, "frac_reward_zero_std": 0.85}
            for s in range(1, 7)]
    samples = [r for s in range(1, 7) for r in _group(s, "p1", 0.0) + _group(s, "p2", 0.0) + _group(s, "p3", 1.0)]
    _run(tmp_path, rows, samples)
    out = _view(tmp_path)
    notes = out["notes"]
    assert "in 85% of prompts every completion scored the same" in notes
    assert "rft.curriculum: adarft" in notes and "SFT first" in notes
    assert "10 such groups scored 0 everywhere, 5 got full marks" in notes
    # The short health line saying the same (it fires from 80 %) is not repeated.
    assert "same score" not in out["warnings"]


def test_healthy_run_has_no_notes(tmp_path):
    rows = [{"stage": "rft", "step": s, "run_step": s, "reward": 0.1, "frac_reward_zero_std": 0.1}
            for s in range(1, 7)]
    _run(tmp_path, rows)
    out = _view(tmp_path)
    assert out["notes"] == "" and out["curriculum"]["visible"] is False
    assert "No review list yet" in out["review"]


def test_guardrail_warnings_curriculum_and_review_are_shown(tmp_path):
    warning = {"id": "length_growth", "step": 6, "message": "Completions grew from 10 to 30 tokens.",
               "what_to_do": "Add an `overlong` grader."}
    rows = [{"stage": "rft", "step": s, "run_step": s, "reward": 0.1, "curriculum/target": 10.0 * s,
             "curriculum/difficulty": 9.0 * s, "curriculum/pass_rate": 0.5} for s in range(1, 7)]
    review = [{"eval_step": 3, "step": 3, "source": "eval", "prompt": "old", "completion": "x", "total": 0.1,
               "scores": {"a": 0.1}}]
    review += [{"eval_step": 6, "step": 6, "source": "eval", "prompt": "What is 2+2?", "completion": f"A|{i}",
                "total": 1.0 - i / 10, "scores": {"a": 1.0 - i / 10}} for i in range(5)]
    _run(tmp_path, rows, review=review, warnings=[warning])
    out = _view(tmp_path)
    assert "Completions grew from 10 to 30 tokens." in out["notes"] and "What to do" in out["notes"]
    assert out["curriculum"]["visible"] is True
    names = {t.name for t in out["curriculum"]["value"].data}
    assert {"target difficulty", "batch difficulty", "pass rate"} <= names
    assert "5 highest-scored eval rollouts at step 6" in out["review"]
    assert "A\\|0" in out["review"] and "old" not in out["review"]
    assert monitor_notes.review_rows(tmp_path / "r")[0]["total"] == 1.0
    assert json.loads((tmp_path / "r" / "status.json").read_text())["warnings"][0]["id"] == "length_growth"
