"""The run folder (DESIGN.md joint 2): its parts named once, status.json written atomically under a lock, the
metrics and samples appenders (rotated past their segment size), complete checkpoints, and new_run / open_run."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from finetuner.runs.atomic import write_text_atomic
from finetuner.runs.jsonl_log import (KEEP_FULL, METRICS_MAX_BYTES, METRICS_SEGMENT_BYTES, SAMPLES_KEEP,
                                      SAMPLES_SEGMENT_BYTES, JsonlTail, compact_metrics, rotate)
from graders.errors import RunError

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
        through a temp file of this writer's own, fsync'ed and renamed over the old one (atomic.py), so readers
        never see a half-written file, a power cut leaves the old status or the new, and no update is lost."""
        import fcntl

        with open(self.path / "status.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                status = json.loads(self.status_path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                status = {}
            status.update(updates)
            write_text_atomic(self.status_path, json.dumps(status, indent=1, default=_json_default))
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


# A checkpoint is sealed (training/checkpoint_seal.py) once the trainer has written it and its files are fsync'ed;
# a stage folder holding SEALED_STAGE has every checkpoint sealed, so one without SEAL there is torn.
SEAL = ".complete"
SEALED_STAGE = ".sealed"


def checkpoint_complete(folder: Path) -> bool:
    """A checkpoint a resume can trust: sealed, and its trainer state (written last) parses. Without the seal
    a power cut can leave trainer_state.json whole over torn weights: nothing was fsync'ed.

    Checkpoints of runs trained before seals existed (no SEALED_STAGE in their stage folder) are judged as they
    were then, by the trainer state alone; the next training of that stage seals them (seal_legacy) before
    writing its own, so a resume keeps them instead of restarting the stage."""
    folder = Path(folder)
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / SEAL).exists() or not (folder.parent / SEALED_STAGE).exists()


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
