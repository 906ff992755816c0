"""`multi`: several graders combined into one score, as in OpenAI's multigrader.

`graders` maps a variable name to a grader spec; `calculate_output` is a formula over those names
(see formula.py). Without a formula, `weights` (name -> weight, default equal) give a weighted mean.
A sub-grader's error makes the multi's result that error (score 0), so failures are never hidden inside
an average. A `multi` inside a `multi` is refused, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import re

from graders.base import Grader, GradeResult
from graders.formula import Formula, FormulaError, FormulaSyntaxError
from graders.spec import SpecReader

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MultiGrader(Grader):
    type = "multi"
    FIELDS = {"graders", "calculate_output", "weights"}

    def __init__(self, name: str, graders: dict[str, Grader], formula: Formula | None = None,
                 weights: dict[str, float] | None = None, weight: float = 1.0):
        super().__init__(name, weight)
        self.graders, self.formula = graders, formula
        self.weights = weights or {key: 1.0 for key in graders}
        self.is_async = any(g.is_async for g in graders.values())
        ranges = [g.score_range for g in graders.values()]
        if formula is None and all(ranges):
            self.score_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        elif formula is not None:
            self.score_range = None

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        from graders.build import build_one

        subs = r.mapping("graders")
        if not subs:
            raise r.error("graders", "is empty; list the graders to combine (name: spec).")
        graders = {}
        for key, spec in subs.items():
            if not isinstance(key, str) or not _IDENT.match(key):
                raise r.error("graders", f"'{key}' cannot be used in a formula; name sub-graders with letters, "
                              "digits and _ (not starting with a digit).")
            if not isinstance(spec, dict):
                raise r.error("graders", f"'{key}' must be a grader spec (a mapping with a type).")
            if spec.get("type") == "multi":
                raise r.error("graders", f"'{key}' is a multi grader; a multi cannot contain another multi "
                              "(as in OpenAI). Put all graders in one multi and combine them in one formula.")
            graders[key] = build_one(dict(spec, name=key), base_dir, parent=r.name)
        formula = None
        if r.has("calculate_output"):
            text = r.get("calculate_output")
            try:
                formula = Formula(str(text), names=set(graders))
            except FormulaSyntaxError as err:
                raise r.error("calculate_output", f"cannot be read: {err}") from None
        weights = None
        if r.has("weights"):
            if formula is not None:
                raise r.error("weights", "give either 'calculate_output' or 'weights', not both.")
            weights = {}
            for key, value in r.mapping("weights").items():
                if key not in graders:
                    from graders.spec import did_you_mean
                    raise r.error("weights", f"'{key}' is not one of this multi's graders.",
                                  did_you_mean(key, graders))
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise r.error("weights", f"the weight of '{key}' must be a number.")
                weights[key] = float(value)
            for key in graders:
                weights.setdefault(key, 0.0)
            if sum(abs(w) for w in weights.values()) == 0:
                raise r.error("weights", "are all zero; give at least one grader a weight.")
        return cls(r.name, graders, formula, weights, r.number("weight", 1.0))

    def grade_batch(self, samples, items):
        per_sub = {key: g.grade_batch(samples, items) for key, g in self.graders.items()}
        return self._combine(per_sub, len(samples))

    async def agrade_batch(self, samples, items):
        keys = list(self.graders)
        outs = await asyncio.gather(*(self.graders[k].agrade_batch(samples, items) for k in keys))
        return self._combine(dict(zip(keys, outs, strict=True)), len(samples))

    def _combine(self, per_sub: dict[str, list[GradeResult]], n: int) -> list[GradeResult]:
        results = []
        for row in range(n):
            subs = {key: per_sub[key][row] for key in self.graders}
            log = "; ".join(f"{k}={r.score:.3f}" if r.ok else f"{k}=error" for k, r in subs.items())
            details = "\n".join(f"  {k}: {r.log}" for k, r in subs.items() if r.log)
            log = log + ("\n" + details if details else "")
            failed = [(k, r) for k, r in subs.items() if not r.ok]
            if failed:
                key, bad = failed[0]
                results.append(GradeResult.fail(bad.error.type, f"{key}: {bad.error.message}", log))
                continue
            scores = {k: r.score for k, r in subs.items()}
            if self.formula is not None:
                try:
                    total = self.formula.evaluate(scores)
                except FormulaError as err:
                    results.append(GradeResult.fail("formula_error", str(err), log))
                    continue
            else:
                wsum = sum(abs(w) for w in self.weights.values())
                total = sum(self.weights[k] * s for k, s in scores.items()) / wsum
            results.append(GradeResult(total, None, f"{log}\n= {total:.4f}" if details else f"{log} = {total:.4f}"))
        return results

    def drain_stats(self) -> dict:
        out = {}
        for key, g in self.graders.items():
            for stat, value in g.drain_stats().items():
                out[f"{key}/{stat}"] = value
        return out

    def close(self) -> None:
        for g in self.graders.values():
            g.close()
