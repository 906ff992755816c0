"""An incremental, cached tail of one run folder, for the Monitor tab (no Gradio here).

    watch = get_watch(run.path)      # cached per folder; refreshes before returning
    watch.columns.get("reward")      # (x, y) numpy arrays on the run_step timeline
    watch.samples                    # every rollout row so far
    watch.metrics_version            # bumps only when metrics.jsonl grew

A browser tab polls every few seconds and several tabs may watch the same run, so the reads are shared:
one `RunWatch` per folder keeps byte offsets and the rows read so far, and a refresh only stats the files
and reads what was appended (a half-written last line waits for the next refresh). Rotated segments
(metrics.1.jsonl, ...: see finetuner/runs/jsonl_log.py) are followed by runs.JsonlTail, so the timeline stays continuous. Metrics are kept as
columns of `array('d')` so turning 100,000 rows into plot arrays is a memory copy, not a Python loop.
`progress` and `health_warnings` derive the progress line and the plain-language warnings from a watch.
"""

from __future__ import annotations

import math
import os
import threading
import time
from array import array
from collections import OrderedDict
from pathlib import Path

from finetuner.runs import ACTIVE_STATES, JsonlTail, RunFolder, refresh_state, tail_jsonl

# Row keys that describe the row rather than measure something.
META_KEYS = {"stage", "step", "run_step", "time", "epoch"}
MAX_WATCHES = 16  # folders kept in memory; the least recently used is dropped


class MetricColumns:
    """Numeric metrics as columns on one timeline (x = run_step), appended row by row."""

    def __init__(self):
        self.cols: dict[str, tuple[array, array]] = {}
        self.stage_starts: list[tuple[float, str]] = []  # (x where a stage begins, stage) after the first
        self.stages: list[str] = []
        self._last_stage = None

    def add(self, rows: list[dict]) -> None:
        cols = self.cols
        for row in rows:
            x = row.get("run_step", row.get("step"))
            if not isinstance(x, (int, float)):
                continue
            stage = row.get("stage")
            if stage and stage != self._last_stage:
                if self._last_stage is not None:
                    # run_step - step is the number of steps the earlier stages took: the boundary.
                    offset = x - (row.get("step") or 0)
                    self.stage_starts.append((offset + 0.5, stage))
                if stage not in self.stages:
                    self.stages.append(stage)
                self._last_stage = stage
            for key, value in row.items():
                if key in META_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                col = cols.get(key)
                if col is None:
                    col = cols[key] = (array("d"), array("d"))
                col[0].append(x)
                col[1].append(value)

    def get(self, key: str):
        """(x, y) as numpy arrays (copies, so the columns can keep growing), or None."""
        import numpy as np

        col = self.cols.get(key)
        if col is None or not col[0]:
            return None
        return np.frombuffer(col[0], dtype=float).copy(), np.frombuffer(col[1], dtype=float).copy()

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.cols if k.startswith(prefix)]

    def last(self, key: str, n: int = 1) -> list[float]:
        col = self.cols.get(key)
        return list(col[1][-n:]) if col else []


class RunWatch:
    """Rows of one run folder read so far, and where to continue reading."""

    def __init__(self, path: str | Path):
        self.run = RunFolder(Path(path))
        self.lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._reset_part("metrics")
        self._reset_part("samples")
        self.status: dict = {}
        self._sigs: dict[str, tuple] = {}
        self.metrics_version = self.samples_version = self.status_version = 0

    def _reset_part(self, name: str, tail: JsonlTail | None = None) -> None:
        """Forget the rows of `name`; `tail` is the reader to keep (it already holds where to continue)."""
        if name == "metrics":
            self.metrics: list[dict] = []
            self.columns = MetricColumns()
            self.figure_cache: dict = {}  # key -> figures built for metrics_version (see tab_monitor)
            self._metrics_tail = tail or JsonlTail(self.run.metrics_path)
        else:
            self.samples: list[dict] = []
            self._samples_tail = tail or JsonlTail(self.run.samples_path)

    @property
    def version(self) -> tuple[int, int, int]:
        return self.metrics_version, self.samples_version, self.status_version

    def refresh(self) -> bool:
        """Read what was appended since the last refresh. True when anything changed."""
        with self.lock:
            changed = False
            for name, path in (("metrics", self.run.metrics_path), ("samples", self.run.samples_path)):
                sig = _signature(path)
                # The live file is rewritten on every append and replaced on every rotation: unchanged means
                # nothing new, and the common tick costs one stat per file.
                if sig != self._sigs.get(name):
                    self._sigs[name] = sig
                    changed |= self._read(name)
            changed |= self._refresh_status()
            return changed

    def _read(self, name: str) -> bool:
        tail = self._metrics_tail if name == "metrics" else self._samples_tail
        rows, reset = tail.read()
        had = bool(self.metrics if name == "metrics" else self.samples)
        if reset and had:
            # The folder was re-created, or this watch fell so far behind that old segments were thinned:
            # `rows` is everything from the start.
            self._reset_part(name, tail)
        elif not rows:
            return False
        if name == "metrics":
            self.metrics.extend(rows)
            self.columns.add(rows)
            self.metrics_version += 1
            self.figure_cache.clear()
        else:
            self.samples.extend(rows)
            self.samples_version += 1
        return True

    def _refresh_status(self) -> bool:
        sig = _signature(self.run.status_path)
        active = self.status.get("state") in ACTIVE_STATES
        if sig == self._sigs.get("status") and not active:
            return False
        # While active, ask refresh_state every time: it notices a training process that died silently.
        status = refresh_state(self.run) if self.run.status_path.exists() else {}
        self._sigs["status"] = _signature(self.run.status_path)
        if status != self.status:
            self.status = status
            self.status_version += 1
            return True
        return False


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


