"""The run folder (DESIGN.md joint 2) and the launch of training as a child process (joint 4).

`runs/<run-id>/` is the only channel between the training process and the UI: `config.yaml`,
`status.json`, `metrics.jsonl`, `samples.jsonl`, `log.txt`, `checkpoints/`, `adapter/`, `eval/`.
Writers append and flush each line as it happens; `read_jsonl` skips a half-written last line and can
resume from a byte offset so a reader tails a long file instead of re-reading it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import RunError

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("finished", "stopped", "failed")
STOP_FILE = "STOP"


def _now() -> float:
    return round(time.time(), 3)


@dataclass
class RunFolder:
    path: Path

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
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()

    def append_metric(self, row: dict) -> None:
        self.append_jsonl(self.metrics_path, [row])

    def append_samples(self, rows: list[dict]) -> None:
        self.append_jsonl(self.samples_path, rows)

    # -------------------------------------------------------------- readers

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)[0]

    def samples(self) -> list[dict]:
        return read_jsonl(self.samples_path)[0]

    def last_checkpoint(self, stage: str) -> Path | None:
        folder = self.checkpoints / stage
        found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                 if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").exists()]
        return max(found)[1] if found else None


def _json_default(value):
    # numpy and torch scalars reach us from TRL's logs; write them as plain numbers.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_jsonl(path: Path | str, offset: int = 0) -> tuple[list[dict], int]:
    """Rows of a JSONL file from byte `offset`; returns (rows, offset after the last complete line).

    A last line without its newline is being written right now: it is left for the next read.
    A corrupt complete line (a crash mid-write followed by more writes) is skipped, not fatal.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    rows = []
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return rows, offset + end + 1


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
    if status.get("state") in ACTIVE_STATES and status.get("pid") and not pid_alive(status["pid"]):
        stages = [s for s in ("sft", "rft") if run.last_checkpoint(s)]
        kept = (f"Checkpoints are kept ({', '.join(stages)}): resume with `python -m finetuner train --resume "
                f"{run.path}`." if stages else "No checkpoint had been saved yet, so a resume starts the "
                "stage again.")
        status = run.write_status(
            state="failed", finished=_now(),
            error=f"The training process ended without saying why (killed, out of memory, or the machine "
                  f"restarted). {kept}")
        run.stop_path.unlink(missing_ok=True)
    return status


def launch(config, runs_dir: str | Path = "runs", extra_env: dict | None = None) -> RunFolder:
    """Start `python -m finetuner train` for `config` as a child in its own process group.

    `config` is a RunConfig. The run folder is created and `config.yaml` written first, so the caller can
    watch it at once. Training never runs in the caller's process: a crash or OOM leaves the caller alive.
    """
    from .config import save_config

    run = new_run(runs_dir, config.name)
    save_config(portable_config(config), run.config_path)
    run.write_status(state="queued", created=_now(), name=config.name, method=config.method)
    cmd = [sys.executable, "-m", "finetuner", "train", str(run.config_path), "--run-dir", str(run.path)]
    start_child(run, cmd, extra_env)
    return run


def portable_config(config):
    """The config with data and grader file paths made absolute, since the run folder is elsewhere."""
    import copy

    cfg = copy.deepcopy(config)
    for key in ("train", "eval", "rft_train"):
        setattr(cfg.data, key, cfg.resolve(getattr(cfg.data, key)))
    for spec in cfg.graders:
        _absolute_grader_paths(spec, cfg.resolve)
    return cfg


# Grader fields that may name a file relative to the YAML (`tokenizer` may also be a model id: only an
# existing path is rewritten, since resolve() leaves anything else as it is).
_GRADER_PATH_KEYS = ("file", "schema_file", "tokenizer")


def _absolute_grader_paths(spec, resolve) -> None:
    if not isinstance(spec, dict):
        return
    for key in _GRADER_PATH_KEYS:
        if isinstance(spec.get(key), str) and spec[key]:
            spec[key] = resolve(spec[key])
    inner = spec.get("graders")  # a multi grader's own graders
    for sub in (inner.values() if isinstance(inner, dict) else inner or []):
        _absolute_grader_paths(sub, resolve)


def start_child(run: RunFolder, cmd: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # `python -m finetuner` must import this very package from any working folder, installed or not.
    root = str(Path(__file__).resolve().parent.parent)
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
        if p.is_dir() and (p / "status.json").exists():
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
