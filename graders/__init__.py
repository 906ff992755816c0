"""Grading for Finetuner: built-in checks, sandboxed Python graders, LLM judges, multi-graders.

Usable without the engine. The contract follows OpenAI's graders: `grade(sample, item) -> float`, with
`{{sample.output_text}}` / `{{item.<column>}}` templates; an error scores 0 and is counted, never raised.

    from graders import build_graders
    graders = build_graders([{"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
                              "reference": "{{item.answer}}", "operation": "eq"}])
    graders[0].grade({"output_text": "4"}, {"answer": "4"})   # GradeResult(score=1.0, error=None, log=...)

`build_item(row, prompt)` (graders.item) makes the `item` every caller passes. Training:
`graders.reward.RewardBridge`; dry run: `graders.dryrun`; OpenAI JSON: `graders.openai_compat`.
See docs/graders.md.
"""

from graders.base import ERROR_TYPES, GradeError, Grader, GraderConfigError, GradeResult, make_sample
from graders.build import TYPES, build_graders
from graders.item import build_item

__all__ = ["ERROR_TYPES", "GradeError", "GradeResult", "Grader", "GraderConfigError", "TYPES", "build_graders",
           "build_item", "make_sample"]
