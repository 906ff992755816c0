"""`math`: is the answer in the output mathematically equal to the reference? (math-verify)

math-verify parses LaTeX and plain expressions with sympy, which can hang on hostile input, and its own
timeouts use signal.alarm, which works only on a main thread. So the check runs in the sandbox pool like a
Python grader: every call gets a hard timeout, runs in parallel across workers, and sympy's memory stays
out of the training process. Templates (`input`, `reference`) are rendered here, before the pool.
"""

from __future__ import annotations

from graders.base import Grader, GradeResult, GraderFailure, make_sample
from graders.python_grader import run_program
from graders.sandbox import Program, get_pool
from graders.spec import SpecReader

_SOURCE = '''
import logging
logging.disable(logging.WARNING)
from math_verify import parse, verify

# math-verify warns once that its own timeouts are off (the sandbox has them); say it now, not in a row's log
verify(parse("1", parsing_timeout=None), parse("1", parsing_timeout=None), timeout_seconds=None)


def _parse(text):
    found = parse(text, parsing_timeout=None)
    if not found and "$" not in text:
        found = parse("$" + text + "$", parsing_timeout=None)
    return found


def grade(sample, item):
    gold = _parse(item["reference"])
    if not gold:
        raise ValueError("math-verify found no expression in the reference %r" % item["reference"][:200])
    pred = parse(sample["output_text"], parsing_timeout=None)
    if not pred:
        print("no answer found in the output")
        return 0.0
    same = verify(gold, pred, timeout_seconds=None)
    print("answer %s %s reference %s" % (pred[-1], "==" if same else "!=", gold[-1]))
    return 1.0 if same else 0.0
'''


class MathGrader(Grader):
    type = "math"
    FIELDS = {"input", "reference", "timeout_s"}

    def __init__(self, name, input, reference, timeout_s=5.0, weight=1.0):
        super().__init__(name, weight)
        self.input, self.reference = input, reference
        self.program = Program(_SOURCE, "<math-verify>", timeout_s=timeout_s, load_timeout_s=120)

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        return cls(r.name, r.template("input", "{{sample.output_text}}"), r.template("reference"),
                   r.number("timeout_s", 5.0, lo=0.1, hi=600), r.number("weight", 1.0))

    def grade_batch(self, samples, items):
        results: list[GradeResult | None] = [None] * len(samples)
        todo, rows = [], []
        for k, (s, item) in enumerate(zip(samples, items, strict=True)):
            sample, item = make_sample(s), item if isinstance(item, dict) else {}
            try:
                rows.append(({"output_text": self.input.render(sample, item)},
                             {"reference": self.reference.render(sample, item)}))
                todo.append(k)
            except GraderFailure as failure:
                results[k] = failure.result()
        if rows:
            outs = run_program(get_pool(), self.program, [r[0] for r in rows], [r[1] for r in rows])
            for k, result in zip(todo, outs, strict=True):
                results[k] = result
        return results  # type: ignore[return-value]
