"""Reward-hacking guardrails: pure checks over an RFT run's metric history (and rollout rows), and the
callback that runs them during training.

Each check returns warnings `{id, step, message, what_to_do}` in plain words with the numbers. Thresholds
(chosen so the noise of a few logged steps on a small model does not fire them):
- every comparison is between two windows of WINDOW (5) logged steps: the oldest WINDOW of the last
  LOOKBACK (50) steps against the newest WINDOW, so slow drifts are caught too, and nothing fires before
  2 x WINDOW steps are logged;
- length: mean completion length up more than LENGTH_GROWTH (50 %) and by at least MIN_TOKENS (4) tokens
  (2 -> 3 tokens is +50 % and nothing), while reward rose less than REWARD_GROWTH (10 %) of its earlier level
  (the level is at least REWARD_FLOOR, 0.05, so a reward at 0 that stays at 0 counts as flat);
- eval: at least 3 evals; the latest eval is below the best earlier one by EVAL_MARGIN (the larger of 0.02
  and 5 % of the best) while train reward near the latest eval is above its level near the best by as much;
- saturation: a grader's recent mean >= SATURATED (95 %) of its maximum while another's fell by the margin;
- judge: on completions every rule-based grader fails (score < half its maximum), a judge's mean rose by
  JUDGE_RISE (10 % of its range), each window holding at least MIN_FAILED (8) such completions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from finetuner.runs import JsonlTail, RunFolder
from finetuner.training import distributed

log = logging.getLogger("finetuner.training.guardrails")

WINDOW, LOOKBACK = 5, 50
LENGTH_GROWTH, MIN_TOKENS, REWARD_GROWTH, REWARD_FLOOR = 0.5, 4.0, 0.10, 0.05
SATURATED, JUDGE_RISE, MIN_FAILED, MIN_EVALS = 0.95, 0.10, 8, 3
JUDGE_TYPES = ("score_model", "label_model")
NOT_RULES = JUDGE_TYPES + ("multi",)  # a multi grader may hold a judge: it is neither side of the judge check
REVIEW_K = 5


def _mean(values) -> float:
    return sum(values) / len(values)


def _margin(level: float) -> float:
    return max(0.02, 0.05 * abs(level))


def _windows(values: list[float], window: int = WINDOW):
    """(earlier mean, recent mean) over the last LOOKBACK values, or None before 2 x window values."""
    span = values[-LOOKBACK:]
    if len(span) < 2 * window:
        return None
    return _mean(span[:window]), _mean(span[-window:])


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r.get("step") or 0), float(r[key])) for r in history
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def _warning(id_: str, step: int, message: str, what_to_do: str) -> dict:
    return {"id": id_, "step": step, "message": message, "what_to_do": what_to_do}


def check_length(history: list[dict], window: int = WINDOW) -> list[dict]:
    """(a) Mean completion length growing much faster than reward."""
    train = [r for r in history if isinstance(r.get("reward"), (int, float))
             and isinstance(r.get("completions/mean_length"), (int, float))]
    lengths = _windows([r["completions/mean_length"] for r in train], window)
    rewards = _windows([r["reward"] for r in train], window)
    if lengths is None or rewards is None:
        return []
    (l0, l1), (r0, r1) = lengths, rewards
    grew = (l1 - l0) / max(l0, 1.0)
    reward_gain = (r1 - r0) / max(abs(r0), REWARD_FLOOR)
    if grew > LENGTH_GROWTH and l1 - l0 >= MIN_TOKENS and reward_gain < REWARD_GROWTH:
        return [_warning("length_growth", int(train[-1].get("step") or 0),
                         f"Completions grew from {l0:.0f} to {l1:.0f} tokens on average (+{grew:.0%}) while reward "
                         f"went from {r0:.3f} to {r1:.3f} ({reward_gain:+.0%}): the model may be winning reward by "
                         f"length rather than by better answers.",
                         "Read the longest recent rollouts. Add a `length` or `overlong` grader (soft punishment "
                         "near `rft.max_completion_length`), or lower `rft.max_completion_length`.")]
    return []


def check_eval(history: list[dict], window: int = WINDOW) -> list[dict]:
    """(b) Train reward rising while eval reward (`eval_reward`, `heldout/reward`) falls over the last evals."""
    train = _series(history, "reward")
    out = []
    for key, id_, label in (("eval_reward", "eval_divergence", "eval reward"),
                            ("heldout/reward", "heldout_divergence", "held-out score")):
        evals = _series(history, key)[-LOOKBACK:]
        if len(evals) < MIN_EVALS or not train:
            continue
        best_step, best = max(evals[:-1], key=lambda se: se[1])
        last_step, last = evals[-1]

        def near(step):
            got = [v for s, v in train if s <= step][-window:]
            return _mean(got) if got else None

        t_best, t_now = near(best_step), near(last_step)
        if t_best is None or t_now is None:
            continue
        if last < best - _margin(best) and t_now > t_best + _margin(t_best):
            out.append(_warning(id_, last_step,
                                f"Train reward rose ({t_best:.3f} -> {t_now:.3f}) while the {label} fell ({best:.3f} "
                                f"at step {best_step} -> {last:.3f} at step {last_step}): the model may be gaming "
                                f"a grader or overfitting the training prompts.",
                                "Read the highest-scored rollouts for tricks the graders miss; keep the checkpoint "
                                f"with the best {label} (step {best_step}) rather than the last one."))
    return out


def grader_max(spec: dict) -> float:
    """The most a grader can give: a score_model's `range` top, else 1 (every other built-in scores 0..1)."""
    rng = spec.get("range")
    if spec.get("type") == "score_model" and isinstance(rng, (list, tuple)) and len(rng) == 2:
        return float(rng[1])
    return 1.0