_WATCHES: OrderedDict[str, RunWatch] = OrderedDict()
_WATCHES_LOCK = threading.Lock()


def get_watch(path: str | Path, refresh: bool = True) -> RunWatch:
    """The cached watch of a run folder (created on first use), refreshed unless told not to."""
    key = str(Path(path).resolve())
    with _WATCHES_LOCK:
        watch = _WATCHES.get(key)
        if watch is None:
            watch = _WATCHES[key] = RunWatch(key)
        _WATCHES.move_to_end(key)
        while len(_WATCHES) > MAX_WATCHES:
            _WATCHES.popitem(last=False)
    if refresh:
        watch.refresh()
    return watch


def tail_rows(path: str | Path, max_bytes: int = 65536) -> list[dict]:
    """The complete rows in the last `max_bytes` of a JSONL file (and its newest rotated segment when the live
    file was just rotated): the latest values without reading it all."""
    return tail_jsonl(path, max_bytes)


def latest(rows: list[dict], key: str):
    """The last value of `key` in `rows`, or None."""
    for row in reversed(rows):
        if isinstance(row.get(key), (int, float)):
            return row[key]
    return None


def forget(path: str | Path) -> None:
    """Drop a folder's cached rows (after it is deleted)."""
    with _WATCHES_LOCK:
        _WATCHES.pop(str(Path(path).resolve()), None)


# ------------------------------------------------------------------ progress


