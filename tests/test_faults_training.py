"""Training faults, injected into real training processes (runs.launch on the built-in model, a few steps):
simulated OOM, a crash, a full disk (metrics write and mid-checkpoint), `kill -9`, the app restarting
mid-run, Stop pressed during generation, two launches at once, and torn files. Every run must end in a
truthful state with its reason, keep a usable last checkpoint, and never break a reader.

The child processes are started together by one module fixture (they run in parallel) and each test then
checks its own; faults come from finetuner/training/faults.py through FINETUNER_FAULT.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from finetuner.demo import arith
from finetuner.config import from_dict, save_config
from graders.errors import RunError
from finetuner.runs import RunFolder, list_runs, pid_alive, read_jsonl, refresh_state, wait
from finetuner.ui import run_watch, tab_monitor, tab_runs
from finetuner.ui.context import AppContext

NO_FILTER = ("", "", "all", tab_monitor.rollouts.ALL, "total", "", "", "")
GRADER = {"name": "digits", "type": "python",
          "source": "def grade(sample, item):\n    t = sample['output_text']\n"
                    "    return sum(c.isdigit() for c in t) / max(len(t), 1)\n"}
# A side process standing in for the app: it launches a run and exits, as an app restart would leave it.
OLD_APP = ("import sys; from finetuner.config import load_config; from finetuner.runs import launch; "
           "print(launch(load_config(sys.argv[1]), sys.argv[2]).path)")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(tmp, name, method="sft", **sections):
    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
            for r in arith.rft_rows(32, seed=5)]
    spec = {"name": name, "method": method, "model": {"name": "tiny", "max_length": 64},
            "data": {"train": write_jsonl(tmp / "rows.jsonl", rows)}, "graders": [GRADER],
            "sft": {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, "save_steps": 1},
            "rft": {"max_steps": 2, "batch_size": 4, "num_generations": 4, "max_completion_length": 8,
                    "save_steps": 100}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return from_dict(spec)


def fault(name):
    return {"FINETUNER_FAULT": name}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every faulty run, launched at once. Yields {name: RunFolder}; kills whatever is left at the end."""
    from finetuner.runs import launch

    tmp = tmp_path_factory.mktemp("faults")
    out = {}
    for name, spec in {"oom": "oom@2", "crash": "crash@2", "enospc": "enospc@2", "enospc_save": "enospc_save@2"
                       }.items():
        out[name] = launch(config(tmp, name), tmp / name, extra_env=fault(spec))
    out["hang"] = launch(config(tmp, "hang", method="rft"), tmp / "hang", extra_env=fault("hang_generation@120"))
    cfg_path = tmp / "long.yaml"
    save_config(config(tmp, "long", sft={"max_steps": 3000, "save_steps": 2}), cfg_path)
    done = subprocess.run([sys.executable, "-c", OLD_APP, str(cfg_path), str(tmp / "restart")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    out["long"] = RunFolder(Path(done.stdout.strip()))
    yield out
    for run in out.values():
        pid = run.read_status().get("pid")
        if pid and pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def final(run, timeout=240):
    status = wait(run, timeout=timeout, poll=0.25)
    assert status.get("state") in ("finished", "stopped", "failed"), (status, tail(run))
    return status


def tail(run, n=3000):
    return run.log_path.read_text(errors="replace")[-n:] if run.log_path.exists() else "(no log)"


@pytest.mark.slow
def test_simulated_oom_fails_with_what_to_lower(runs):
    run = runs["oom"]
    status = final(run)
    assert status["state"] == "failed", tail(run)
    err = status["error"]
    assert err.startswith("Out of memory during SFT (1 of 3 steps done)")
    assert "`sft.batch_size` (now 8" in err and "`sft.grad_accum`" in err and "`model.max_length` (now 64)" in err
    assert "checkpoint-1" in err and "--resume" in err and "Traceback" not in err
    log = run.log_path.read_text()
    assert "Traceback" in log and "OutOfMemoryError" in log
    assert run.last_checkpoint("sft").name == "checkpoint-1"


@pytest.mark.slow
def test_crash_fails_with_its_reason_and_the_traceback_only_in_the_log(runs):
    run = runs["crash"]
    status = final(run)
    assert status["state"] == "failed"
    assert "Training crashed during SFT" in status["error"] and "RuntimeError: simulated crash at step 2" in \
        status["error"] and "log.txt" in status["error"] and "Traceback" not in status["error"]
    assert 'raise RuntimeError(f"simulated crash' in run.log_path.read_text()  # the traceback's source line


@pytest.mark.slow
def test_disk_full_while_writing_metrics_says_so_and_where(runs):
    run = runs["enospc"]
    status = final(run)
    assert status["state"] == "failed", tail(run)
    err = status["error"]
    assert err.startswith("The disk is full (No space left on device) writing ") and str(run.metrics_path) in err
    assert f"Free space on the disk holding {run.path.parent}" in err and "`sft.save_steps` (now 1)" in err
    assert run.last_checkpoint("sft") is not None and "--resume" in err
    # The space kept for this last status write is given back, right after it (the status is written first, so
    # a test reading it can get there a moment before the file goes: wait for that moment, not for ever).
    deadline = time.time() + 15
    while (run.path / ".disk-reserve").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not (run.path / ".disk-reserve").exists()


@pytest.mark.slow
def test_disk_full_mid_checkpoint_keeps_the_last_complete_one(runs):
    run = runs["enospc_save"]
    status = final(run)
    assert status["state"] == "failed" and "The disk is full" in status["error"], tail(run)
    # The checkpoint cut short was removed (space back, nothing half-written left); the one before is whole.
    assert not (run.checkpoints / "sft" / "checkpoint-2").exists()
    assert run.last_checkpoint("sft").name == "checkpoint-1" and "sft checkpoint-1" in status["error"]
    # An incomplete checkpoint left behind (a kill mid-save) is never taken for the newest one.
    half = run.checkpoints / "sft" / "checkpoint-9"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    (half / "trainer_state.json").write_text('{"global_step": 9, "log_hi')
    assert run.last_checkpoint("sft").name == "checkpoint-1"
    assert run.discard_incomplete_checkpoints() == [half] and not half.exists()


@pytest.mark.slow
def test_app_restart_reattaches_then_kill_9_is_noticed_and_the_checkpoint_resumes(runs):
    run = runs["long"]
    ctx = AppContext(run.path.parent)  # a fresh app: nothing in memory about this run
    run_watch.forget(run.path)
    deadline = time.time() + 240
    while time.time() < deadline and run.last_checkpoint("sft") is None:
        time.sleep(0.25)
    ckpt = run.last_checkpoint("sft")
    assert ckpt is not None, tail(run)
    # The run launched by the app that exited is shown running and picked by the Monitor.
    assert ctx.active_run()["id"] == run.id and tab_monitor.pick_run(ctx, "") == run.id
    view = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0), force=True)
    assert ">running<" in view["progress"] and view["force"]["interactive"]
    pid = run.read_status()["pid"]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    # What the app calls on start and on every refresh marks it, with the reason.
    status = {s["id"]: s for s in list_runs(ctx.runs_dir)}[run.id]
    assert status["state"] == "failed" and f"The training process (pid {pid}) died without saying why" in \
        status["error"] and "--resume" in status["error"]
    assert ctx.active_run() is None
    # The last complete checkpoint loads as an adapter.
    from peft import PeftModel

    from finetuner.modeling.load import load_model

    ckpt = run.last_checkpoint("sft")
    base, _tok, _plan = load_model("tiny", "none")
    model = PeftModel.from_pretrained(base, str(ckpt))
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert b and any(float(p.abs().sum()) > 0 for p in b)  # trained weights, not a fresh adapter
    # Resume from the Runs tab continues the step count from that checkpoint.
    at = int(ckpt.name.split("-")[1])
    run.config_path.write_text(run.config_path.read_text().replace("max_steps: 3000", f"max_steps: {at + 1}"))
    tab_runs.resume(ctx, run.id)
    status = final(run)
    assert status["state"] == "finished", tail(run)
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps[-1] == at + 1 and status["stage_steps"] == {"sft": at + 1}