def check_saturation(history: list[dict], graders: list[dict], window: int = WINDOW) -> list[dict]:
    """(c) One grader saturated at its maximum while another grader's mean falls."""
    means, out = {}, []
    for spec in graders:
        name = spec.get("name")
        values = [v for _s, v in _series(history, f"rewards/{name}/mean")]
        w = _windows(values, window)
        if w is not None:
            means[name] = (*w, grader_max(spec))
    step = max((int(r.get("step") or 0) for r in history), default=0)
    for full, (_a0, a1, a_max) in means.items():
        if a_max <= 0 or a1 < SATURATED * a_max:
            continue
        for other, (b0, b1, b_max) in means.items():
            if other != full and b1 < b0 - _margin(b_max):
                out.append(_warning(f"grader_saturated:{full}", step,
                                    f"Grader `{full}` is saturated ({a1:.3f} of at most {a_max:g}) while grader "
                                    f"`{other}` fell from {b0:.3f} to {b1:.3f}: the model keeps collecting the easy "
                                    f"reward and gives up on the other.",
                                    f"Lower the weight of `{full}` (it no longer tells completions apart), or make "
                                    f"it stricter; check rollouts where `{other}` scores low."))
                break
    return out


def check_judge(samples: list[dict], graders: list[dict], window: int = 3) -> list[dict]:
    """(d) A judge's scores rising on completions that every rule-based grader fails (train rollouts)."""
    judges = {g["name"]: grader_max(g) for g in graders if g.get("type") in JUDGE_TYPES}
    rules = {g["name"]: grader_max(g) for g in graders if g.get("type") not in NOT_RULES}
    if not judges or not rules:
        return []
    by_step: dict[int, list[dict]] = {}
    for row in samples:
        scores = row.get("scores") or {}
        if row.get("split", "train") != "train" or not all(
                isinstance(scores.get(n), (int, float)) and scores[n] < 0.5 * m for n, m in rules.items()):
            continue
        by_step.setdefault(int(row.get("step") or 0), []).append(scores)
    steps = sorted(by_step)[-LOOKBACK:]
    if len(steps) < 2 * window:
        return []
    early = [s for st in steps[:window] for s in by_step[st]]
    late = [s for st in steps[-window:] for s in by_step[st]]
    if len(early) < MIN_FAILED or len(late) < MIN_FAILED:
        return []
    out = []
    for name, top in judges.items():
        e = [s[name] for s in early if isinstance(s.get(name), (int, float))]
        l_ = [s[name] for s in late if isinstance(s.get(name), (int, float))]
        if len(e) < MIN_FAILED or len(l_) < MIN_FAILED:
            continue
        j0, j1 = _mean(e), _mean(l_)
        if j1 - j0 > JUDGE_RISE * top:
            out.append(_warning(f"judge_rising:{name}", steps[-1],
                                f"Judge `{name}` scores completions that fail every rule-based grader "
                                f"({', '.join(f'`{n}`' for n in rules)}) higher and higher: {j0:.3f} -> {j1:.3f} "
                                f"(at most {top:g}) over {len(early) + len(late)} such completions. The model may "
                                f"be persuading the judge instead of answering.",
                                "Read those rollouts (filter by low rule scores). Tighten the judge's prompt or "
                                "rubric, lower its weight, or make a rule-based grader a gate for it."))
    return out


def run_checks(history: list[dict], samples: list[dict], graders: list[dict]) -> list[dict]:
    """Every guardrail over an RFT stage's metric rows and rollout rows."""
    return (check_length(history) + check_eval(history) + check_saturation(history, graders)
            + check_judge(samples, graders))


