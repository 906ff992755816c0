"""The run queue (issue 15 part 4): a launch while the machine is busy waits its turn; the queue survives a
restart, can be reordered and cancelled, and gives each GPU one run."""

import json
import os
import stat
import time

import gradio as gr
import pytest

from finetuner import cli
from finetuner.config import from_dict
from finetuner.demo import arith
from finetuner.planning import step_time
from finetuner.runs import (QUEUE_FILE, QUEUED_TIMEOUT_S, WAITING, RunFolder, advance, cancel, enqueue, list_runs, move, position,
                            queue, refresh_state, wait, waiting)
from finetuner.ui import queue_view, tab_monitor
from finetuner.ui.context import AppContext
from graders.errors import RunError

GRADER = {"name": "exact", "type": "exact_match", "reference": "{{item.answer}}"}


def config(tmp, name, steps=3):
    rows = tmp / "rows.jsonl"
    if not rows.exists():
        rows.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": f"Answer: {r['answer']}",
                                            "answer": r["answer"]}) + "\n" for r in arith.rft_rows(16, seed=3)))
    return from_dict({"name": name, "method": "sft", "model": {"name": "tiny", "max_length": 64},
                      "data": {"train": str(rows)}, "graders": [GRADER],
                      "sft": {"max_steps": steps, "batch_size": 8, "learning_rate": 1e-3, "save_steps": 100}})


