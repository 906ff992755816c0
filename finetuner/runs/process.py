"""Training as a child process (DESIGN.md joint 4): launch (one run at a time under a lock), stop and
force-stop, list and wait, and the truth about a run whose process died without a word."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from finetuner.runs.folder import ACTIVE_STATES, FINAL_STATES, RunFolder, _now, new_run
from graders.errors import RunError

# ------------------------------------------------------------------ processes


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not training any more.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def refresh_state(run: RunFolder) -> dict:
    """Status with the truth about the process: a run marked active whose process is gone is failed."""
    status = run.read_status()
    state, pid = status.get("state"), status.get("pid")
    if state in ACTIVE_STATES and pid and not pid_alive(pid):
        status = run.write_status(state="failed", finished=_now(), error=_death_message(run, pid))
        run.stop_path.unlink(missing_ok=True)
    elif state == "queued" and not pid and \
            _now() - (status.get("queued") or status.get("created") or _now()) > QUEUED_TIMEOUT_S:
        # launch writes the pid right after `queued`; one that never came means the start itself failed.
        status = run.write_status(state="failed", finished=_now(), error=(
            f"The training process never started (no process id after {QUEUED_TIMEOUT_S} s). See "
            f"{run.log_path} and launch again."))
    return status


QUEUED_TIMEOUT_S = 120
LOW_DISK_BYTES = 64 * 2**20  # below this, a silent death was most likely the disk filling up


def _death_message(run: RunFolder, pid: int) -> str:
    stages = [s for s in ("sft", "rft") if run.last_checkpoint(s)]
    kept = (f"The last complete checkpoint is kept ({', '.join(stages)}): resume with `python -m finetuner train "
            f"--resume {run.path}`." if stages else "No checkpoint had been saved yet, so a resume starts the "
            "stage again.")
    try:
        free = shutil.disk_usage(run.path).free
    except OSError:
        free = None
    if free is not None and free < LOW_DISK_BYTES:
        return (f"The training process (pid {pid}) died and the disk holding {run.path.parent} is full "
                f"({free / 2**20:.0f} MB free). Free space there (delete old runs on the Runs tab, or their "
                f"checkpoints/ folders), or save fewer checkpoints (raise `save_steps`). {kept}")
    return (f"The training process (pid {pid}) died without saying why: killed (kill -9, or the system's "
            f"out-of-memory killer), or the machine restarted. The end of {run.log_path.name} may tell more. {kept}")


def active_run(runs_dir: str | Path) -> dict | None:
    """The run under `runs_dir` that is training now (its process checked), or None."""
    for status in list_runs(runs_dir):
        if status.get("state") in ACTIVE_STATES:
            return status
    return None


@contextlib.contextmanager
def launch_lock(runs_dir: str | Path):
    """Held while checking "is a run training?" and starting one, by every process and thread that launches
    into `runs_dir`: without it two Launch clicks in the same instant could both see none and both start."""
    import fcntl

    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".launch.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def refuse_if_busy(runs_dir: str | Path) -> None:
    """Raise RunError when a run is training under `runs_dir` (call it under `launch_lock`)."""
    busy = active_run(runs_dir)
    if busy is not None:
        raise RunError(f"Run {busy['id']} is already {busy.get('state')} and there is one run at a time, so this "
                       f"one was not started. Stop that run on the Monitor tab (or `python -m finetuner stop "
                       f"{busy['path']}`) or wait for it to finish, then launch again.")


def launch(config, runs_dir: str | Path = "runs", extra_env: dict | None = None,
           exclusive: bool = False) -> RunFolder:
    """Start `python -m finetuner train` for `config` as a child in its own process group.

    `config` is a RunConfig. The run folder is created and `config.yaml` written first, so the caller can
    watch it at once. Training never runs in the caller's process: a crash or OOM leaves the caller alive.
    `exclusive`: refuse (RunError) while another run under `runs_dir` trains; the check and the start are one
    step under `launch_lock`, so of two simultaneous launches exactly one starts.
    """
    if exclusive:
        with launch_lock(runs_dir):
            refuse_if_busy(runs_dir)
            return launch(config, runs_dir, extra_env)
    from finetuner.config import portable_config, save_config

    run = new_run(runs_dir, config.name)
    save_config(portable_config(config), run.config_path)
    run.write_status(state="queued", created=_now(), queued=_now(), name=config.name, method=config.method)
    start_child(run, train_command(run), extra_env)
    return run


def train_command(run: RunFolder) -> list[str]:
    """The child that trains `run` from its own config.yaml (launch, and the queue when a slot frees)."""
    return [sys.executable, "-m", "finetuner", "train", str(run.config_path), "--run-dir", str(run.path)]


def child_env(extra_env: dict | None = None) -> dict:
    """The environment of a `python -m finetuner` child (a run, a Lab)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # `python -m finetuner` must import this very package from any working folder, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Training yields the CPU to the web server: on a shared class machine the pages must answer while a run
    # trains (it still takes every idle cycle). `python -m finetuner train` applies it (cli.cmd_train).
    env.setdefault(NICE_ENV, str(CHILD_NICENESS))
    env.update(extra_env or {})
    return env


NICE_ENV, CHILD_NICENESS = "FINETUNER_NICE", 10


def start_child(run: RunFolder, cmd: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    env = child_env(extra_env)
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=os.getcwd())
    run.write_status(pid=proc.pid, pgid=proc.pid)
    return proc


def request_stop(run: RunFolder) -> None:
    """Ask the run to stop at the next step; it saves its adapter and marks itself `stopped`."""
    status = refresh_state(run)
    if status.get("state") not in ACTIVE_STATES:
        raise RunError(f"Run {run.id} is {status.get('state', 'not started')}; there is nothing to stop.")
    run.stop_path.write_text(str(_now()))
    # The trainer owns `state`; this only records the request, so it cannot overwrite a final state.
    run.write_status(stop_requested=_now())


def force_stop(run: RunFolder) -> None:
    """Kill the run's whole process group now. The last checkpoint stays usable."""
    status = run.read_status()
    pid = status.get("pid")
    if pid and pid_alive(pid):
        try:
            # The trainer leads its own group (launch); its sandbox workers and loaders die with it.
            os.killpg(status.get("pgid") or pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)  # not a group leader (a run resumed from a terminal)
        deadline = time.time() + 5
        while pid_alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            raise RunError(f"Could not kill the training process {pid} of run {run.id}.")
    run.stop_path.unlink(missing_ok=True)
    run.write_status(state="stopped", finished=_now(), error="Force-stopped: killed at once without saving; "
                     "the last checkpoint is kept.")


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run under `runs_dir`, newest first, each status refreshed against its process."""
    runs_dir = Path(runs_dir)
    out = []
    if not runs_dir.is_dir():
        return out
    for p in runs_dir.iterdir():
        # A symlink may lead out of runs_dir, which open_run refuses: do not list what cannot be opened.
        if p.is_dir() and not p.is_symlink() and (p / "status.json").exists():
            status = refresh_state(RunFolder(p))
            out.append({"id": p.name, "path": str(p), **status})
    out.sort(key=lambda s: s.get("created") or s.get("started") or 0, reverse=True)
    return out


def wait(run: RunFolder, timeout: float | None = None, poll: float = 0.5) -> dict:
    """Block until the run reaches a final state (or `timeout` seconds); returns the status."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        status = refresh_state(run)
        if status.get("state") in FINAL_STATES:
            return status
        if deadline is not None and time.time() > deadline:
            return status
        time.sleep(poll)