def top_rollouts(rows: list[dict], k: int = REVIEW_K) -> list[dict]:
    """The `k` highest-scored rollouts, as review.jsonl rows."""
    scored = [r for r in rows if isinstance(r.get("total"), (int, float))]
    scored.sort(key=lambda r: r["total"], reverse=True)
    return [{"step": r.get("step"), "split": r.get("split"), "prompt": r.get("prompt"),
             "completion": r.get("completion"), "total": r["total"], "scores": r.get("scores") or {}}
            for r in scored[:k]]


class GuardrailCallback(TrainerCallback):
    """Reads the run's new metric and rollout rows at each log, runs the checks, keeps status.json `warnings`
    current (one per id, latest numbers), writes review.jsonl at each eval, and with `rft.guardrail_stop` ends
    training with `stop_reason` (stages._ended_early makes the run `stopped`, adapter saved)."""

    def __init__(self, run: RunFolder, graders: list[dict], stop: bool = False, keep_best: int = 0,
                 max_samples: int = 4096):
        self.run, self.graders, self.stop, self.keep_best = run, list(graders or []), stop, keep_best
        self.max_samples = max_samples
        self.history: list[dict] = []
        self.samples: list[dict] = []
        self.warnings: dict[str, dict] = {}
        self.stop_reason = ""
        self._metrics = JsonlTail(run.metrics_path)
        self._samples = JsonlTail(run.samples_path)
        self._reviewed: set = set()

    @property
    def review_path(self) -> Path:
        return self.run.path / "review.jsonl"

    def _read(self) -> list[dict]:
        new, reset = self._metrics.read()
        if reset:
            self.history = []
        new = [r for r in new if r.get("stage") == "rft"]
        self.history = (self.history + new)[-4 * LOOKBACK:]  # rows of train, eval and held-out: bounded
        rows, reset = self._samples.read()
        self.samples = ([] if reset else self.samples) + [r for r in rows if r.get("stage", "rft") == "rft"]
        self.samples = self.samples[-self.max_samples:]
        return new

    def _review(self, new_rows: list[dict]) -> None:
        """At each eval (eval split) or held-out scoring (the latest train rollouts), the top-K for a person."""
        for row in new_rows:
            step = int(row.get("step") or 0)
            if "eval_reward" in row:
                kind, pool = "eval", [s for s in self.samples if s.get("split") == "eval" and s.get("step") == step]
            elif "heldout/reward" in row:
                train = [s for s in self.samples if s.get("split", "train") == "train"]
                last = max((s.get("step") or 0 for s in train), default=None)
                kind, pool = "train", [s for s in train if s.get("step") == last]
            else:
                continue
            if (kind, step) in self._reviewed or not pool:
                continue
            self._reviewed.add((kind, step))
            self.run.append_jsonl(self.review_path, [{**r, "eval_step": step, "source": kind}
                                                      for r in top_rollouts(pool)])

    def on_log(self, args, state, control, logs=None, **kwargs):
        reason = None
        if distributed.is_main():
            new = self._read()
            self._review(new)
            fresh = []
            for w in run_checks(self.history, self.samples, self.graders):
                if w["id"] not in self.warnings:
                    fresh.append(w)
                self.warnings[w["id"]] = w
            if fresh or new:
                if fresh:
                    self.run.write_status(warnings=list(self.warnings.values()))
                for w in fresh:
                    log.warning("Guardrail `%s` at RFT step %s: %s %s", w["id"], w["step"], w["message"],
                                w["what_to_do"])
            if fresh and self.stop:
                reason = self._reason(fresh[0], args)
        if self.stop:
            reason = distributed.from_main(reason)  # every rank stops together
        if reason and not self.stop_reason:
            self.stop_reason = reason
            control.should_training_stop = True
            control.should_save = True
        return control

    def _reason(self, w: dict, args) -> str:
        evals = _series(self.history, "eval_reward")
        folder = Path(getattr(args, "output_dir", "") or self.run.checkpoints / "rft")
        if evals and self.keep_best:
            step, score = max(evals, key=lambda se: se[1])
            best = (f"The best checkpoint by eval reward ({score:.3f}) is {folder / f'checkpoint-{step}'} "
                    f"(`rft.keep_best` keeps {self.keep_best}).")
        else:
            best = (f"No eval reward was logged (set `rft.eval_steps` and `rft.keep_best`), so no best checkpoint "
                    f"was chosen; the latest checkpoints are in {folder}.")
        return (f"Stopped by a reward-hacking guardrail (`rft.guardrail_stop`) at RFT step {w['step']}: "
                f"{w['message']} {w['what_to_do']} The adapter at this step is saved in {self.run.adapter}. {best}")
