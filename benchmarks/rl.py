"""`bench --only rl`: the RL recipes side by side on the built-in model's demo task, in one invocation.

One SFT run teaches the demo's "Answer: N" format (the start every RFT arm shares, merged into a model folder so
each arm trains a fresh adapter from the same weights), then every arm trains the same number of RFT steps,
for each seed, on the demo's prompts with its two graders (correct, format). An arm is a `rft.algorithm` preset
(plus `today`: the settings before presets existed, TRL's defaults with loss_type dapo) with the curriculum off
or on (AdaRFT, difficulty measured from the SFT model's pass rate). The held-out scorer (greedy, 200 problems
never trained on, every EVAL_EVERY steps) gives what each arm reached.

Per arm, over seeds: the held-out accuracy at the end (mean, min-max), the steps until held-out accuracy first
reaches the threshold (the SFT start + THRESHOLD_GAIN; an arm that never reaches it counts as the step budget +
EVAL_EVERY and is marked), the mean share of zero-signal groups (`frac_reward_zero_std`), and seconds (the RFT
stage's wall time, curriculum measurement included). Runs are in-process and sequential, on a shared machine:
seconds move by several percent; accuracy and steps do not depend on the clock.

    python -m benchmarks.rl [--steps 60] [--seeds 0,1,2] [--arms today,grpo,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "arithmetic"
EVAL_EVERY = 10
THRESHOLD_GAIN = 0.05  # held-out accuracy points above the SFT start that count as "reached"
ARMS = {  # name -> rft fields
    "today": {"algorithm": "custom"},
    "grpo": {"algorithm": "grpo"}, "dr_grpo": {"algorithm": "dr_grpo"},
    "dapo": {"algorithm": "dapo"}, "gspo": {"algorithm": "gspo"},
    "today+adarft": {"algorithm": "custom", "curriculum": "adarft"},
    "grpo+adarft": {"algorithm": "grpo", "curriculum": "adarft"},
    "dr_grpo+adarft": {"algorithm": "dr_grpo", "curriculum": "adarft"},
    "dapo+adarft": {"algorithm": "dapo", "curriculum": "adarft"},
    "gspo+adarft": {"algorithm": "gspo", "curriculum": "adarft"},
    # every prompt measured (the default measures 512, for real models' sake), and a gentler target step
    "gspo+adarft-all": {"algorithm": "gspo", "curriculum": "adarft", "curriculum_rows": 2000},
    "gspo+adarft-eta10": {"algorithm": "gspo", "curriculum": "adarft", "curriculum_rows": 2000,
                          "curriculum_eta": 10.0},
    # AdaRFT's own setting, imbalanced data: mostly prompts the SFT start always gets right (skewed_prompts)
    "skewed:gspo": {"algorithm": "gspo", "prompts": "skewed"},
    "skewed:gspo+adarft": {"algorithm": "gspo", "curriculum": "adarft", "prompts": "skewed"},
}
DEFAULT_ARMS = [a for a in ARMS if not a.startswith(("gspo+adarft-", "skewed:"))]  # the rest when named


def _demo() -> dict:
    from finetuner.config import load_config, to_dict

    return to_dict(load_config(EXAMPLE / "run.yaml"))


def _train(data: dict, runs: Path):
    from finetuner.config import from_dict, save_config
    from finetuner.runs import new_run
    from finetuner.training.stages import train_run

    cfg = from_dict(data, base_dir=str(EXAMPLE))
    run = new_run(runs, cfg.name)
    save_config(cfg, run.config_path)
    status = train_run(cfg, run)
    if status.get("state") != "finished":
        raise RuntimeError(f"{cfg.name}: {status.get('state')}: {status.get('error')}")
    return run


def sft_start(runs: Path, sft_steps: int) -> str:
    """The shared start: the demo's SFT (fewer steps), merged into a model folder."""
    from finetuner.runs.export import export_merged

    data = _demo()
    data.update(name="sft-start", method="sft")
    data["sft"].update(max_steps=sft_steps, save_steps=100000)
    data["eval"]["every_steps"] = 0
    return str(export_merged(_train(data, runs)))


PROMPTS = {"demo": EXAMPLE / "prompts.jsonl"}  # bench() adds "skewed" when an arm asks for it


def arm_config(model: str, arm: str, seed: int, steps: int) -> dict:
    data = _demo()
    data.update(name=f"rl-{arm.replace('+', '-').replace(':', '-')}-s{seed}", method="rft", seed=seed)
    data["model"]["name"] = model
    fields = dict(ARMS[arm])
    data["data"].update(train=str(PROMPTS[fields.pop("prompts", "demo")]), rft_train="")
    data["rft"].update(max_steps=steps, logging_steps=1, save_steps=100000, curriculum_rows=512)
    data["rft"].update(fields)
    data["eval"].update(every_steps=EVAL_EVERY, rows=200)
    return data


