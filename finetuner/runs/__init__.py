"""The run folder (DESIGN.md joint 2) and the launch of training as a child process (joint 4).

`runs/<run-id>/` is the only channel between the training process and the UI: `config.yaml`,
`status.json`, `metrics.jsonl`, `samples.jsonl`, `log.txt`, `checkpoints/`, `adapter/`, `eval/`.
Writers append and flush each line as it happens; `read_jsonl` skips a half-written last line and can
resume from a byte offset so a reader tails a long file instead of re-reading it. The two files that grow
with every step are rotated into numbered segments (`metrics.1.jsonl`, ...) so a long run cannot fill the
disk; `JsonlTail` reads segments and live file as one continuous stream (finetuner/jsonl_log.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from graders.errors import RunError
from finetuner.runs.jsonl_log import (  # noqa: F401 - part of this module's interface
    KEEP_FULL, METRICS_MAX_BYTES, METRICS_SEGMENT_BYTES, SAMPLES_KEEP, SAMPLES_SEGMENT_BYTES, JsonlTail,
    compact_metrics, read_jsonl, rotate, segments, tail_jsonl)

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("finished", "stopped", "failed")
STOP_FILE = "STOP"


def _now() -> float:
    return round(time.time(), 3)


@dataclass
class RunFolder:
    path: Path
    metrics_segment_bytes: int = METRICS_SEGMENT_BYTES
    metrics_max_bytes: int = METRICS_MAX_BYTES
    samples_segment_bytes: int = SAMPLES_SEGMENT_BYTES
    samples_keep: int = SAMPLES_KEEP

    def __post_init__(self):
        self.path = Path(self.path)

    # The folder's parts, named once so every reader and writer agrees.
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def stage_adapter(self, stage: str) -> Path:
        return self.path / "stages" / stage / "adapter"

    @property
    def stop_path(self) -> Path:
        return self.path / STOP_FILE

    # -------------------------------------------------------------- status

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            # Written atomically, so this only happens with a foreign writer; report rather than crash.
            return {"state": "unknown", "error": "status.json is unreadable"}

    def write_status(self, **updates) -> dict:
        """Merge `updates` into status.json: under a lock (the trainer, the UI and the CLI all write it),
        through a temp file of this writer's own that is renamed over the old one, so readers never see a
        half-written file and no writer's update is lost."""
        import fcntl
        import tempfile

        with open(self.path / "status.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                status = json.loads(self.status_path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                status = {}
            status.update(updates)
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".status-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(status, indent=1, default=_json_default))
            os.replace(tmp, self.status_path)
        return status

    # -------------------------------------------------------------- appenders

    def append_jsonl(self, path: Path, rows: list[dict]) -> None:
        """Append whole lines (one write, flushed); metrics and samples rotate past their segment size."""
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
        with open(path, "a+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end:
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    # A torn last line (a crash or a full disk mid-write): end it, so the row appended now
                    # stays whole; readers skip the torn one.
                    text = "\n" + text
            fh.write(text.encode("utf-8"))
            fh.flush()
            size = fh.tell()
        path = Path(path)
        if path == self.metrics_path and size >= self.metrics_segment_bytes:
            segs = rotate(path)
            compact_metrics(segs, max(self.metrics_max_bytes - (KEEP_FULL + 1) * self.metrics_segment_bytes,
                                       self.metrics_segment_bytes // 4))
        elif path == self.samples_path and size >= self.samples_segment_bytes:
            segs = rotate(path)
            for _seq, old in segs[:-max(1, self.samples_keep)]:  # the newest stays: it carries the numbering
                old.unlink(missing_ok=True)

    def append_metric(self, row: dict) -> None:
        self.append_jsonl(self.metrics_path, [row])

    def append_samples(self, rows: list[dict]) -> None:
        self.append_jsonl(self.samples_path, rows)

    # -------------------------------------------------------------- readers

    def metrics(self) -> list[dict]:
        """Every metrics row kept, rotated segments first: one continuous timeline."""
        return JsonlTail(self.metrics_path).read()[0]

    def samples(self) -> list[dict]:
        return JsonlTail(self.samples_path).read()[0]

    def _checkpoint_folders(self, stage: str) -> list[tuple[int, Path]]:
        folder = self.checkpoints / stage
        return sorted((int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                      if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir())

    def last_checkpoint(self, stage: str) -> Path | None:
        """The newest complete checkpoint of `stage`: one that a kill or a full disk cut short is skipped."""
        done = [p for _step, p in self._checkpoint_folders(stage) if checkpoint_complete(p)]
        return done[-1] if done else None

    def discard_incomplete_checkpoints(self, stage: str | None = None) -> list[Path]:
        """Delete checkpoints a kill or a full disk left half-written (only while nothing trains in this run):
        they free space and cannot be mistaken for the newest by the trainer's own rotation."""
        gone = []
        for st in [stage] if stage else ("sft", "rft"):
            for _step, p in self._checkpoint_folders(st):
                if not checkpoint_complete(p):
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p)
        return gone


def checkpoint_complete(folder: Path) -> bool:
    """The trainer writes trainer_state.json last (transformers' _save_checkpoint), after the weights, the
    optimizer and the RNG state: a checkpoint whose trainer state parses was written to the end."""
    try:
        json.loads((Path(folder) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _json_default(value):
    # numpy and torch scalars reach us from TRL's logs; write them as plain numbers.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ------------------------------------------------------------------ folders


def safe_name(name: str) -> str:
    """A run name made safe as one folder name: no separators, no dots at the start, bounded length."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:60]
    return clean or "run"


def new_run(runs_dir: str | Path, name: str) -> RunFolder:
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{safe_name(name)}-{stamp}"
    path, n = runs_dir / base, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = runs_dir / f"{base}-{n}"
    return RunFolder(path)


def open_run(runs_dir: str | Path | None, run_id_or_path: str | Path) -> RunFolder:
    """A run by folder path, or by id inside `runs_dir`; ids cannot escape `runs_dir`."""
    if "\x00" in str(run_id_or_path):  # the OS refuses such a path with a ValueError, not our message
        raise RunError(f"Run id {str(run_id_or_path)!r} is not a folder name. Pick a run from the list.")
    p = Path(run_id_or_path)
    if runs_dir is not None:
        # A run id from a browser or a CLI argument: it must name a folder directly inside runs_dir.
        base = Path(runs_dir).resolve()
        p = (base / p).resolve()
        if p.parent != base:
            raise RunError(f"Run id {str(run_id_or_path)!r} is not a folder inside {runs_dir}.")
    if not (p / "config.yaml").exists() and not (p / "status.json").exists():
        raise RunError(f"{p} is not a run folder (no config.yaml or status.json). Pick a folder under runs/.")
    return RunFolder(p)


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
    cmd = [sys.executable, "-m", "finetuner", "train", str(run.config_path), "--run-dir", str(run.path)]
    start_child(run, cmd, extra_env)
    return run


def start_child(run: RunFolder, cmd: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # `python -m finetuner` must import this very package from any working folder, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(extra_env or {})
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
