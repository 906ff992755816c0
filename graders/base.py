"""The grader contract: results, typed errors, samples, and the `Grader` base class.

Every grader turns `(sample, item)` into a `GradeResult`: a score, or a typed error that scores 0, plus a
log (what a Python grader printed, why a judge decided). Nothing a grader does may raise into training:
`Grader.grade_batch` catches everything. `sample` is `{"output_text": str, "output_json": ...}`
(`output_json` only when the text parses as JSON, plus `output_tools` / `tool_calls` / `messages` for a
tool-use rollout: graders/trajectory.py) and `item` is the dataset row.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from graders.errors import ConfigError
from graders.trajectory import content_text, is_trajectory, trajectory_fields  # noqa: F401 - content_text re-exported

# Our names for what can go wrong, and OpenAI's names for the same thing (from its grader API's metadata).
ERROR_TYPES = {
    "runtime_error": "python_grader_runtime_error",
    "timeout": "unresponsive_reward_error",
    "invalid_return": "python_grader_runtime_error",
    "invalid_variable": "invalid_variable_error",
    "judge_parse_error": "model_grader_parse_error",
    "judge_server_error": "model_grader_server_error",
    "formula_error": "formula_parse_error",
}


class GraderConfigError(ConfigError):
    """A grader spec cannot be built: the message names the grader, the field and what to do."""


@dataclass(frozen=True)
class GradeError:
    type: str
    message: str

    def to_dict(self) -> dict:
        return {"type": self.type, "message": self.message}


@dataclass
class GradeResult:
    score: float
    error: GradeError | None = None
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def fail(cls, type_: str, message: str, log: str = "") -> "GradeResult":
        return cls(0.0, GradeError(type_, message), log)


def combine(graders, results: dict, i: int) -> tuple[dict, float, dict, dict]:
    """One sample's view across graders: (scores, weighted total, errors, logs).

    `results` maps grader name -> list of GradeResult (index `i` is this sample); a grader with no result
    yet scores None. A failed grade scores None here (0 in the total) and its error is kept."""
    scores, errors, logs, total = {}, {}, {}, 0.0
    for g in graders:
        got = results.get(g.name)
        result = got[i] if got is not None else None
        if result is None:
            scores[g.name] = None
            continue
        scores[g.name] = result.score if result.ok else None
        if result.ok:
            total += g.weight * result.score
        else:
            errors[g.name] = result.error.to_dict()
        if result.log:
            logs[g.name] = result.log
    return scores, total, errors, logs


class GraderFailure(Exception):
    """Raised inside graders for an expected, typed failure; turned into a `GradeResult` by the base class."""

    def __init__(self, type_: str, message: str, log: str = ""):
        super().__init__(message)
        self.type, self.message, self.log = type_, message, log

    def result(self) -> GradeResult:
        return GradeResult.fail(self.type, self.message, self.log)


_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.S)


def parse_json_text(text: str):
    """The JSON value in `text` (also inside one ``` fence), or raise ValueError."""
    match = _FENCE.match(text)
    if match:
        text = match.group(1)
    return json.loads(text)


def make_sample(output) -> dict:
    """Normalize a completion (str, chat message list, or sample dict) into the `sample` namespace."""
    if isinstance(output, dict) and "output_text" in output:
        sample = dict(output)
        text = sample["output_text"]
        if not isinstance(text, str):
            sample["output_text"] = text = completion_text(text)
    elif is_trajectory(output):  # a tool-use rollout: the final answer, the calls, the whole trajectory
        sample = trajectory_fields(output)
        text = sample["output_text"]
    else:
        text = completion_text(output)
        sample = {"output_text": text}
    # Always there, empty without tools, so one grader serves runs with and without tools.
    sample.setdefault("output_tools", [])
    sample.setdefault("tool_calls", [])
    for key, empty in (("turns", 1), ("tool_errors", 0), ("unfinished", False)):
        sample.setdefault(key, empty)
    # OpenAI's name for the same output, as one chat choice (its graders may read `sample.choices[0]...`)
    sample.setdefault("choices", [{"index": 0, "message": {"role": "assistant", "content": text,
                                                            "tool_calls": sample["output_tools"]}}])
    if "output_json" not in sample:
        try:
            sample["output_json"] = parse_json_text(text)
        except (ValueError, TypeError, RecursionError):
            pass
    return sample


def completion_text(completion) -> str:
    """The text of a completion: a string, or the assistant contents of a chat message list."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        parts = []
        for message in completion:
            if not isinstance(message, dict):
                parts.append(str(message))
                continue
            if message.get("role", "assistant") != "assistant":
                continue
            parts.append(content_text(message.get("content")))
        return "\n".join(p for p in parts if p)
    return str(completion)


class Grader:
    """Base class. Subclasses implement `_grade_one` (sync) or override the batch methods."""

    type = ""
    is_async = False  # True for graders whose batch work is I/O (judges): TRL awaits those concurrently
    # What scores to expect, for the dry run's warnings; None where only the user knows.
    score_range: tuple[float, float] | None = (0.0, 1.0)

    def __init__(self, name: str, weight: float = 1.0):
        self.name, self.weight = name, float(weight)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} weight={self.weight:g}>"

    def _grade_one(self, sample: dict, item: dict) -> GradeResult | float:
        raise NotImplementedError

    def grade(self, sample, item) -> GradeResult:
        return self.grade_batch([sample], [item])[0]

    def grade_batch(self, samples: list, items: list) -> list[GradeResult]:
        return [self._safe_one(make_sample(s), item) for s, item in zip(samples, items, strict=True)]

    async def agrade_batch(self, samples: list, items: list) -> list[GradeResult]:
        return await asyncio.to_thread(self.grade_batch, samples, items)

    def _safe_one(self, sample: dict, item: dict) -> GradeResult:
        try:
            out = self._grade_one(sample, item if isinstance(item, dict) else {})
        except GraderFailure as failure:
            return failure.result()
        except Exception as err:  # noqa: BLE001 - a grader bug must never reach training
            return GradeResult.fail("runtime_error", f"{type(err).__name__}: {err}")
        return out if isinstance(out, GradeResult) else GradeResult(float(out))

    def drain_stats(self) -> dict:
        """Grader-specific scalars since the last call (judges: latency, tokens)."""
        return {}

    def close(self) -> None:
        pass
