"""AdaRFT's curriculum (Shi et al. 2025, arXiv 2504.05520) for the RFT stage: `rft.curriculum: adarft`.

Every prompt has a difficulty d in [0, 100] (`difficulty_of`: a data column rescaled, or measured as 100 x (1 -
pass rate) of K samples of the model that starts RFT, with the Graders tab's own dry run). A target T starts at
`curriculum_start` and after every training batch moves with the batch's pass rate R:

    T <- clip(T + eta * tanh(alpha * (R - beta)), 0, 100)

and each batch takes the prompts whose difficulty is closest to T (ties broken at random, so prompts of one
level take turns). R is the pass rate (a completion passes when its total reaches `rft.pass_threshold` of what
the graders can give), so beta = 0.5 steers to prompts the model gets half right, where GRPO's groups differ
most. The sampler replaces TRL's RepeatSampler (same layout: each prompt `num_generations` times, the block
repeated for reuse); the update comes from the reward bridge once a batch is graded. The data loader reads one
batch ahead, so a batch is chosen with the T of the step before last: the rule lags one step.

The state (T, steps) goes into each checkpoint as `curriculum.json`; a resume continues from it.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

from graders.dryrun import pass_share, total_range
from graders.errors import ConfigError

log = logging.getLogger("finetuner.training.curriculum")

COLUMN = "curriculum_difficulty"  # added to the RFT rows, so each graded batch says how hard it was
STATE_FILE = "curriculum.json"
D_MIN, D_MAX = 0.0, 100.0


class AdaRFT:
    """The target difficulty and the rule that moves it. Pure: no model, no trainer."""

    def __init__(self, difficulty: list[float], batch_prompts: int, *, start=0.0, target_reward=0.5, alpha=2.0,
                 eta=50.0, seed=0):
        if not difficulty:
            raise ConfigError("The curriculum has no prompts with a difficulty.")
        self.difficulty = [float(d) for d in difficulty]
        self.batch_prompts = min(batch_prompts, len(self.difficulty))
        self.target, self.target_reward, self.alpha, self.eta = float(start), target_reward, alpha, eta
        self.steps = 0
        self._rng = random.Random(seed)

    def next_batch(self) -> list[int]:
        """The `batch_prompts` prompts closest to the target, ties in random order."""
        order = sorted(range(len(self.difficulty)),
                       key=lambda i: (abs(self.difficulty[i] - self.target), self._rng.random()))
        return order[:self.batch_prompts]

    def update(self, reward: float) -> float:
        """Move the target after a batch whose mean pass rate was `reward` (0..1). Returns the new target."""
        step = self.eta * math.tanh(self.alpha * (reward - self.target_reward))
        self.target = min(D_MAX, max(D_MIN, self.target + step))
        self.steps += 1
        return self.target

    def state_dict(self) -> dict:
        return {"target": self.target, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.target, self.steps = float(state["target"]), int(state["steps"])


class CurriculumSampler:
    """TRL's RepeatSampler layout, with prompts chosen by the curriculum as the loader asks for them."""

    def __init__(self, curriculum: AdaRFT, num_generations: int, repeat_count: int, batches_per_epoch: int):
        self.curriculum, self.num_generations, self.repeat_count = curriculum, num_generations, repeat_count
        self.batches_per_epoch = batches_per_epoch

    def __iter__(self):
        for _ in range(self.batches_per_epoch):
            chosen = self.curriculum.next_batch()  # drawn now, when the loader needs the batch, not up front
            for _ in range(self.repeat_count):
                for index in chosen:
                    for _ in range(self.num_generations):
                        yield index

    def __len__(self) -> int:
        return self.batches_per_epoch * self.repeat_count * self.curriculum.batch_prompts * self.num_generations


class CurriculumListener:
    """Feeds the curriculum from the reward bridge: each graded training batch's pass rate moves the target,
    and the batch's difficulty, pass rate and the target go to the step's metrics (TRL's log_metric)."""

    def __init__(self, curriculum: AdaRFT, graders, threshold: float):
        self.curriculum, self.threshold = curriculum, threshold
        self.span, self.weights = total_range(graders), [g.weight for g in graders]

    def __call__(self, rows, items, tag, log_metric) -> None:
        if tag.get("split") == "eval" or not rows:
            return
        passed = [pass_share(r["total"], self.span, self.weights) >= self.threshold for r in rows]
        rate = sum(passed) / len(passed)
        levels = [float(i[COLUMN]) for i in items if isinstance(i, dict) and i.get(COLUMN) is not None]
        used = self.curriculum.target
        self.curriculum.update(rate)
        if log_metric is not None:
            log_metric("curriculum/pass_rate", rate)
            log_metric("curriculum/target", used)
            log_metric("curriculum/next_target", self.curriculum.target)
            if levels:
                log_metric("curriculum/difficulty", sum(levels) / len(levels))