def fmt_seconds(s: float) -> str:
    """A duration as the pages say it: 42s, 3m 05s, 1h 02m."""
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def stage_step_seconds(watch: RunWatch, stage: str, last: int = 20) -> float | None:
    """Median seconds per step over the stage's last `last` logged windows."""
    vals = []
    for row in reversed(watch.metrics):
        if row.get("stage") == stage and isinstance(row.get("time/step_s"), (int, float)):
            vals.append(row["time/step_s"])
            if len(vals) >= last:
                break
    if not vals:
        return None
    vals.sort()
    return vals[len(vals) // 2]


def progress(watch: RunWatch, now: float | None = None) -> dict:
    """What to say about where a run is: state, stage, step/total, fraction, elapsed, ETA (seconds or None)."""
    st = watch.status
    now = now or time.time()
    state = st.get("state", "unknown")
    stages = st.get("stages") or []
    stage = st.get("stage") or (stages[0] if stages else "")
    step, total = int(st.get("step") or 0), int(st.get("total") or 0)
    started = st.get("started") or st.get("created")
    end = st.get("finished") if state not in ACTIVE_STATES else None
    elapsed = ((end or now) - started) if started else None
    step_s = stage_step_seconds(watch, stage) if stage else None
    eta = None
    budget = st.get("budget_s")  # a stage ended by its clock (`max_seconds`): max_steps is only a cap
    if state in ACTIVE_STATES and budget and st.get("budget_started"):
        eta = max(budget - (now - st["budget_started"]), 0.0)
    elif state in ACTIVE_STATES and step_s and total:
        eta = max(total - step, 0) * step_s
    later = stages[stages.index(stage) + 1:] if stage in stages else []
    done = len(st.get("stages_done") or [])
    return {"state": state, "stage": stage, "stage_index": (stages.index(stage) + 1) if stage in stages else 0,
            "stages": stages, "step": step, "total": total, "fraction": min(step / total, 1.0) if total else 0.0,
            "elapsed": elapsed, "eta": eta, "step_s": step_s, "later_stages": later, "stages_done": done,
            "budget_s": budget,
            "error": st.get("error"), "notice": st.get("notice"),
            # The STOP file lives until the trainer acts on it (or the run is found dead), unlike a status field.
            "stop_requested": state in ACTIVE_STATES and watch.run.stop_path.exists()}


def progress_text(p: dict) -> str:
    """One line of Markdown for a progress dict."""
    if not p["stage"]:
        return f"**{p['state']}**: waiting for the first step."
    stage = p["stage"].upper()
    of = f" (stage {p['stage_index']} of {len(p['stages'])})" if len(p["stages"]) > 1 else ""
    steps = f"step {p['step']} of a {p['budget_s']:g} s budget" if p.get("budget_s") else \
        f"step {p['step']}/{p['total'] or '?'}"
    parts = [f"**{p['state']}** · {stage}{of}: {steps}"]
    if p["step_s"]:
        parts.append(f"{p['step_s']:.2f}s/step")
    if p["elapsed"] is not None:
        parts.append(f"elapsed {fmt_seconds(p['elapsed'])}")
    if p["eta"] is not None:
        rest = f", then {', '.join(s.upper() for s in p['later_stages'])}" if p["later_stages"] else ""
        parts.append(f"{stage} ends in ~{fmt_seconds(p['eta'])}{rest}")
    return " · ".join(parts)


# ------------------------------------------------------------------ warnings


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def health_warnings(watch: RunWatch, window: int = 5, covered: frozenset = frozenset()) -> list[str]:
    """Plain-language warnings about the recent steps (newest evidence only, so they clear when fixed). `covered`
    names the checks the Monitor says better elsewhere and skips: "train_vs_eval" (the run's guardrails, in
    status.json) and "zero_spread" (monitor_notes' explanation)."""
    cols, out = watch.columns, []
    # 1. Train reward up, eval reward down: the model is learning to please the graders on training
    #    prompts only (overfitting) or found a way to game them.
    ev = cols.get("eval_reward")
    tr = cols.get("reward")
    if "train_vs_eval" not in covered and ev is not None and tr is not None and len(ev[1]) >= 3:
        ex, ey = ev
        best = int(ey[:-1].argmax())
        eps = max(0.02, 0.05 * abs(float(ey[best])))
        tx, ty = tr

        def train_near(x):
            near = ty[(tx <= x)][-window:]
            return float(near.mean()) if len(near) else None

        r_best, r_now = train_near(ex[best]), train_near(ex[-1])
        if r_best is not None and r_now is not None and r_now > r_best + eps and ey[-1] < ey[best] - eps:
            out.append(f"Train reward rose ({r_best:.3f} → {r_now:.3f}) while eval reward fell ({ey[best]:.3f} at "
                       f"step {ex[best]:.0f} → {ey[-1]:.3f}). The model may be overfitting the training prompts or "
                       f"gaming a grader: read recent rollouts, and prefer the checkpoint with the best eval reward.")
    # 2. Completion length jumped: often the first sign of reward hacking or of collapse.
    length = cols.last("completions/mean_length", 4 * window)
    if len(length) >= 2 * window:
        # Median before: a jump that began inside that span does not drag the baseline with it.
        earlier = sorted(length[:-window])
        before, recent = earlier[len(earlier) // 2], _mean(length[-window:])
        if before and recent is not None and abs(recent - before) > 4 and (recent > 1.5 * before or
                                                                          recent < before / 1.5):
            way = "grew" if recent > before else "shrank"
            out.append(f"Completion length {way} sharply ({before:.0f} → {recent:.0f} tokens on average). Check the "
                       f"rollouts: a grader may reward length, or the model may be collapsing to short answers.")
    clipped = _mean(cols.last("completions/clipped_ratio", window))
    if clipped is not None and clipped > 0.5:
        out.append(f"{clipped:.0%} of recent completions hit `rft.max_completion_length` and were cut off. Raise it, "
                   f"or reward shorter answers.")
    # 3. Zero spread: every completion of a prompt scored the same, so GRPO has nothing to compare.
    zero = _mean(cols.last("frac_reward_zero_std", window))
    if "zero_spread" not in covered and zero is not None and zero >= 0.8:
        out.append(f"In {zero:.0%} of recent groups every completion got the same score, so those prompts teach "
                   f"nothing. Give partial credit in the graders, raise `rft.temperature` or "
                   f"`rft.num_generations`, or use harder/easier prompts.")
    # 4. Grader errors: an error scores 0 and is silent noise in the reward.
    for key in cols.keys("graders/"):
        if not key.endswith("/errors"):
            continue
        n = sum(cols.last(key, window))
        if n > 0:
            name = key[len("graders/"):-len("/errors")]
            example = _last_error(watch, name)
            out.append(f"Grader `{name}` failed {n:.0f} times in the last {window} logged steps (a failure scores 0)."
                       + (f" Latest: {example.rstrip('.')}." if example else "")
                       + " Filter the rollouts by its errors to see them.")
    return out


def _last_error(watch: RunWatch, grader: str) -> str:
    for row in reversed(watch.samples[-2000:]):
        err = (row.get("errors") or {}).get(grader)
        if err:
            return f"`{err.get('type')}`: {str(err.get('message'))[:200]}"
    return ""
