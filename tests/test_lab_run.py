"""Running a Lab (issue 15): the stage time budget and the Monitor's countdown of it, an arm deleted or started
under the Lab's feet, Stop; end to end, the small preset headless through the run queue, and the Lab tab on its
result."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetuner.lab import create_lab, open_lab
from finetuner.lab.arms import STEP_CAP
from finetuner.runs import RunFolder, list_runs
from graders.errors import RunError

from lab_helpers import ROOT, demo_spec


def test_the_time_budget_stops_a_stage(monkeypatch):
    """Steps of 0.3 s on a fake clock: the budget of 1 s is reached at the 4th step, not before; time spent
    between steps (held-out scoring, saving) is not counted."""
    from transformers import TrainerControl, TrainerState

    from finetuner.training import budget

    clock = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    cb, control, state = budget.TimeBudgetCallback(1.0), TrainerControl(), TrainerState()
    steps = 0
    while not control.should_training_stop:
        cb.on_step_begin(None, state, control)
        clock[0] += 0.3  # the step
        cb.on_step_end(None, state, control)
        clock[0] += 5.0  # between steps: not training
        steps += 1
    assert steps == 4 and cb.reached and cb.spent == pytest.approx(1.2)


def test_the_monitor_counts_down_a_time_budget_not_the_step_cap(tmp_path):
    """A stage ended by its clock has max_steps = the cap (100,000): the Monitor says the budget and the time
    left of it, not "step 12/100000, ends in ~30 h"."""
    from finetuner.ui.run_watch import RunWatch, progress, progress_text

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.write_status(state="running", stage="sft", stages=["sft"], step=12, total=STEP_CAP, started=1000.0,
                     budget_s=12.0, budget_started=1000.0)
    watch = RunWatch(run.path)
    watch.status = run.read_status()
    p = progress(watch, now=1004.0)
    assert p["eta"] == pytest.approx(8.0) and "step 12 of a 12 s budget" in progress_text(p)
    assert "100000" not in progress_text(p)


def test_a_deleted_arm_ends_the_lab_as_failed_not_never(tmp_path):
    """An arm whose folder is gone (cancelled in the queue, deleted on the Runs tab) counts as ended: the Lab's
    loop finishes and the results list it as failed instead of raising."""
    import shutil

    from finetuner.lab import runner

    lab = create_lab(demo_spec(sizes=[25], seeds=[0], methods=["sft"]), tmp_path)
    status = lab.read()
    arm = status["arms"][0]
    run = RunFolder(tmp_path / "arm-run")
    run.path.mkdir()
    run.write_status(state="waiting")
    arm["run_id"] = run.id
    lab.write(arms=status["arms"])
    shutil.rmtree(run.path)
    assert runner._arm_state(tmp_path, arm) == "gone" and "gone" in runner.ARM_ENDED
    result = runner.collect(lab, tmp_path, say=lambda line: None)
    assert result["arms"][0]["score"] is None and result["table"]["25"]["sft"]["failed"] == [run.id]


def test_stop_reads_states_again_and_never_raises(tmp_path, monkeypatch):
    """An arm seen `waiting` that started since: cancel refuses, so it is asked to stop instead."""
    from finetuner.lab import runner
    from finetuner.runs import queue

    run = RunFolder(tmp_path / "arm")
    run.path.mkdir()
    run.write_status(state="running", pid=__import__("os").getpid())
    (run.path / "config.yaml").write_text("name: x\n")
    entries = [{"run_id": run.id, "state": "waiting"}, {"run_id": "gone-arm", "state": "waiting"}]
    monkeypatch.setattr(queue, "cancel", lambda *a: (_ for _ in ()).throw(RunError("started")))
    runner._stop(entries, tmp_path)
    assert run.stop_path.exists() and [e["state"] for e in entries] == ["running", "gone"]


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    """`python -m finetuner lab --preset small --json`: three real arms through the queue (about a minute)."""
    runs = tmp_path_factory.mktemp("labruns")
    proc = subprocess.run([sys.executable, "-m", "finetuner", "lab", "--preset", "small", "--runs-dir", str(runs),
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return runs, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_small_lab_runs_every_arm_as_an_ordinary_run(small_lab):
    runs, summary = small_lab
    assert set(summary["arms"]) == {"sft", "rft", "sft+rft"}
    for method, arm in summary["arms"].items():
        assert {"score", "spread", "seconds", "keep_score"} <= set(arm)
        assert 0.0 <= arm["score"] <= 1.0 and arm["seconds"] > 0 and 0.0 <= arm["keep_score"] <= 1.0
    assert summary["arms"]["rft"]["tokens"] > 0 and summary["arms"]["sft"]["tokens"] == 0
    listed = {s["name"]: s for s in list_runs(runs)}
    assert len(listed) == 3 and all(s["state"] == "finished" for s in listed.values())
    lab = open_lab(runs, Path(summary["lab_dir"]).name)
    assert lab.read()["state"] == "finished" and (lab.path / "report.html").stat().st_size > 20000
    # The budget ended each stage by the clock: SFT stopped long before its step cap, and trained.
    sft_run = RunFolder(Path(next(s["path"] for n, s in listed.items() if "-sft-n" in n)))
    losses = [r["loss"] for r in sft_run.metrics() if r.get("loss") is not None]
    assert 3 <= len(losses) < STEP_CAP and losses[-1] < losses[0]


@pytest.mark.slow
def test_the_lab_tab_shows_a_finished_lab_and_keeps_it_from_other_users(small_lab):
    from finetuner.ui import tab_lab
    from finetuner.ui.context import AppContext, current_user

    runs, summary = small_lab
    lab_id = Path(summary["lab_dir"]).name
    ctx = AppContext(runs)
    assert tab_lab.lab_choices(ctx) == [lab_id]
    progress, arms, table, reading, charts, report = tab_lab.show(ctx, lab_id)
    assert "finished" in progress and len(arms) == 3 and set(arms["state"]) == {"finished"}
    table, charts, report = table.value, charts.value, report.value  # component updates, shown now
    assert len(table["data"]) == 3 and "What the numbers say" in reading and len(charts) >= 3
    assert report["orig_name"] == "report.html" and charts[0]["image"]["orig_name"].endswith(".png")
    assert "Stop" not in tab_lab.stop(ctx, lab_id) and "nothing to stop" in tab_lab.stop(ctx, lab_id)
    classroom = AppContext(runs, auth=True, teachers={"teacher"})
    token = current_user.set("bob")  # the Lab has no owner (made by the CLI): a student does not see it
    try:
        assert tab_lab.lab_choices(classroom) == []
        with pytest.raises(RunError, match="another user"):
            tab_lab.show(classroom, lab_id)
    finally:
        current_user.reset(token)
    token = current_user.set("teacher")
    try:
        assert tab_lab.lab_choices(classroom) == [lab_id]
    finally:
        current_user.reset(token)
