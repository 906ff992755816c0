"""From a Lab spec to ordinary runs: the Lab's data files (the training pool, its first-N subsets, the held-out
and keep sets) and one RunConfig per method x data size x seed, all under the same budget.

    data = prepare_data(spec, base_cfg, lab_dir / "data")
    arms = plan_arms(spec, base_cfg, data)      # [Arm(method, size, seed, config), ...]

Each arm is the base run file with its own method, seed and training rows, every other setting as the base
run has it (the method's recommended settings). The budget is split evenly between the stages of `sft+rft`.
A seconds budget ends each stage by `max_seconds` (training steps only) with a constant learning rate: a
schedule needs a known step count, which a time budget does not have. An examples budget becomes `max_steps`:
SFT sees `batch_size x grad_accum` rows per step (fewer when the data is smaller than that: examples_per_step),
RFT `batch_size x grad_accum / num_generations` prompts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from graders.errors import ConfigError, DataError

STEP_CAP = 100_000  # max_steps under a seconds budget: the clock ends the stage long before


@dataclass
class Arm:
    method: str
    size: int
    seed: int
    config: object  # RunConfig

    @property
    def key(self) -> str:
        return f"{self.method}|{self.size}|{self.seed}"


@dataclass
class LabData:
    pool: list[dict]  # training rows, in order; size N takes the first N
    subsets: dict[int, str]  # size -> file
    eval: str  # held-out file
    keep: str  # keep file ("" when none)
    notes: list[str]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def prepare_data(spec, base_cfg, folder: Path) -> LabData:
    """The training pool (the spec's `data`, else the base run's `data.train`), the held-out set (the spec's
    `eval`, the base run's `data.eval`, else the pool's last rows, held out before any subset is taken) and the
    first-N subsets for each size."""
    from finetuner.data import read_source

    source = spec.data or base_cfg.resolve(base_cfg.data.train)
    if not source:
        raise ConfigError("The Lab needs training data: set `data` in the Lab spec or `data.train` in its base run.")
    pool = read_source(source, base_cfg.data.split).rows
    notes = []
    eval_source = spec.eval or base_cfg.resolve(base_cfg.data.eval)
    if eval_source:
        eval_path = _write_jsonl(folder / "eval.jsonl", read_source(eval_source).rows)
    else:
        held = max(20, len(pool) // 10)
        if len(pool) < held + 10:
            raise DataError(f"{source} has {len(pool)} rows: too few to hold {held} out and train on the rest. "
                            "Give a separate `eval` file in the Lab spec, or more rows.")
        eval_path = _write_jsonl(folder / "eval.jsonl", pool[-held:])
        pool = pool[:-held]
        notes.append(f"No held-out file was given: the last {held} rows of the data are held out.")
    sizes = spec.sizes or [len(pool)]
    too_big = [n for n in sizes if n > len(pool)]
    if too_big:
        raise DataError(f"The Lab's data has {len(pool)} training rows, fewer than the size(s) {too_big} asked for. "
                        f"Lower `sizes` to at most {len(pool)}, or give more rows.")
    _write_jsonl(folder / "pool.jsonl", pool)  # the Lab's own copy: replanning never needs the original again
    subsets = {n: _write_jsonl(folder / f"train-{n}.jsonl", pool[:n]) for n in sizes}
    keep = _write_jsonl(folder / "keep.jsonl", read_source(spec.keep).rows) if spec.keep else ""
    return LabData(pool=pool, subsets=subsets, eval=eval_path, keep=keep, notes=notes)


def _labelled(row: dict, cfg) -> bool:
    return bool(row.get(cfg.data.completion_column) or row.get(cfg.data.messages_column))


def plan_arms(spec, base_cfg, data: LabData, lab_name: str) -> list[Arm]:
    from finetuner.config import from_dict, to_dict

    graders = base_cfg.graders if spec.graders is None else spec.graders
    if any(m != "sft" for m in spec.methods) and not graders:
        raise ConfigError("RFT learns from graders' scores, and neither the Lab spec nor its base run has any. "
                          "Add `graders` to the spec, or compare `methods: [sft]` only.")
    if any("sft" in m for m in spec.methods) and not all(_labelled(r, base_cfg) for r in data.pool[:max(data.subsets)]):
        raise DataError(f"SFT learns from labelled answers, and some training rows have no "
                        f"`{base_cfg.data.completion_column}` (or `{base_cfg.data.messages_column}`). Label every "
                        f"row, or compare `methods: [rft]` only.")
    tokens = base_cfg.eval.max_new_tokens or (base_cfg.rft.max_completion_length
                                               if any("rft" in m for m in spec.methods) else 0)
    arms = []
    for size in sorted(data.subsets):
        for method in spec.methods:
            for seed in spec.seeds:
                d = to_dict(base_cfg)
                d.update(name=f"lab-{lab_name}-{method.replace('+', '-')}-n{size}-s{seed}", method=method, seed=seed,
                         graders=list(graders))
                d["data"].update(train=data.subsets[size], eval=data.eval, rft_train="", max_rows=0)
                # One answer length for every arm, RFT's own when an arm has RFT (it learned to answer within it):
                # otherwise an SFT-only arm would be scored on longer answers than the others.
                d["eval"] = {"every_steps": spec.eval_every, "rows": spec.eval_rows, "max_new_tokens": tokens}
                _budget(d, method, spec.budget_kind, spec.budget_value, size)
                arms.append(Arm(method, size, seed, from_dict(d, base_dir=base_cfg.base_dir)))
    return arms


def examples_per_step(stage: str, batch_size: int, grad_accum: int, num_generations: int, rows: int | None) -> float:
    """Rows an SFT step trains on (fewer than a batch when the data is smaller: an epoch of 25 rows in batches
    of 32 is one step of 25), or prompts an RFT step answers (`num_generations` completions each)."""
    if stage == "rft":
        return batch_size * grad_accum / num_generations
    if not rows:
        return float(batch_size * grad_accum)
    steps_per_epoch = math.ceil(math.ceil(rows / batch_size) / grad_accum)
    return rows / steps_per_epoch


def _budget(d: dict, method: str, kind: str, value: float, rows: int) -> None:
    stages = {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}[method]
    share = value / len(stages)
    for stage in stages:
        s = d[stage]
        s["logging_steps"] = 1  # every step's time is logged: the Lab's seconds axis is built from them
        s["save_steps"] = STEP_CAP  # an arm is short; checkpoints would only cost time and disk
        if kind == "seconds":
            s.update(max_seconds=share, max_steps=STEP_CAP, lr_scheduler="constant", warmup_ratio=0.0)
        else:
            per_step = examples_per_step(stage, s["batch_size"], s["grad_accum"], s.get("num_generations", 1), rows)
            s.update(max_steps=max(1, math.ceil(share / per_step)), max_seconds=0.0)