@pytest.mark.slow
def test_stop_pressed_during_generation_stops_and_saves(runs):
    run = runs["hang"]
    deadline = time.time() + 240
    while time.time() < deadline and "stalling inside generation" not in tail(run, 100_000):
        assert refresh_state(run).get("state") in ("queued", "running"), tail(run)
        time.sleep(0.25)
    assert "stalling inside generation" in tail(run, 100_000)
    ctx = AppContext(run.path.parent)
    tab_monitor.stop(ctx, run.id)  # the Monitor's Stop button
    status = final(run)
    assert status["state"] == "stopped" and "Stopped by request at rft step 1" in status["error"], tail(run)
    assert (run.adapter / "adapter_model.safetensors").exists()
    assert run.last_checkpoint("rft").name == "checkpoint-1"
    assert run.samples() and not run.stop_path.exists()
    log = tail(run, 100_000)
    assert log.index("stalling inside generation") < log.index("generation goes on")


def test_two_launches_at_once_start_exactly_one(tmp_path, monkeypatch):
    from finetuner.runs import ACTIVE_STATES, queue, waiting

    monkeypatch.setattr(queue, "gpu_count", lambda: 0)  # one CPU slot, whatever this machine has
    cfg = config(tmp_path, "race", sft={"max_steps": 3000})
    ctx = AppContext(tmp_path / "runs")
    gate, results = threading.Barrier(3), []

    def click():
        gate.wait()
        try:
            results.append(ctx.launch(cfg))
        except RunError as err:
            results.append(err)

    threads = [threading.Thread(target=click) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    launched = [r for r in results if isinstance(r, RunFolder)]
    started = [r for r in launched if r.read_status().get("pid")]
    try:
        assert len(launched) == 3 and len(started) == 1  # all three accepted, one process
        assert sorted(w["id"] for w in waiting(ctx.runs_dir)) == sorted(r.id for r in launched if r not in started)
        assert [s["id"] for s in list_runs(ctx.runs_dir) if s["state"] in ACTIVE_STATES] == [started[0].id]
    finally:
        for run in started:
            pid = run.read_status().get("pid")
            if pid and pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def test_half_written_files_never_break_a_reader(tmp_path):
    ctx = AppContext(tmp_path)
    run = RunFolder(tmp_path / "torn")
    run.path.mkdir()
    run.config_path.write_text("name: torn\n")
    run.status_path.write_text('{"state": "runn')  # a foreign writer cut short (ours is atomic)
    run.metrics_path.write_text('{"stage": "sft", "step": 1, "run_step": 1, "loss": 2.0}\n{"stage": "sft", "st')
    run.samples_path.write_bytes(b'{"step": 1, "completion": "ok"}\n{"step": 2, "compl\xc3')
    assert run.read_status()["state"] == "unknown" and refresh_state(run)["state"] == "unknown"
    assert [s["state"] for s in list_runs(tmp_path)] == ["unknown"]
    assert [m["loss"] for m in run.metrics()] == [2.0] and len(run.samples()) == 1
    view = tab_monitor.view(ctx, tab_monitor.MonitorRequest("torn", 0.0), force=True)
    assert "unknown" in view["progress"] and [list(t.x) for t in view["loss"].data] == [[1.0]]
    table, _ids = tab_runs.runs_table(ctx)
    assert table["data"][0][:2] == ["torn", "unknown"]
    assert read_jsonl(run.metrics_path)[1] == len(run.metrics_path.read_bytes().split(b"\n")[0]) + 1
