"""Trainer callbacks that feed the run folder: metrics, rollouts, status, stop requests, timing, best-K.

They are plain `transformers.TrainerCallback`s added to TRL's trainers, so the training loop stays TRL's
own. Metric names are TRL's (`loss`, `reward`, `rewards/<grader>/mean`, `kl`, ...) plus ours under
`time/` and `memory/`; every row also carries `stage`, `step` (the stage's optimizer step), `run_step`
(one timeline across stages) and `time`.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import time

from transformers import TrainerCallback

from finetuner.training import distributed
from finetuner.runs import RunFolder


def peak_memory_gb() -> float:
    """Peak memory of this process: the GPU's allocator peak on CUDA, resident set size on CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _clean(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a reader would choke on it
    return value


class RunFolderCallback(TrainerCallback):
    """Writes one metrics.jsonl row per log event and keeps status.json current."""

    def __init__(self, run: RunFolder, stage: str, step_offset: int = 0, bridge=None,
                 max_error_rate: float = 1.0, keep_best: int = 0):
        self.run = run
        self.stage = stage
        self.offset = step_offset
        self.bridge = bridge
        self.max_error_rate = max_error_rate
        self.keep_best = keep_best
        self.stop_reason = ""  # set when this callback ends training for a reason other than a user stop
        self.stop_requested = False
        self._step_started = 0.0
        self._window_seconds = 0.0
        self._window_steps = 0
        self._eval_scores: dict[int, float] = {}
        self._last_status_write = 0.0

    # ------------------------------------------------------------------ steps

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume, the scores of checkpoints saved before are in the restored log history.
        self._eval_scores = {h["step"]: h["eval_reward"] for h in state.log_history
                             if h.get("eval_reward") is not None and "step" in h}
        self.run.write_status(stage=self.stage, step=state.global_step, total=state.max_steps,
                              run_step=self.offset + state.global_step, stage_started=time.time(),
                              budget_s=None)  # a stage with a time budget sets its own (training/budget.py)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._window_seconds += time.perf_counter() - self._step_started
        self._window_steps += 1
        extra = {}
        # Rank 0 decides for all ranks under `accelerate launch`: a rank that stopped alone would hang the rest.
        if distributed.from_main(self.run.stop_path.exists()) and not self.stop_requested:
            self.stop_requested = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at this very step, so resume continues from it
            extra["state"] = "stopping"
        if time.time() - self._last_status_write > 0.5 or extra:
            self._write_step(state, **extra)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._write_step(state)
        return control

    def _write_step(self, trainer_state, **extra):
        self._last_status_write = time.time()
        self.run.write_status(step=trainer_state.global_step, total=trainer_state.max_steps,
                              run_step=self.offset + trainer_state.global_step, **extra)

    # ------------------------------------------------------------------ logs

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        is_eval = any(k.startswith("eval_") for k in logs)
        row = {"stage": self.stage, "step": state.global_step, "run_step": self.offset + state.global_step,
               "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in logs.items()})
        if not is_eval and self._window_steps:
            step_s = self._window_seconds / self._window_steps
            row["time/step_s"] = round(step_s, 4)
            busy = sum(row.get(k) or 0.0 for k in ("time/generation_s", "time/grading_s"))
            if self.stage == "rft":
                row["time/training_s"] = round(max(step_s - busy, 0.0), 4)
            else:
                row["time/training_s"] = round(step_s, 4)
            self._window_seconds, self._window_steps = 0.0, 0
        row["memory/peak_gb"] = round(peak_memory_gb(), 4)
        self.run.append_metric(row)
        if time.time() - self._last_status_write > 0.5:
            # status.json is rewritten under a lock through a temp file: at most twice a second (measured by
            # `finetuner bench` as the largest per-step cost of the engine on the tiny model). The progress line
            # lags at most half a second; on_train_end writes the last step.
            self._write_step(state)
        if self.bridge is not None:
            # Rows carry the step and split the trainer stamped when it generated them.
            defaults = {"step": state.global_step, "split": "eval" if is_eval else "train"}
            rows = self.bridge.drain_rows()
            if distributed.world_size() > 1:
                # Each rank graded its own completions; rank 0 writes them all, each marked with its rank.
                rows = distributed.gather_to_main([{**r, "rank": distributed.rank()} for r in rows])
            self.run.append_samples([{**defaults, **s, "stage": self.stage} for s in rows])
            rate = logs.get("graders/error_rate")
            reason = None
            if not is_eval and rate is not None and rate > self.max_error_rate:
                reason = (
                    f"Graders failed on {rate:.0%} of completions at RFT step {state.global_step}, above the "
                    f"allowed {self.max_error_rate:.0%} (`rft.max_grader_error_rate`). {_culprits(logs, rows)}"
                    f"Training was stopped so the model does not learn from noise. See the errors in the rollouts, "
                    f"fix the grader and test it with `python -m finetuner test-grader`.")
            elif not is_eval:
                # The limit holds per grader too: one dead judge among three graders is a third of all grades,
                # under the overall limit, yet its share of the reward is noise at every step.
                reason = _grader_over_limit(logs, rows, self.max_error_rate, state.global_step)
            # Each rank measured its own completions: rank 0 decides for all, or one rank would stop alone and
            # leave the others waiting in the next collective.
            reason = distributed.from_main(reason)
            if reason:
                self.stop_reason = reason
                control.should_training_stop = True
        return control

    # ------------------------------------------------------------------ best-K checkpoints

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get("eval_reward")
        if score is not None and self.keep_best:
            self._eval_scores[state.global_step] = float(score)
            control.should_save = True  # every scored step gets a checkpoint so the best can be kept
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.keep_best and self._eval_scores and state.is_world_process_zero:
            prune_checkpoints(args.output_dir, self._eval_scores, self.keep_best)
        return control


def _grader_rates(logs: dict) -> dict[str, float]:
    """{grader: its error rate this step} for the graders that failed at least once."""
    return {k[len("graders/"):-len("/error_rate")]: v for k, v in logs.items()
            if k.startswith("graders/") and k.endswith("/error_rate") and k != "graders/error_rate" and v}


def _latest(name: str, rows: list[dict]) -> str:
    err = next((r["errors"][name] for r in reversed(rows) if name in (r.get("errors") or {})), None)
    return f" (latest: {err.get('type')}: {str(err.get('message'))[:160]})" if err else ""


def _culprits(logs: dict, rows: list[dict]) -> str:
    """Which graders failed, each with its error rate and latest error, worst first: the person fixes those."""
    parts = [f"grader `{name}` failed on {rate:.0%} of its grades{_latest(name, rows)}"
             for name, rate in sorted(_grader_rates(logs).items(), key=lambda kv: -kv[1])]
    text = "; ".join(parts)[:1200]
    return f"{text[:1].upper()}{text[1:]}. " if parts else ""


def _grader_over_limit(logs: dict, rows: list[dict], limit: float, step: int) -> str | None:
    """Why to stop when one grader's own error rate passes the limit, naming each such grader; else None."""
    over = sorted(((n, r) for n, r in _grader_rates(logs).items() if r > limit), key=lambda kv: -kv[1])
    if not over:
        return None
    named = "; ".join(f"grader `{name}` failed on {rate:.0%} of its grades{_latest(name, rows)}"
                      for name, rate in over)[:1200]
    return (f"{named[:1].upper()}{named[1:]} at RFT step {step}, above the allowed {limit:.0%} per grader "
            f"(`rft.max_grader_error_rate`). Training was stopped: a grader that fails scores 0, so its part of the "
            f"reward teaches nothing. Fix it (a judge: is its server running and its key set?) and test it on the "
            f"Graders tab or with `python -m finetuner test-grader`, remove it, or raise "
            f"`rft.max_grader_error_rate`.")


def prune_checkpoints(folder, scores: dict[int, float], keep: int) -> list[int]:
    """Keep the `keep` checkpoints with the best eval reward plus the latest one; delete the rest."""
    from pathlib import Path

    found = {int(m.group(1)): p for p in Path(folder).glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))}
    if not found:
        return []
    best = sorted((s for s in found if s in scores), key=lambda s: scores[s], reverse=True)[:keep]
    kept = set(best) | {max(found)}
    for step, path in found.items():
        if step not in kept:
            shutil.rmtree(path, ignore_errors=True)
    return sorted(kept)