def rescale(values: list, column: str) -> list[float]:
    """A difficulty column to 0 (easiest) .. 100 (hardest); refuses text and a column without spread."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        bad = next(v for v in values if not _is_number(v))
        raise ConfigError(f"Column `{column}` (rft.difficulty_column) holds {bad!r}; the curriculum needs a "
                          f"number per row. Fix the column, or set `rft.difficulty: measured`.") from None
    lo, hi = min(numbers), max(numbers)
    if hi <= lo:
        raise ConfigError(f"Every row's `{column}` is {lo:g}: a curriculum needs easier and harder prompts. Set "
                          f"`rft.difficulty: measured` to measure them, or `rft.curriculum: none`.")
    return [100.0 * (v - lo) / (hi - lo) for v in numbers]


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def save_state(curriculum: AdaRFT, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps(curriculum.state_dict()))


def load_state(curriculum: AdaRFT, folder: Path | None) -> bool:
    """Restore the target from a checkpoint folder; False when it has none (a run saved before the curriculum)."""
    path = folder / STATE_FILE if folder else None
    if path is None or not path.exists():
        return False
    curriculum.load_state_dict(json.loads(path.read_text()))
    return True


def source(cfg, data) -> tuple[str, list[float] | None]:
    """(`column` or `measured`, the column's difficulties rescaled or None): where this run's difficulty comes
    from. A column that is missing, holds text or has no spread is refused here, before any weights load
    (stages._prepare calls this)."""
    r = cfg.rft
    chosen = r.difficulty
    if chosen == "auto":
        chosen = "column" if r.difficulty_column in data.train.column_names else "measured"
    if chosen == "column":
        if r.difficulty_column not in data.train.column_names:
            raise ConfigError(f"`rft.difficulty` is `column` but the RFT data has no column `{r.difficulty_column}` "
                              f"(it has: {', '.join(data.train.column_names)}). Name the column in "
                              f"`rft.difficulty_column`, or set `rft.difficulty: measured`.")
        return chosen, rescale(data.train[r.difficulty_column], r.difficulty_column)
    return chosen, None


def prepare(cfg, run, data, model, tok, resume: bool) -> AdaRFT:
    """Give every RFT training row its difficulty (column COLUMN, in `data.train`) and return the curriculum.
    Measured difficulty is measured once per run (kept in the run folder, so a resume does not measure again)
    and the curriculum then draws only from the measured rows."""
    r = cfg.rft
    kind, difficulty = source(cfg, data)
    if kind == "column":
        log.info("Curriculum: difficulty of %d prompts from column `%s`.", len(difficulty), r.difficulty_column)
    else:
        difficulty = _measured(cfg, run, model, tok, data, resume)
        data.train = data.train.select(range(len(difficulty)))
    if COLUMN in data.train.column_names:
        data.train = data.train.remove_columns(COLUMN)
    data.train = data.train.add_column(COLUMN, difficulty)
    batch_prompts = max(1, r.batch_size * r.grad_accum // r.num_generations)
    return AdaRFT(difficulty, batch_prompts, start=r.curriculum_start, target_reward=r.curriculum_target_reward,
                  alpha=r.curriculum_alpha, eta=r.curriculum_eta, seed=cfg.seed)


def _measured(cfg, run, model, tok, data, resume: bool) -> list[float]:
    """100 x (1 - pass rate) of `curriculum_samples` samples per prompt, by the model as RFT starts (after SFT in
    sft+rft), graded by the run's graders through the Graders tab's dry run."""
    import time

    from graders.dryrun import pass_rates

    from finetuner.evaluation.grader_check import dry_run_config

    r = cfg.rft
    saved = run.path / "curriculum_difficulty.json"
    if resume and saved.exists():
        return json.loads(saved.read_text())["difficulty"]
    started, was_training = time.time(), model.training
    model.eval()
    try:
        report = dry_run_config(cfg, rows=r.curriculum_rows, samples="base", k=r.curriculum_samples,
                                model_and_tokenizer=(model, tok), data=data)  # the rows already loaded
    finally:
        model.train(was_training)
    rates = pass_rates(report, r.pass_threshold)
    difficulty = [100.0 * (1.0 - p) for p in rates]
    mean = sum(rates) / len(rates) if rates else 0.0
    saved.write_text(json.dumps({"difficulty": difficulty, "pass_rate": mean, "samples": r.curriculum_samples}))
    run.write_status(start_pass_rate=mean)
    log.info("Curriculum: measured the difficulty of %d prompts (%d samples each) in %.0f s; mean pass rate "
             "%.0f%%, %d never passed, %d always passed.", len(rates), r.curriculum_samples, time.time() - started,
             100 * mean, sum(1 for p in rates if p == 0), sum(1 for p in rates if p == 1))
    return difficulty


def save_callback(curriculum: AdaRFT):
    """A TrainerCallback writing the curriculum's state into every checkpoint TRL saves."""
    from transformers import TrainerCallback

    class _SaveCurriculum(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_state(curriculum, folder)

    return _SaveCurriculum()