def zero_signal_remedies(model: str, rows: int = 256, seed: int = 0) -> dict:
    """Share of zero-signal groups (every sample of a prompt scored the same) at the SFT start, without
    training: the demo's settings, then each remedy TRL's public settings allow (a lower / higher temperature,
    more generations per prompt), the curriculum's choice (prompts whose measured difficulty is nearest 50,
    re-sampled with fresh samples so the measurement that chose them does not decide the result), and the
    built-in model before SFT (the case "SFT first" answers)."""
    from finetuner.config import from_dict
    from finetuner.evaluation.grader_check import dry_run_config
    from finetuner.modeling.generate import load_for_inference
    from graders.dryrun import pass_rates

    base = from_dict(arm_config(model, "today", seed, 1), base_dir=str(EXAMPLE))
    pair = load_for_inference(model, None, "none", False)

    def share(temperature: float, k: int, cfg=base, n=rows, seed_=seed, model_pair=pair) -> float:
        cfg.rft.temperature, cfg.seed = temperature, seed_
        return dry_run_config(cfg, rows=n, samples="base", k=k, model_and_tokenizer=model_pair).summary_json()[
            "constant_groups"]

    out = {f"t{t}_g{k}": share(t, k) for t, k in ((0.7, 8), (1.0, 4), (1.0, 8), (1.0, 16), (1.3, 8))}
    # the curriculum's prompts: measured at the demo's settings, the half nearest difficulty 50 re-sampled
    base.rft.temperature = 1.0
    measured = pass_rates(dry_run_config(base, rows=rows, samples="base", k=8, model_and_tokenizer=pair), 0.5)
    near = sorted(range(len(measured)), key=lambda i: abs(measured[i] - 0.5))[:rows // 2]
    # the dry run's rows are the RFT rows in file order (the demo holds out a separate eval file)
    lines = (EXAMPLE / "prompts.jsonl").read_text().splitlines()
    picked = Path(tempfile.mkdtemp()) / "near50.jsonl"
    picked.write_text("\n".join(lines[i] for i in near) + "\n")
    cfg = from_dict({**arm_config(model, "today", seed, 1), "data": {"train": str(picked), "eval_fraction": 0.0}},
                    base_dir=str(EXAMPLE))
    out["curriculum_near_50_t1.0_g8"] = share(1.0, 8, cfg, len(near), seed + 1)
    # and without the SFT start: the built-in model never writes the format, so every group is all zeros
    raw = from_dict(arm_config("tiny", "today", seed, 1), base_dir=str(EXAMPLE))
    out["no_sft_t1.0_g8"] = share(1.0, 8, raw, rows, seed, load_for_inference("tiny", None, "none", False))
    return out


def skewed_prompts(model: str, folder: Path, seed: int = 0, n: int = 600) -> dict:
    """An imbalanced prompt set, AdaRFT's setting: 70 % prompts the SFT start got right in all 8 samples, 15 %
    it never got right, 15 % in between (as far as the demo's 2,000 prompts have them)."""
    import random

    from finetuner.config import from_dict
    from finetuner.evaluation.grader_check import dry_run_config
    from finetuner.modeling.generate import load_for_inference
    from graders.dryrun import pass_rates

    cfg = from_dict(arm_config(model, "today", seed, 1), base_dir=str(EXAMPLE))
    pair = load_for_inference(model, None, "none", False)
    rates = pass_rates(dry_run_config(cfg, rows=2000, samples="base", k=8, model_and_tokenizer=pair), 0.5)
    lines = PROMPTS["demo"].read_text().splitlines()  # the dry run's rows: the RFT rows in file order
    groups = {"always": [i for i, r in enumerate(rates) if r == 1], "never": [i for i, r in enumerate(rates) if r == 0],
              "between": [i for i, r in enumerate(rates) if 0 < r < 1]}
    rng = random.Random(seed)
    want = {"always": int(0.7 * n), "never": int(0.15 * n), "between": n - int(0.7 * n) - int(0.15 * n)}
    picked = {k: rng.sample(v, min(len(v), want[k])) for k, v in groups.items()}
    rows = [lines[i] for k in picked for i in picked[k]]
    rng.shuffle(rows)
    path = folder / "skewed_prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    PROMPTS["skewed"] = path
    return {k: len(v) for k, v in picked.items()}


def summarise(rows: list[dict], start: float | None, steps: int, seconds: float) -> dict:
    """One arm-seed's numbers from its metrics rows. `start`: the held-out accuracy the threshold counts from
    (None: this run's own step-0 score)."""
    held = [(r["step"], r["heldout/correct"]) for r in rows if r.get("stage") == "rft" and "heldout/correct" in r]
    held.sort()
    if not held:
        raise RuntimeError("no held-out scores were logged")
    begin = held[0][1] if start is None else start
    reached = next((s for s, acc in held if acc >= begin + THRESHOLD_GAIN and s > 0), None)
    zero = [r["frac_reward_zero_std"] for r in rows if r.get("stage") == "rft" and "frac_reward_zero_std" in r]
    return {"start": held[0][1], "final": held[-1][1], "best": max(a for _, a in held),
            "steps_to_threshold": reached if reached is not None else steps + EVAL_EVERY, "reached": reached is not None,
            "zero_signal": statistics.mean(zero) if zero else None, "seconds": seconds}


def bench(steps: int, seeds: list[int], arms: list[str], sft_steps: int, runs: Path, say=print) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.time()
    model = sft_start(runs, sft_steps)
    say(f"shared SFT start ({sft_steps} steps) merged in {time.time() - started:.0f} s")
    remedies = zero_signal_remedies(model)
    say("zero-signal groups at the SFT start, by setting: " + ", ".join(f"{k} {v:.1%}" for k, v in remedies.items()))
    if any(ARMS[a].get("prompts") == "skewed" for a in arms):
        mix = skewed_prompts(model, runs)
        say(f"skewed prompts (by the SFT start's pass rate over 8 samples): {mix}")
        remedies["skewed_mix"] = mix
    results: dict[str, list[dict]] = {a: [] for a in arms}
    start_acc = None
    for seed in seeds:  # seed-major, so a partial run still compares every arm
        for arm in arms:
            t0 = time.time()
            run = _train(arm_config(model, arm, seed, steps), runs)
            from finetuner.runs import read_jsonl

            rows = read_jsonl(run.metrics_path)[0]
            one = summarise(rows, start_acc, steps, time.time() - t0)
            start_acc = one["start"] if start_acc is None else start_acc
            results[arm].append(one)
            say(f"  seed {seed} {arm:15s} final {one['final']:.3f}  steps-to-threshold {one['steps_to_threshold']}"
                f"{'' if one['reached'] else ' (not reached)'}  zero-signal {one['zero_signal']:.2f}  "
                f"{one['seconds']:.0f} s")
    table = {arm: _aggregate(rs) for arm, rs in results.items() if rs}
    return {"steps": steps, "seeds": seeds, "sft_steps": sft_steps, "start_accuracy": start_acc, "remedies": remedies,
            "threshold": (start_acc or 0) + THRESHOLD_GAIN, "arms": table, "runs": results,
            "seconds": time.time() - started}


def _aggregate(rs: list[dict]) -> dict:
    finals = [r["final"] for r in rs]
    return {"final_mean": statistics.mean(finals), "final_min": min(finals), "final_max": max(finals),
            "steps_mean": statistics.mean(r["steps_to_threshold"] for r in rs),
            "reached": sum(r["reached"] for r in rs), "n": len(rs),
            "zero_signal": statistics.mean(r["zero_signal"] for r in rs if r["zero_signal"] is not None),
            "seconds": statistics.mean(r["seconds"] for r in rs)}


def markdown(result: dict) -> str:
    lines = [f"RFT {result['steps']} steps from a shared SFT start (held-out accuracy {result['start_accuracy']:.3f}), "
             f"seeds {','.join(map(str, result['seeds']))}; threshold {result['threshold']:.3f}.", "",
             "| arm | held-out accuracy, mean (min-max) | steps to threshold (reached) | zero-signal groups | s |",
             "|---|---|---|---|---|"]
    for arm, a in result["arms"].items():
        lines.append(f"| {arm} | {a['final_mean']:.3f} ({a['final_min']:.3f}-{a['final_max']:.3f}) | "
                     f"{a['steps_mean']:.0f} ({a['reached']}/{a['n']}) | {a['zero_signal']:.1%} | {a['seconds']:.0f} |")
    remedies = {k: v for k, v in (result.get("remedies") or {}).items() if isinstance(v, float)}
    if remedies:
        lines += ["", "Zero-signal groups at the SFT start (no training), by setting: "
                  + ", ".join(f"{k} {v:.1%}" for k, v in remedies.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rl")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sft-steps", type=int, default=80)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS))
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    arms = [x for x in a.arms.split(",") if x]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        print(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(a.steps, [int(s) for s in a.seeds.split(",")], arms, a.sft_steps, Path(tmp))
    print(markdown(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
