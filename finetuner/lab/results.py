"""The Lab's numbers, read from each arm's run folder (metrics.jsonl, status.json) and put side by side.

    numbers = run_numbers(run, cfg)   # one arm: final held-out score, its curve, seconds, examples, tokens
    table = aggregate(arms)           # per data size and method: mean and spread over seeds

A held-out score is the run's weighted grader score (`heldout/reward`, logged by `eval.every_steps`) divided by
the graders' total weight, so it reads 0..1 like a pass rate. Seconds are training steps only (`time/step_s`
summed, as `max_seconds` counts them); examples are rows seen (SFT) or prompts answered (RFT); tokens are
completion tokens sampled in RFT rollouts (`completions/mean_length` x completions per step), SFT sampling none.
"""

from __future__ import annotations

import statistics


def _stage_steps(rows: list[dict], stage: str) -> list[dict]:
    return sorted((r for r in rows if r.get("stage") == stage and r.get("time/step_s") is not None),
                  key=lambda r: r["step"])


def run_numbers(run, cfg, rows: int | None = None) -> dict:
    """One arm's numbers (`rows`: its training rows, for the rows an SFT step sees); `score` is None when its run
    logged no held-out score or did not finish."""
    from finetuner.evaluation.heldout import REFERENCE_GRADER
    from finetuner.lab.arms import examples_per_step

    metrics = run.metrics()
    weight = sum(float(g.get("weight", 1.0)) for g in (cfg.graders or [REFERENCE_GRADER])) or 1.0
    seconds_at: dict[tuple, float] = {}  # (stage, step) -> training seconds up to the end of that step
    examples_at: dict[tuple, float] = {}
    total_s = total_ex = tokens = 0.0
    for stage in cfg.stages:
        s = getattr(cfg, stage)
        per_step = examples_per_step(stage, s.batch_size, s.grad_accum, getattr(s, "num_generations", 1), rows)
        seconds_at[(stage, 0)], examples_at[(stage, 0)] = total_s, total_ex
        prev = 0
        for r in _stage_steps(metrics, stage):
            window = max(r["step"] - prev, 1)  # time/step_s is the mean over the steps since the last log
            total_s += r["time/step_s"] * window
            total_ex += per_step * window
            if stage == "rft":
                tokens += (r.get("completions/mean_length") or 0.0) * s.batch_size * s.grad_accum * window
            prev = r["step"]
            seconds_at[(stage, r["step"])], examples_at[(stage, r["step"])] = total_s, total_ex
    curve = []
    for r in metrics:
        if r.get("heldout/reward") is None:
            continue
        key = (r.get("stage"), r.get("step", 0))
        # A held-out row follows its step's log row; one without (a stage end between logs) takes the last before.
        known = [k for k in seconds_at if k[0] == key[0] and k[1] <= key[1]]
        at = max(known, key=lambda k: k[1]) if known else None
        curve.append({"stage": key[0], "step": key[1], "score": round(r["heldout/reward"] / weight, 4),
                      "seconds": round(seconds_at[at], 3) if at else 0.0,
                      "examples": round(examples_at[at], 1) if at else 0.0})
    losses = [r["loss"] for r in metrics if r.get("stage") == "sft" and r.get("loss") is not None]
    status = run.read_status()
    return {"run_id": run.id, "sft_loss": round(losses[-1], 4) if losses else None, "state": status.get("state"), "error": status.get("error"),
            "score": curve[-1]["score"] if curve and status.get("state") == "finished" else None,
            "base_score": curve[0]["score"] if curve and curve[0]["step"] == 0 else None,
            "curve": curve, "seconds": round(total_s, 2), "examples": round(total_ex, 1), "tokens": round(tokens),
            "wall_seconds": round((status.get("finished") or 0) - (status.get("started") or 0), 1)
            if status.get("finished") and status.get("started") else None}


def _stats(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "spread": None, "min": None, "max": None, "n": 0}
    return {"mean": round(statistics.fmean(values), 4),
            "spread": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def aggregate(arms: list[dict]) -> dict:
    """{size: {method: {"score": stats, "keep_score": stats, "seconds", "examples", "tokens", "runs"}}}, where each
    arm dict is {"method", "size", "seed", **run_numbers, "keep_score"} and stats hold mean, spread (the standard
    deviation over seeds), min, max and n (seeds that finished)."""
    table: dict = {}
    for arm in arms:
        table.setdefault(arm["size"], {}).setdefault(arm["method"], []).append(arm)
    out = {}
    for size, methods in sorted(table.items()):
        out[size] = {}
        for method, group in methods.items():
            done = [a for a in group if a.get("score") is not None]
            out[size][method] = {
                "score": _stats([a["score"] for a in done]),
                "keep_score": _stats([a.get("keep_score") for a in done]),
                "seconds": _stats([a["seconds"] for a in done])["mean"],
                "examples": _stats([a["examples"] for a in done])["mean"],
                "tokens": _stats([a["tokens"] for a in done])["mean"],
                "sft_loss": _stats([a.get("sft_loss") for a in done])["mean"],  # the last SFT training loss
                "runs": [a["run_id"] for a in group], "failed": [a["run_id"] for a in group if a.get("score") is None],
            }
    return out


def summary_json(table: dict, keep_before: float | None, base_score: float | None) -> dict:
    """The headline (`lab --json`'s last line): one entry per method at the largest data size, plus the sweep."""
    if not table:
        return {"arms": {}, "sweep": {}, "keep_before": keep_before, "base_score": base_score}
    largest = max(table, key=int)  # int or str keys (results.json holds str): 200 is above 50 either way
    arms = {m: {"score": v["score"]["mean"], "spread": v["score"]["spread"], "min": v["score"]["min"],
                "max": v["score"]["max"], "seeds": v["score"]["n"], "seconds": v["seconds"], "examples": v["examples"],
                "tokens": v["tokens"], "keep_score": v["keep_score"]["mean"]}
            for m, v in table[largest].items()}
    sweep = {m: {str(size): {"score": table[size][m]["score"]["mean"], "spread": table[size][m]["score"]["spread"]}
                 for size in table if m in table[size]} for m in table[largest]}
    return {"size": largest, "arms": arms, "sweep": sweep, "keep_before": keep_before, "base_score": base_score}
