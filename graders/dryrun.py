"""Dry run: grade a few rows before training and say whether RFT can learn from these rewards.

    report = dry_run(graders, rows, sample_column="answer")          # text per row from a column
    report = dry_run(graders, rows, samples=[[c1, c2, c3, c4], ...])  # K completions per row (base model)
    print(report.text()); report.rows_json(); report.summary_json()

`rows` are the graders' items, built by the caller with `graders.item.build_item` as training builds them (so
`{{item.prompt}}` is the prompt's text). The summary has the mean reward, a histogram, the error rate and
warnings: a grader that failed on every sample, rewards all near the bottom ("too hard: do SFT first"), near the
top ("too easy: RFT will not help"), or equal within each row's group ("no learning signal": GRPO learns from
differences within a group).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from graders.errors import DataError
from graders.base import Grader, GraderConfigError, GradeResult, combine, completion_text


@dataclass
class SampleResult:
    row: int
    sample: int | None
    text: str
    scores: dict
    total: float
    errors: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)


class DryRunReport:
    def __init__(self, graders: list[Grader], results: list[SampleResult], k: int):
        self.names = [g.name for g in graders]
        self.weights = {g.name: g.weight for g in graders}
        self.results, self.k = results, k
        self.range = total_range(graders)
        self.threshold = 0.5  # rft.pass_threshold: the share of the most the graders give that counts as a pass

    # -- numbers
    @property
    def totals(self) -> list[float]:
        return [r.total for r in self.results]

    @property
    def mean(self) -> float:
        return sum(self.totals) / len(self.totals) if self.results else 0.0

    @property
    def error_rate(self) -> float:
        grades = len(self.results) * len(self.names)
        return sum(len(r.errors) for r in self.results) / grades if grades else 0.0

    def histogram(self, bins: int = 10) -> dict:
        totals = self.totals
        lo, hi = self.range if self.range else (min(totals, default=0.0), max(totals, default=1.0))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        width = (hi - lo) / bins
        counts = [0] * bins
        for t in totals:
            counts[min(bins - 1, max(0, int((t - lo) / width)))] += 1
        return {"edges": [round(lo + i * width, 6) for i in range(bins + 1)], "counts": counts}

    def _groups(self) -> list[list[float]]:
        groups: dict[int, list[float]] = {}
        for r in self.results:
            groups.setdefault(r.row, []).append(r.total)
        return list(groups.values())

    def failed_everywhere(self) -> dict[str, str]:
        """{grader: its latest error} for each grader that failed on every sample: it can teach nothing."""
        out = {}
        for name in self.names:
            errors = [r.errors.get(name) for r in self.results]
            if errors and all(errors):
                out[name] = f"{errors[-1]['type']}: {errors[-1]['message']}"
        return out

    def warnings(self) -> list[str]:
        out, totals = [], self.totals
        if not totals:
            return ["no rows were graded"]
        for name, latest in self.failed_everywhere().items():
            out.append(f"grader `{name}` failed on every sample: it scores 0 for everything, so it cannot teach "
                       f"anything (latest: {latest[:300]}). Fix it or remove it before training.")
        if self.error_rate > 0:
            kinds = Counter(e["type"] for r in self.results for e in r.errors.values())
            first = next(e for r in self.results for e in r.errors.values())
            out.append(f"{self.error_rate:.0%} of grades failed ({', '.join(f'{k}: {n}' for k, n in kinds.items())}"
                       f"); first: {first['message']}. Failed grades score 0: fix them before training.")
        lo, hi = self.range if self.range else (min(0.0, min(totals)), max(totals))
        span = hi - lo
        if span > 0 and self.mean <= lo + 0.05 * span:
            out.append(f"too hard: rewards are almost all at the bottom (mean {self.mean:.3f}). RFT needs some "
                       "successes to learn from: do SFT first, or give partial credit.")
        elif self.range and span > 0 and self.mean >= lo + 0.95 * span:
            out.append(f"too easy: rewards are almost all at the top (mean {self.mean:.3f}). RFT will not help; "
                       "use harder prompts or a stricter grader.")
        groups = [g for g in self._groups() if len(g) > 1]
        if groups:
            flat = sum(1 for g in groups if max(g) - min(g) < 1e-9) / len(groups)
            if flat >= 0.5:
                out.append(f"no learning signal: in {flat:.0%} of rows every sample got the same reward. GRPO "
                           "learns only from differences within a row's group; make the graders finer-grained "
                           "or sample with a higher temperature.")
        elif len(totals) > 1 and max(totals) - min(totals) < 1e-9:
            out.append(f"no learning signal: every sample got the same reward ({totals[0]:g}).")
        return out

    @property
    def pass_rate(self) -> float:
        passed = [pass_share(r.total, self.range, self.weights.values()) >= self.threshold for r in self.results]
        return sum(passed) / len(passed) if passed else 0.0

    def advice(self) -> str:
        """For samples of the model (several per prompt): whether RFT has anything to learn, with the numbers.
        "" for a column's texts (a reference answer says nothing about the model)."""
        if self.k < 2 or not self.results:
            return ""
        rate, n = self.pass_rate, len(self.results)
        rates = pass_rates(self, self.threshold)
        mixed = sum(1 for p in rates if 0 < p < 1)
        said = (f"The model passes {rate:.0%} of {n} samples ({len(rates)} prompts x {self.k}; a pass scores "
                f"at least {self.threshold:.0%} of the highest total the graders can give)")
        if rate > 0.95:
            return (f"{said}: RFT has little to learn. Use harder prompts or a stricter grader, or skip RFT.")
        if rate <= 0.02:
            return (f"{said}: RFT has nothing to reinforce yet. Teach the format with SFT first (method SFT then "
                    f"RFT), or turn on the curriculum (rft.curriculum: adarft), which starts with the prompts it "
                    f"can solve.")
        return (f"{said}: RFT has a learning signal; {mixed} of {len(rates)} prompts have both passing and failing "
                f"samples, which is what GRPO learns from.")

    # -- output
    def rows_json(self) -> list[dict]:
        out = []
        for r in self.results:
            obj = {"row": r.row, "scores": r.scores, "total": r.total, "errors": r.errors, "logs": r.logs}
            if r.sample is not None:
                obj["sample"] = r.sample
            out.append(obj)
        return out

    def summary_json(self) -> dict:
        totals = self.totals
        mean = self.mean
        graders = {}
        for name in self.names:
            values = [r.scores[name] for r in self.results if r.scores.get(name) is not None]
            failed = sum(1 for r in self.results if name in r.errors)
            graders[name] = {"mean": sum(values) / len(values) if values else None, "weight": self.weights[name],
                             "error_rate": failed / len(self.results) if self.results else 0.0}
        groups = [g for g in self._groups() if len(g) > 1]
        return {
            "rows": len({r.row for r in self.results}), "samples": len(self.results), "samples_per_row": self.k,
            "mean": mean, "std": math.sqrt(sum((t - mean) ** 2 for t in totals) / len(totals)) if totals else 0.0,
            "min": min(totals, default=None), "max": max(totals, default=None),
            "range": list(self.range) if self.range else None, "histogram": self.histogram(),
            "error_rate": self.error_rate,
            "failed_graders": self.failed_everywhere(),
            "errors_by_type": dict(Counter(e["type"] for r in self.results for e in r.errors.values())),
            "graders": graders,
            "constant_groups": (sum(1 for g in groups if max(g) - min(g) < 1e-9) / len(groups)) if groups else None,
            "mean_group_std": (sum(_std(g) for g in groups) / len(groups)) if groups else None,
            "warnings": self.warnings(),
            "pass_rate": self.pass_rate if self.k > 1 else None, "advice": self.advice(),
        }

    def text(self, max_rows: int = 50) -> str:
        names = self.names
        head = ["row"] + (["k"] if self.k > 1 else []) + [n[:18] for n in names] + ["total", "output"]
        lines = [head]
        for r in self.results[:max_rows]:
            cells = [str(r.row)] + ([str(r.sample)] if self.k > 1 else [])
            for n in names:
                cells.append(f"ERR {r.errors[n]['type']}"[:18] if n in r.errors else f"{r.scores[n]:.3f}")
            cells += [f"{r.total:.3f}", _clip(r.text, 40)]
            lines.append(cells)
        widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
        if len(self.results) > max_rows:
            out.append(f"... {len(self.results) - max_rows} more")
        errors = [(r, n, e) for r in self.results for n, e in r.errors.items()]
        if errors:
            out += ["", "Errors:"] + [f"  row {r.row}{'' if r.sample is None else f' sample {r.sample}'} {n}: "
                                      f"[{e['type']}] {e['message']}" for r, n, e in errors[:10]]
        summary = self.summary_json()
        out += ["", f"Mean reward {summary['mean']:.3f} (std {summary['std']:.3f}) over {summary['samples']} "
                f"samples; error rate {summary['error_rate']:.1%}"]
        for name, g in summary["graders"].items():
            mean = "n/a" if g["mean"] is None else f"{g['mean']:.3f}"
            out.append(f"  {name}: mean {mean}, weight {g['weight']:g}, errors {g['error_rate']:.0%}")
        hist = summary["histogram"]
        peak = max(hist["counts"]) or 1
        out.append("Histogram of total reward:")
        for i, count in enumerate(hist["counts"]):
            out.append(f"  {hist['edges'][i]:>8.3f} .. {hist['edges'][i + 1]:<8.3f} {'#' * round(30 * count / peak)}"
                       f" {count}")
        out += [f"WARNING: {w}" for w in summary["warnings"]]
        if summary["advice"]:
            out.append(f"ADVICE: {summary['advice']}")
        return "\n".join(out)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _clip(text: str, n: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def total_range(graders: list[Grader]):
    """(lowest, highest) weighted total the graders can give, or None when one has no fixed range (Python)."""
    lo = hi = 0.0
    for g in graders:
        if g.score_range is None:
            return None
        a, b = g.weight * g.score_range[0], g.weight * g.score_range[1]
        lo, hi = lo + min(a, b), hi + max(a, b)
    return (lo, hi)


def pass_share(total: float, span: tuple | None, weights) -> float:
    """A total as a share of the most the graders can give (0..1). Without a fixed range (a Python grader),
    the span is 0 to the sum of the positive `weights`, as if every grader gave 0 to 1."""
    lo, hi = span if span else (0.0, sum(max(w, 0.0) for w in weights))
    return 0.0 if hi <= lo else min(1.0, max(0.0, (total - lo) / (hi - lo)))


def pass_rates(report: "DryRunReport", threshold: float) -> list[float]:
    """Per row of a dry run, the share of its samples that pass (`pass_share` >= threshold)."""
    rows: dict[int, list[bool]] = {}
    for r in report.results:
        rows.setdefault(r.row, []).append(pass_share(r.total, report.range, report.weights.values()) >= threshold)
    return [sum(v) / len(v) for _, v in sorted(rows.items())]


def dry_run(graders: list[Grader], rows, *, samples=None, sample_column: str | None = None,
            rows_limit: int | None = None) -> DryRunReport:
    rows = list(rows)[:rows_limit] if rows_limit else list(rows)
    flat_samples, flat_items, index = [], [], []
    if samples is not None:
        if len(samples) < len(rows):
            raise DataError(f"dry run: {len(rows)} rows but samples for only {len(samples)}; give one list of "
                            "completions per row.")
        for i, row in enumerate(rows):
            group = [samples[i]] if isinstance(samples[i], str) else list(samples[i])
            for k, text in enumerate(group):
                flat_samples.append(completion_text(text))
                flat_items.append(row)
                index.append((i, k))
    elif sample_column:
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or sample_column not in row:
                cols = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
                raise DataError(f"dry run: row {i + 1} has no column '{sample_column}' (it has: {cols}). Pick "
                                "the column that holds the answer to grade.")
            flat_samples.append(completion_text(row[sample_column]))
            flat_items.append(row)
            index.append((i, None))
    else:
        raise DataError("dry run: say where the text to grade comes from: a sample column of the data, or "
                        "completions generated by the model.")
    k = max((j for _, j in index if j is not None), default=-1) + 1 or 1
    per_grader = _grade_all(graders, flat_samples, flat_items)
    results = []
    for n, (i, j) in enumerate(index):
        scores, total, errors, logs = combine(graders, per_grader, n)
        results.append(SampleResult(i, j, flat_samples[n], scores, total, errors, logs))
    return DryRunReport(graders, results, k)


def _grade_all(graders, samples, items) -> dict[str, list[GradeResult]]:
    def one(g):
        try:
            out = g.grade_batch(samples, items)
        except Exception as err:  # noqa: BLE001 - the report shows it instead
            out = [GradeResult.fail("runtime_error", f"{type(err).__name__}: {err}")] * len(samples)
        return g.name, out

    if not samples:
        return {g.name: [] for g in graders}
    with ThreadPoolExecutor(max(1, len(graders))) as pool:  # judges wait on HTTP while the rest compute
        return dict(pool.map(one, graders))


def load_grader_file(path: str) -> list[dict]:
    """Grader specs from our YAML/JSON (a list, or a run file's `graders:`) or an OpenAI grader JSON."""
    import yaml

    from graders.openai_compat import from_openai, unwrap

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)  # YAML is a superset of JSON
    except OSError as err:
        raise GraderConfigError(f"cannot read grader file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise GraderConfigError(f"grader file {path} is not valid YAML/JSON: {err}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    if isinstance(data, dict) and "type" not in data and isinstance(data.get("graders"), list):
        data = data["graders"]
    data = unwrap(data)
    if isinstance(data, dict):
        return [from_openai(data, stem)]
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        return [from_openai(d, f"{stem}_{i}") if "name" not in d else from_openai(d) for i, d in enumerate(data)]
    raise GraderConfigError(f"grader file {path} must hold a grader (a mapping with a type), a list of graders, "
                            "or a run file with a graders: list.")