class ProgressCallback(TrainerCallback):
    """A terminal progress line: stage, step/total, ETA and the last loss or reward.

    On a terminal it redraws one line; in a log file (a launched run) it prints a line per log event.
    """

    def __init__(self, stage: str, stream=None):
        self.stage = stage
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = 0.0
        self.last = ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self._start_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero:  # one progress line per step, not one per process
            return
        if "train_runtime" in logs:  # the trainer's closing summary, not a step
            return
        if any(k.startswith("eval_") for k in logs):
            score = logs.get("eval_reward")
            if score is not None:
                self._emit(f"[{self.stage}] eval at step {state.global_step}: eval_reward {score:.3f}", newline=True)
            return
        if "reward" in logs:
            self.last = f"reward {logs['reward']:.3f}"
        elif "loss" in logs:
            self.last = f"loss {logs['loss']:.4f}"
        done = state.global_step - self._start_step
        total = state.max_steps or 1
        eta = (time.time() - self.started) / done * (total - state.global_step) if done else 0.0
        width = 24
        filled = int(width * state.global_step / total)
        bar = "#" * filled + "." * (width - filled)
        self._emit(f"[{self.stage}] [{bar}] {state.global_step}/{total}  ETA {eta:5.0f}s  {self.last}",
                   newline=not self.tty)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tty and state.is_world_process_zero:
            self.stream.write("\n")
            self.stream.flush()

    def _emit(self, text: str, newline: bool):
        self.stream.write(("\r" + text) if self.tty and not newline else text + "\n")
        self.stream.flush()


# ------------------------------------------------------------------ held-out score during training