@pytest.fixture
def fake(monkeypatch):
    """No child processes: each start is recorded and the run looks alive (this test's own pid)."""
    starts = []

    def start_child(run, cmd, extra_env=None):
        starts.append({"id": run.id, "cmd": cmd, "env": dict(extra_env or {})})
        run.write_status(pid=os.getpid(), pgid=os.getpid())

    monkeypatch.setattr(queue, "start_child", start_child)
    monkeypatch.setattr(queue, "gpu_count", lambda: 0)
    monkeypatch.delenv(queue.SLOTS_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return starts


def finish(runs_dir, run_id):
    RunFolder(runs_dir / run_id).write_status(state="finished", finished=time.time())


def test_the_second_run_waits_then_runs_when_the_first_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(queue, "gpu_count", lambda: 0)  # one CPU slot, whatever this machine has
    runs_dir = tmp_path / "runs"
    first = enqueue(config(tmp_path, "first"), runs_dir)
    second = enqueue(config(tmp_path, "second"), runs_dir, owner="ada")
    status = second.read_status()
    assert first.read_status().get("pid") and status["state"] == WAITING and "pid" not in status
    assert status["owner"] == "ada" and status["name"] == "second" and status["method"] == "sft"
    assert [(w["id"], w["position"]) for w in waiting(runs_dir)] == [(second.id, 1)]
    assert wait(first, timeout=600)["state"] == "finished", first.log_path.read_text()[-2000:]
    # Nobody else advances here: the first run's own process starts the second as it exits.
    deadline = time.time() + 120
    while second.read_status().get("state") == WAITING and time.time() < deadline:
        time.sleep(0.25)
    assert second.read_status().get("state") != WAITING, first.log_path.read_text()[-2000:]
    assert wait(second, timeout=600)["state"] == "finished", second.log_path.read_text()[-2000:]
    assert second.read_status()["device"] == "cpu" and waiting(runs_dir) == []


def test_a_waiting_run_survives_a_restart_and_starts_when_the_slot_frees(tmp_path, fake):
    runs_dir = tmp_path / "runs"
    busy = RunFolder(runs_dir / "busy-1")
    busy.path.mkdir(parents=True)
    busy.write_status(state="running", pid=os.getpid(), created=time.time())  # started outside the queue
    run = enqueue(config(tmp_path, "later"), runs_dir, extra_env={"FINETUNER_FAULT": "none"})
    assert fake == [] and run.read_status()["state"] == WAITING
    assert stat.S_IMODE((run.path / queue.ENV_FILE).stat().st_mode) == 0o600  # may hold keys
    # An old waiting run is not "a start that never came": the queued-timeout rule leaves it alone.
    run.write_status(created=time.time() - 10 * QUEUED_TIMEOUT_S)
    assert refresh_state(run)["state"] == WAITING

    # The app restarts: nothing in memory, only the runs folder.
    assert json.loads((runs_dir / QUEUE_FILE).read_text()) == [run.id]
    ctx = AppContext(runs_dir)
    assert [w["id"] for w in waiting(ctx.runs_dir)] == [run.id] and advance(ctx.runs_dir) == []
    finish(runs_dir, "busy-1")
    assert [r.id for r in advance(ctx.runs_dir)] == [run.id]
    assert fake[0]["id"] == run.id and fake[0]["env"]["FINETUNER_FAULT"] == "none"
    assert fake[0]["cmd"][-4:] == ["train", str(run.config_path), "--run-dir", str(run.path)]
    assert run.read_status()["state"] == "queued" and not (run.path / queue.ENV_FILE).exists()
    assert waiting(runs_dir) == [] and json.loads((runs_dir / QUEUE_FILE).read_text()) == []


def test_cancel_removes_a_waiting_run_and_refuses_a_started_one(tmp_path, fake):
    runs_dir = tmp_path / "runs"
    first = enqueue(config(tmp_path, "a"), runs_dir)
    second = enqueue(config(tmp_path, "b"), runs_dir)
    cancel(runs_dir, second.id)
    assert not second.path.exists() and waiting(runs_dir) == []
    assert [s["id"] for s in list_runs(runs_dir)] == [first.id]
    with pytest.raises(RunError, match="not waiting in the queue any more.*Stop on the Monitor"):
        cancel(runs_dir, first.id)
    assert first.path.exists()


def test_move_reorders_and_the_new_order_starts_first(tmp_path, fake):
    runs_dir = tmp_path / "runs"
    enqueue(config(tmp_path, "busy"), runs_dir)
    a, b, c = (enqueue(config(tmp_path, n), runs_dir) for n in "abc")
    move(runs_dir, c.id, 1)
    assert [w["id"] for w in waiting(runs_dir)] == [c.id, a.id, b.id]
    move(runs_dir, a.id, 99)  # past the end: last
    assert [w["id"] for w in waiting(runs_dir)] == [c.id, b.id, a.id] and position(runs_dir, a.id) == 3
    with pytest.raises(RunError, match="not waiting"):
        move(runs_dir, "busy-never-queued", 1)
    finish(runs_dir, fake[0]["id"])
    assert [r.id for r in advance(runs_dir)] == [c.id]


def test_two_gpus_run_two_at_once_each_on_its_own(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(queue, "gpu_count", lambda: 2)
    runs_dir = tmp_path / "runs"
    runs = [enqueue(config(tmp_path, f"g{i}"), runs_dir) for i in range(3)]
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in fake] == ["0", "1"]
    assert [r.read_status()["device"] for r in runs[:2]] == [0, 1] and runs[2].read_status()["state"] == WAITING
    assert fake[0]["env"][queue.SLOTS_ENV] == "0,1"  # the child advances for every GPU, not only its own
    finish(runs_dir, runs[1].id)
    assert [r.id for r in advance(runs_dir)] == [runs[2].id] and fake[2]["env"]["CUDA_VISIBLE_DEVICES"] == "1"
    # A web process that sees a subset of the GPUs hands its children those physical names.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert queue.device_slots() == ["2", "3"]
    monkeypatch.setenv(queue.SLOTS_ENV, "2,3")
    monkeypatch.setattr(queue, "gpu_count", lambda: 1)  # a child sees only its own GPU
    assert queue.device_slots() == ["2", "3"]


def test_nothing_starts_while_a_step_probe_measures(tmp_path, fake):
    assert queue.PROBES == step_time.PROBES
    runs_dir = tmp_path / "runs"
    probe = RunFolder(runs_dir / queue.PROBES / "probe-1")
    probe.path.mkdir(parents=True)
    probe.write_status(state="running", pid=os.getpid(), created=time.time())
    run = enqueue(config(tmp_path, "after-probe"), runs_dir)
    assert fake == [] and run.read_status()["state"] == WAITING
    assert "after the step measurement `probe-1`" in queue_view.position_text(AppContext(runs_dir), run.id)
    probe.write_status(state="finished")
    assert [r.id for r in advance(runs_dir)] == [run.id]


def test_a_run_that_cannot_start_fails_and_the_next_one_starts(tmp_path, fake, monkeypatch):
    runs_dir = tmp_path / "runs"
    busy = enqueue(config(tmp_path, "busy"), runs_dir)
    broken, fine = enqueue(config(tmp_path, "broken"), runs_dir), enqueue(config(tmp_path, "fine"), runs_dir)
    (broken.path / queue.ENV_FILE).write_text("{not json")
    finish(runs_dir, busy.id)
    assert [r.id for r in advance(runs_dir)] == [fine.id]
    status = broken.read_status()
    assert status["state"] == "failed" and "could not start" in status["error"]


def test_the_queue_panel_lists_moves_and_cancels(tmp_path, fake, monkeypatch):
    ctx = AppContext(tmp_path / "runs")
    busy = enqueue(config(tmp_path, "busy"), ctx.runs_dir)
    a = enqueue(config(tmp_path, "a"), ctx.runs_dir, owner="ada")
    b = enqueue(config(tmp_path, "b"), ctx.runs_dir)
    table, picker, summary = queue_view.refresh(ctx)
    assert [row[:4] for row in table["data"]] == [[1, a.id, "sft", "ada"], [2, b.id, "sft", ""]]
    assert picker["choices"] == [a.id, b.id] and "2 runs waiting" in summary and busy.id in summary
    table, picker, _ = queue_view.step(ctx, b.id, -1)  # Up
    assert [row[1] for row in table["data"]] == [b.id, a.id] and picker["value"] == b.id
    table, _, _ = queue_view.step(ctx, b.id, 1)  # Down
    assert [row[1] for row in table["data"]] == [a.id, b.id]
    said = []
    monkeypatch.setattr(gr, "Info", said.append)
    table, picker, _ = queue_view.cancel_run(ctx, a.id)
    assert [row[1] for row in table["data"]] == [b.id] and not a.path.exists() and a.id in said[0]
    with pytest.raises(RunError, match="Pick a waiting run"):
        queue_view.step(ctx, None, 1)
    msg = queue_view.launch_message(ctx, b)
    assert f"Queued: position 1, after `{busy.id}` (training now)" in msg
    assert queue_view.launch_message(ctx, busy).startswith("✅ Started run")


def test_the_monitor_says_a_waiting_run_is_waiting(tmp_path, fake):
    ctx = AppContext(tmp_path / "runs")
    busy = enqueue(config(tmp_path, "busy"), ctx.runs_dir)
    a, b = enqueue(config(tmp_path, "a"), ctx.runs_dir), enqueue(config(tmp_path, "b"), ctx.runs_dir)
    out = tab_monitor.view(ctx, tab_monitor.MonitorRequest(b.id), force=True)
    assert "Waiting in the queue: position 2" in out["progress"] and busy.id in out["progress"]
    # Only its place changed (the run ahead was cancelled): the next tick still says so.
    cancel(ctx.runs_dir, a.id)
    again = tab_monitor.view(ctx, tab_monitor.MonitorRequest(b.id, seen=out["seen"]))
    assert "Waiting in the queue: position 1" in again["progress"]


def test_the_worker_starts_a_queued_run_without_a_click(tmp_path, fake):
    ctx = AppContext(tmp_path / "runs")
    busy = enqueue(config(tmp_path, "busy"), ctx.runs_dir)
    run = enqueue(config(tmp_path, "next"), ctx.runs_dir)
    finish(ctx.runs_dir, busy.id)
    worker = queue_view.start_worker(ctx, interval=0.05)
    try:
        assert queue_view.start_worker(ctx) is worker  # one per runs folder
        deadline = time.time() + 30
        while run.read_status()["state"] == WAITING and time.time() < deadline:
            time.sleep(0.05)
        assert run.read_status()["state"] == "queued" and [s["id"] for s in fake] == [busy.id, run.id]
    finally:
        queue_view.stop_worker(ctx)
        worker.join(5)
    assert not worker.is_alive()


def test_cli_queue_lists_moves_and_cancels(tmp_path, fake, capsys):
    runs_dir = tmp_path / "runs"
    enqueue(config(tmp_path, "busy"), runs_dir)
    a, b = enqueue(config(tmp_path, "a"), runs_dir), enqueue(config(tmp_path, "b"), runs_dir)
    assert cli.main(["queue", "--runs-dir", str(runs_dir), "--move", b.id, "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["1.", b.id] and lines[1].split()[:2] == ["2.", a.id]
    assert cli.main(["queue", "--runs-dir", str(runs_dir), "--cancel", b.id]) == 0
    assert "Cancelled" in capsys.readouterr().out and not b.path.exists()
    assert cli.main(["queue", "--runs-dir", str(runs_dir), "--move", a.id, "first"]) == 2
    assert "not a position" in capsys.readouterr().err


def test_training_children_yield_the_cpu_to_the_web_server(monkeypatch):
    """Runs the app starts carry FINETUNER_NICE and lower their own priority first thing (cmd_train), so the
    pages answer while a run trains on a shared machine."""
    from finetuner.runs.process import child_env

    monkeypatch.delenv("FINETUNER_NICE", raising=False)
    assert child_env()["FINETUNER_NICE"] == "10"
    niced = []
    monkeypatch.setenv("FINETUNER_NICE", "10")
    monkeypatch.setattr(cli.os, "nice", niced.append)
    monkeypatch.setattr(cli, "_train", lambda args: 0)
    monkeypatch.setattr(cli, "_advance_queue", lambda args: None)
    assert cli.cmd_train(object()) == 0 and niced == [10]


def test_with_a_class_only_a_teacher_reorders_the_queue(tmp_path, fake):
    """A student moving their own run up would put it ahead of everyone else's: refused in words, order kept."""
    from finetuner.ui.context import current_user

    ctx = AppContext(tmp_path / "runs", auth=True, teachers={"mrs.k"})
    enqueue(config(tmp_path, "busy"), ctx.runs_dir, owner="bob")
    a = enqueue(config(tmp_path, "a"), ctx.runs_dir, owner="bob")
    b = enqueue(config(tmp_path, "b"), ctx.runs_dir, owner="ada")
    token = current_user.set("ada")
    try:
        with pytest.raises(RunError, match="Only a teacher account can reorder"):
            queue_view.step(ctx, b.id, -1)
    finally:
        current_user.reset(token)
    assert [w["id"] for w in waiting(ctx.runs_dir)] == [a.id, b.id]
    token = current_user.set("mrs.k")
    try:
        table, _, _ = queue_view.step(ctx, b.id, -1)
    finally:
        current_user.reset(token)
    assert [row[1] for row in table["data"]] == [b.id, a.id]


def test_delete_waits_for_the_queue_lock(tmp_path):
    """Delete of a waiting run cannot slip between the queue's look at it and its start: both hold launch_lock."""
    import threading

    from finetuner.runs import launch_lock
    from finetuner.runs.export import delete_run

    run = RunFolder(tmp_path / "runs" / "w")
    run.path.mkdir(parents=True)
    run.write_status(state=WAITING)
    done = threading.Event()
    with launch_lock(tmp_path / "runs"):
        worker = threading.Thread(target=lambda: (delete_run(run), done.set()))
        worker.start()
        assert not done.wait(0.5) and run.path.exists()  # held back while the lock is held
    worker.join(10)
    assert done.is_set() and not run.path.exists()
