"""`reasoning_gym`: score a completion with a reasoning-gym task's own verifier (`score_answer(answer, entry)`).

reasoning-gym (https://github.com/open-thought/reasoning-gym) generates procedural tasks with a scorer each.
A ready-made task's rows carry the generator's whole entry (question, answer, metadata) as JSON text in
`entry_column` (default `gym_entry`), because several scorers read the metadata, not only the answer.

What counts as the answer in a completion, first match wins:
  1. the last `<answer>...</answer>` (reasoning-gym's own convention, `reasoning_gym.utils.extract_answer`);
  2. the text after the last `Answer:` (any case), up to the end of that line;
  3. the whole completion, stripped.
A scorer that raises on a malformed answer (e.g. prime_factorization on words) scores 0 with the reason in the
log: a bad answer is the policy's fault, not a grader error. A row without a usable entry is a grader error
(`invalid_variable`), so a wrong data file shows up in the dry run instead of training on zeros.
"""

from __future__ import annotations

import json
import re

from graders.base import Grader, GradeResult, GraderConfigError
from graders.spec import SpecReader

_ANSWER_LINE = re.compile(r"answer\s*:\s*(.*)", re.I)


def extract(text: str) -> str:
    """The answer part of a completion (see the module's docstring for the rules)."""
    from reasoning_gym.utils import extract_answer

    tagged = extract_answer(text or "")
    if tagged is not None:
        return tagged
    found = list(_ANSWER_LINE.finditer(text or ""))
    if found:
        return found[-1].group(1).strip()
    return (text or "").strip()


def load_task(task: str, where: str = "reasoning_gym grader"):
    """reasoning-gym's scorer for `task`, or GraderConfigError saying what to do."""
    try:
        from reasoning_gym.factory import DATASETS, get_score_answer_fn
    except ImportError as err:
        raise GraderConfigError(f"{where}: the reasoning-gym package is not installed ({err}). Install it with "
                                "`pip install reasoning-gym==0.1.25` (it is in requirements.txt).") from err
    if task not in DATASETS:
        from graders.spec import did_you_mean

        hint = did_you_mean(task, DATASETS)
        raise GraderConfigError(f"{where}: field 'task': '{task}' is not a reasoning-gym task.{hint}"
                                " Use the task the data was made with (its `gym_task` column).")
    return get_score_answer_fn(task)


class GymGrader(Grader):
    type = "reasoning_gym"
    FIELDS = {"task", "entry_column"}

    def __init__(self, name: str, task: str, entry_column: str = "gym_entry", weight: float = 1.0):
        super().__init__(name, weight)
        self.task, self.entry_column = task, entry_column
        self.score_answer = load_task(task, f"grader '{name}'")

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        return cls(r.name, r.text("task"), r.text("entry_column", "gym_entry"), r.number("weight", 1.0))

    def _entry(self, item: dict) -> dict | GradeResult:
        raw = item.get(self.entry_column)
        if raw is None:
            return GradeResult.fail("invalid_variable", f"the row has no `{self.entry_column}` column, which holds "
                                    "the task's entry. Use data made by a ready-made task (Data tab or `python -m "
                                    "finetuner make-task`), or set the grader's entry_column.")
        try:
            entry = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as err:
            return GradeResult.fail("invalid_variable", f"`{self.entry_column}` is not JSON ({err}).")
        if not isinstance(entry, dict) or "answer" not in entry:
            return GradeResult.fail("invalid_variable", f"`{self.entry_column}` must be a reasoning-gym entry (a "
                                    "JSON object with question, answer and metadata).")
        task = item.get("gym_task")
        if task and task != self.task:
            return GradeResult.fail("invalid_variable", f"the row was made by task '{task}' but this grader scores "
                                    f"'{self.task}'. Set the grader's task to '{task}'.")
        return entry

    def _grade_one(self, sample, item):
        entry = self._entry(item)
        if isinstance(entry, GradeResult):
            return entry
        answer = extract(sample["output_text"])
        try:
            score = float(self.score_answer(answer, entry))
        except Exception as err:  # noqa: BLE001 - scorers raise on malformed answers; that answer scores 0
            return GradeResult(0.0, log=f"answer {answer[:60]!r}: the task's scorer rejected it "
                                        f"({type(err).__name__}: {err})")
        return GradeResult(score, log=f"answer {answer[:60]!r} vs reference {str(entry['answer'])[:60]!r}: {score:g}")
