"""Graders -> TRL GRPO reward functions, with per-grader rows and metrics for the run folder.

    bridge = RewardBridge(build_graders(specs, base_dir))
    GRPOTrainer(..., reward_funcs=bridge.reward_funcs, args=GRPOConfig(reward_weights=bridge.weights))
    ... each step: bridge.drain_rows() -> samples.jsonl, bridge.drain_stats() -> metrics.jsonl
    bridge.close()

TRL calls each function as f(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=...,
log_metric=..., log_extra=...). Every function is named after its grader (TRL logs rewards/<name>/mean);
judges get `async def` functions, which TRL awaits concurrently; the rest are plain functions, and a Python
grader sends the whole batch to its worker pool in one go. A grader error is a 0 for TRL, never an
exception; it is counted and kept with the row. The calls for one batch are merged into one row per
completion, recognised by the `completions` list object TRL passes to every function. Each completion's
`item` is `build_item(its dataset columns, its prompt)` (graders/item.py), as in dry runs and evaluation.
"""

from __future__ import annotations

import threading
import time

from graders.base import Grader, GradeResult, combine, completion_text, make_sample
from graders.item import REFERENCE_COLUMN, build_item, grader_item  # noqa: F401 - re-exported for the engine
from graders.templating import to_text
from graders.trajectory import row_fields


_NOT_COLUMNS = {"trainer_state", "log_metric", "log_extra", "environments", "completion_ids", "prompts",
                "completions"}


class _Batch:
    def __init__(self, prompts, completions, samples, items):
        self.prompts, self.completions, self.samples, self.items = prompts, completions, samples, items
        self.results: dict[str, list[GradeResult]] = {}
        self.tag: dict = {}  # what the caller said about this batch when it was made (e.g. step, split)
        self.rows: list[dict] = []  # one per completion, all graders merged, once every grader scored it
        self.truncated: list[bool] = []  # completions that used all of max_completion_tokens (when known)
        self.started = time.monotonic()
        self.ended = self.started


class RewardBridge:
    def __init__(self, graders: list[Grader]):
        self.graders = list(graders)
        self.weights = [g.weight for g in self.graders]
        self.reward_funcs = [self._make(g) for g in self.graders]
        self._lock = threading.Lock()
        self._batches: list[_Batch] = []
        self._done_rows: list[dict] = []
        # Stamped on every row of the batches graded from now on; the trainer sets it as it generates
        # (the step the rollouts will train, train or eval), since grading happens before that step is logged.
        self.tag: dict = {}
        # Called as fn(rows, items, tag, log_metric) when every grader has scored a batch (outside the lock):
        # the engine's curriculum follows the reward this way.
        self.listeners: list = []
        # The engine sets rft.max_completion_length here, so rows can say which rollouts were cut short.
        self.max_completion_tokens = 0
        self._reset_stats()

    def _reset_stats(self):
        self._counts = {g.name: [0, 0] for g in self.graders}  # grades, errors
        self._grading_s = 0.0
        self._judge: dict[str, dict] = {}

    # -- the functions TRL calls
    def _make(self, grader: Grader):
        bridge = self
        if grader.is_async:
            async def reward(prompts=None, completions=None, completion_ids=None, **kwargs):
                batch = bridge._batch(grader.name, prompts, completions, kwargs, completion_ids)
                started = time.monotonic()
                try:
                    results = await grader.agrade_batch(batch.samples, batch.items)
                except Exception as err:  # noqa: BLE001 - never raise into training
                    results = _all_failed(err, len(batch.samples))
                return bridge._record(grader, batch, results, started, kwargs.get("log_metric"))
        else:
            def reward(prompts=None, completions=None, completion_ids=None, **kwargs):
                batch = bridge._batch(grader.name, prompts, completions, kwargs, completion_ids)
                started = time.monotonic()
                try:
                    results = grader.grade_batch(batch.samples, batch.items)
                except Exception as err:  # noqa: BLE001 - never raise into training
                    results = _all_failed(err, len(batch.samples))
                return bridge._record(grader, batch, results, started, kwargs.get("log_metric"))
        reward.__name__ = reward.__qualname__ = grader.name
        return reward

    def _find(self, name, prompts, completions) -> _Batch | None:
        # TRL hands every function the same list objects; equal lists from other callers merge too,
        # as long as this grader has not scored that batch yet.
        for batch in self._batches:
            if name not in batch.results and (batch.completions is completions or (
                    batch.completions == completions and batch.prompts == prompts)):
                return batch
        return None

    def _batch(self, name, prompts, completions, kwargs, completion_ids=None) -> _Batch:
        completions = completions if completions is not None else []
        with self._lock:
            found = self._find(name, prompts, completions)
            if found is not None:
                return found
        n = len(completions)
        prompts = prompts if prompts is not None else [""] * n
        columns = {k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS}
        items = []
        for i in range(n):
            items.append(build_item({k: (v[i] if isinstance(v, (list, tuple)) and len(v) == n else v)
                                     for k, v in columns.items()}, prompts[i]))
        batch = _Batch(prompts, completions, [make_sample(c) for c in completions], items)
        batch.tag = dict(self.tag)
        if completion_ids is not None and self.max_completion_tokens:
            batch.truncated = [len(ids) >= self.max_completion_tokens for ids in completion_ids]
        with self._lock:
            found = self._find(name, batch.prompts, completions)  # another thread may have built it meanwhile
            if found is not None:
                return found
            self._batches.append(batch)
        return batch

    def _record(self, grader, batch, results, started, log_metric) -> list[float]:
        if len(results) != len(batch.samples):
            results = _all_failed(RuntimeError(f"grader returned {len(results)} results for "
                                               f"{len(batch.samples)} completions"), len(batch.samples))
        errors = sum(1 for r in results if not r.ok)
        finished, judge_stats = None, {}
        with self._lock:
            batch.results[grader.name] = results
            batch.ended = max(batch.ended, time.monotonic())
            counts = self._counts[grader.name]
            counts[0] += len(results)
            counts[1] += errors
            if len(batch.results) == len(self.graders):
                finished = batch
                judge_stats = self._finish(batch)
        if log_metric is not None and results:
            _push(log_metric, f"graders/{grader.name}/errors", errors)
            _push(log_metric, f"graders/{grader.name}/error_rate", errors / len(results))
            _push(log_metric, f"graders/{grader.name}/grading_s", time.monotonic() - started)
        if finished is not None:
            for listener in self.listeners:
                try:
                    listener(finished.rows, finished.items, finished.tag, log_metric)
                except Exception:  # noqa: BLE001 - a curriculum or metrics listener must never stop training
                    import logging

                    logging.getLogger(__name__).exception("a reward listener failed; training goes on")
        if finished is not None and log_metric is not None:
            total = sum(len(r) for r in finished.results.values())
            failed = sum(1 for rs in finished.results.values() for r in rs if not r.ok)
            _push(log_metric, "graders/error_rate", failed / total if total else 0.0)
            _push(log_metric, "time/grading_s", finished.ended - finished.started)
            for name, stats in judge_stats.items():
                for key, value in stats.items():
                    _push(log_metric, f"graders/{name}/{key}", value)
        return [r.score if r.ok else 0.0 for r in results]

    def _finish(self, batch: _Batch) -> dict:
        """Called under the lock when every grader has scored `batch`: make its rows, collect judge stats."""
        self._batches.remove(batch)
        self._grading_s += batch.ended - batch.started
        batch.rows = self._rows(batch)
        self._done_rows.extend(batch.rows)
        collected = {}
        for g in self.graders:
            stats = g.drain_stats()
            if stats:
                collected[g.name] = stats
            for key, value in stats.items():
                self._judge.setdefault(g.name, {}).setdefault(key, []).append(value)
        return collected

    def _rows(self, batch: _Batch) -> list[dict]:
        rows = []
        for i, sample in enumerate(batch.samples):
            scores, total, errors, logs = combine(self.graders, batch.results, i)
            prompt = batch.prompts[i]
            row = {"prompt": prompt if isinstance(prompt, str) else to_text(prompt),
                   "completion": sample["output_text"] if isinstance(sample, dict) else
                   completion_text(batch.completions[i]),
                   "scores": scores, "total": total, "errors": errors, "logs": logs, **batch.tag}
            if i < len(batch.truncated) and batch.truncated[i]:
                row["truncated"] = True
            if isinstance(sample, dict):
                row.update(row_fields(sample))  # a tool-use rollout: kept turn by turn
            rows.append(row)
        return rows

    # -- what the engine reads
    def drain_rows(self) -> list[dict]:
        """Rows graded since the last call, one per completion, all graders merged."""
        with self._lock:
            # a batch still missing graders while a newer one exists will never complete: flush it as is
            while len(self._batches) > 1:
                self._finish(self._batches[0])
            rows, self._done_rows = self._done_rows, []
        return rows

    def drain_stats(self) -> dict:
        """Scalars since the last call: error counts and rates, grading seconds, judge latency and usage."""
        with self._lock:
            out: dict[str, float] = {}
            grades = failed = 0
            for name, (n, errors) in self._counts.items():
                out[f"graders/{name}/errors"] = errors
                out[f"graders/{name}/error_rate"] = errors / n if n else 0.0
                grades, failed = grades + n, failed + errors
            out["graders/error_rate"] = failed / grades if grades else 0.0
            out["time/grading_s"] = self._grading_s
            for name, stats in self._judge.items():
                for key, values in stats.items():
                    if key == "judge_latency_s":
                        out[f"graders/{name}/{key}"] = sum(values) / len(values)
                    else:
                        out[f"graders/{name}/{key}"] = sum(values)
            self._reset_stats()
        return out

    def close(self) -> None:
        for g in self.graders:
            try:
                g.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        from graders.sandbox import close_pools
        close_pools()


def _all_failed(err: Exception, n: int) -> list[GradeResult]:
    return [GradeResult.fail("runtime_error", f"{type(err).__name__}: {err}") for _ in range(n)]


def _push(log_metric, name: str, value: float) -> None:
    try:
        log_metric(name, float(value))
    except Exception:  # noqa: BLE001 - metrics must never stop training
        pass
