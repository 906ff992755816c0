"""Training-path benchmark for `python -m finetuner bench`: the engine against a plain TRL script.

Both sides train the same run file (SFT then RFT on the built-in model, one Python grader) in a fresh
child process: the engine through `runs.launch` (run folder, callbacks, status writes, the reward bridge,
the sandboxed grader pool, exactly as the app launches a run), the baseline through
`benchmarks/plain_trl.py`. Runs alternate engine / plain and repeat, because two shared cores drift by
several percent within a minute. Speed is read from the wall-clock stamp of each logged step (both sides
log every step and stamp it in `on_log`), after the first WARMUP steps of each stage, so model loading and
first-call costs are excluded the same way on both sides. A run's steps/s is 1 / its median step time
(robust to pauses caused by other processes), and THE ratio is the median over interleaved pairs of
engine / plain steps/s (see `bench_training`). Separately, benchmarks/overhead.py times the engine's own
per-step work in milliseconds: a cost, reported as such, not a second ratio.

`launch_to_first_point` (for the UI figures) launches the same run and times Launch -> the first point in the
Monitor's loss figure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graders.errors import FinetunerError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "arithmetic"
PLAIN = ROOT / "benchmarks" / "plain_trl.py"
WARMUP = {"sft": 5, "rft": 3}  # logged steps of each stage left out of the speed

# The bench's one grader; benchmarks/plain_trl.py has the same rule as a plain reward function.
GRADER = """import re

def grade(sample, item):
    text = sample["output_text"].strip()
    if text == "Answer: " + item["answer"]:
        return 1.0
    return 0.1 if re.fullmatch(r"Answer: -?\\d+", text) else 0.0
"""


class BenchError(FinetunerError):
    """A benchmark step failed; the message carries the end of the failing process's log."""


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a log that lives in a temporary folder about to be deleted, for the error message."""
    try:
        return "\n--- end of its log ---\n" + Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def bench_config(sft_steps: int, rft_steps: int) -> dict:
    """The run both sides train: the demo's task and hyper-parameters, every step logged, no checkpoints."""
    return {
        "name": "bench", "method": "sft+rft", "seed": 0,
        # `none`: full-precision weights on CPU and GPU alike, so the plain script needs no bitsandbytes.
        "model": {"name": "tiny", "max_length": 64, "quantization": "none"},
        "data": {"train": str(EXAMPLE / "train.jsonl"), "rft_train": str(EXAMPLE / "prompts.jsonl"),
                 "eval_fraction": 0.0},
        "graders": [{"name": "answer", "type": "python", "source": GRADER}],
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": sft_steps, "batch_size": 32, "learning_rate": 1e-3, "lr_scheduler": "constant",
                "warmup_ratio": 0.0, "save_steps": 100000, "logging_steps": 1},
        "rft": {"max_steps": rft_steps, "batch_size": 64, "num_generations": 8, "max_completion_length": 12,
                "temperature": 1.0, "beta": 0.0, "algorithm": "custom", "loss_type": "dapo", "learning_rate": 2e-4,
                "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_steps": 100000, "logging_steps": 1},
    }


def _env(device: str) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TOKENIZERS_PARALLELISM": "false"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU comparison on a GPU machine
    return env


def _step_rows(rows: list[dict], stage: str) -> list[dict]:
    return [r for r in rows if r.get("stage") == stage and "train_runtime" not in r
            and not any(k.startswith("eval_") for k in r) and isinstance(r.get("time"), (int, float))]


def speed(rows: list[dict], stage: str) -> dict:
    """Steps/s of one run's stage over its logged steps after the warm-up."""
    steps = _step_rows(rows, stage)[WARMUP[stage]:]
    gaps = [b["time"] - a["time"] for a, b in zip(steps, steps[1:]) if b["step"] > a["step"]]
    if not gaps:
        raise BenchError(f"{stage}: only {len(steps)} logged steps after the warm-up, too few to time.")
    out = {"steps_per_s": 1 / statistics.median(gaps), "steps": len(gaps), "gaps": gaps}
    lengths = [r["completions/mean_length"] for r in steps if isinstance(r.get("completions/mean_length"), float)]
    if lengths:
        out["mean_completion_length"] = statistics.mean(lengths)
    return out


def anatomy(rows: list[dict]) -> dict:
    """Share of an RFT step spent generating, grading and training (the engine's own per-step split)."""
    steps = _step_rows(rows, "rft")[WARMUP["rft"]:]
    total = sum(r.get("time/step_s") or 0.0 for r in steps)
    if not total:
        raise BenchError("rft: the engine logged no time/step_s in metrics.jsonl, so the step cannot be split.")
    part = {k: sum(r.get(f"time/{k}_s") or 0.0 for r in steps) / total for k in ("generation", "grading", "training")}
    # The raw per-step times, kept in the JSON so a test can check the split against the wall clock.
    raw = [{"step_s": b.get("time/step_s"), "gap_s": b["time"] - a["time"],
            **{f"{k}_s": b.get(f"time/{k}_s") or 0.0 for k in ("generation", "grading", "training")}}
           for a, b in zip(steps, steps[1:]) if b["step"] > a["step"]]
    return {"generation": part["generation"], "grading": part["grading"], "training": part["training"],
            "step_s": total / len(steps), "steps": raw}


def _read_jsonl(path: Path) -> list[dict]:
    from finetuner.runs import read_jsonl

    return read_jsonl(path)[0]


def run_plain(config_path: Path, work: Path, device: str, timeout: float) -> list[dict]:
    out = work / "plain.jsonl"
    with open(work / "plain.log", "wb") as log:
        proc = subprocess.run([sys.executable, str(PLAIN), str(config_path), "--out", str(out)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, env=_env(device), timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"benchmarks/plain_trl.py failed (exit {proc.returncode})." + log_tail(work / "plain.log"))
    return _read_jsonl(out)


def run_engine(config_path: Path, runs_dir: Path, device: str, timeout: float) -> list[dict]:
    """Launch the run as the app does and wait for it; its metrics rows."""
    from finetuner.config import load_config
    from finetuner.runs import FINAL_STATES, force_stop, launch, refresh_state

    run = launch(load_config(config_path), runs_dir, extra_env=_env(device))
    deadline = time.time() + timeout
    while (status := refresh_state(run)).get("state") not in FINAL_STATES:
        if time.time() > deadline:
            force_stop(run)
            raise BenchError(f"The engine's bench run did not finish within {timeout:.0f} s; is the machine "
                             f"very busy? Run the bench again when it is quieter." + log_tail(run.log_path))
        time.sleep(0.5)
    if status.get("state") != "finished":
        raise BenchError(f"The engine's bench run {status.get('state')}: {status.get('error')}"
                         + log_tail(run.log_path))
    return _read_jsonl(run.metrics_path)


def launch_to_first_point(timeout: float = 300) -> float:
    """Seconds from `runs.launch` of the bench run to a point in the Monitor's loss figure, polled as the
    Monitor reads a run folder (its handler, no browser); the run is then killed."""
    import yaml

    from finetuner.config import load_config
    from finetuner.runs import force_stop, launch
    from finetuner.ui import tab_monitor
    from finetuner.ui.context import AppContext

    with tempfile.TemporaryDirectory(prefix="finetuner-bench-launch-") as tmp:
        config_path = Path(tmp) / "run.yaml"
        config_path.write_text(yaml.safe_dump(bench_config(20, 5), sort_keys=False))
        ctx = AppContext(Path(tmp) / "runs")
        cfg = load_config(config_path)
        started = time.perf_counter()
        run = launch(cfg, ctx.runs_dir, extra_env=_env("cpu"))
        try:
            while time.perf_counter() - started < timeout:
                # A stat per poll until metrics.jsonl has a line, then the Monitor's own view of the run.
                if run.metrics_path.exists() and run.metrics_path.stat().st_size:
                    out = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0), force=True)
                    if any(t.x is not None and len(t.x) for t in out["loss"].data):
                        return time.perf_counter() - started
                time.sleep(0.05)
            raise BenchError(f"No point was plotted within {timeout:.0f} s of Launch." + log_tail(run.log_path))
        finally:
            force_stop(run)


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def bench_training(device: str = "cpu", quick: bool = False, say=print) -> dict:
    """Alternate engine / plain runs; the ratios (engine / plain steps/s) per stage, with their spread."""
    pairs, sft_steps, rft_steps = (1, 12, 8) if quick else (4, 60, 40)
    timeout = 300 if device == "cpu" else 600
    results = {"engine": [], "plain": []}
    anatomies = []
    with tempfile.TemporaryDirectory(prefix="finetuner-bench-") as tmp:
        tmp = Path(tmp)
        import yaml

        config_path = tmp / "run.yaml"
        config_path.write_text(yaml.safe_dump(bench_config(sft_steps, rft_steps), sort_keys=False))
        for i in range(pairs):
            # Alternate which side goes first, so a slow drift of the machine does not favour one side.
            order = ("engine", "plain") if i % 2 == 0 else ("plain", "engine")
            for side in order:
                t0 = time.perf_counter()
                if side == "engine":
                    rows = run_engine(config_path, tmp / "runs", device, timeout)
                    anatomies.append(anatomy(rows))
                else:
                    work = tmp / f"plain{i}"
                    work.mkdir()
                    rows = run_plain(config_path, work, device, timeout)
                run = {stage: speed(rows, stage) for stage in ("sft", "rft")}
                results[side].append(run)
                say(f"  [{device}] run {i + 1}/{pairs} {side:<6}: SFT {run['sft']['steps_per_s']:6.2f} steps/s, "
                    f"RFT {run['rft']['steps_per_s']:5.2f} steps/s ({time.perf_counter() - t0:.0f} s)")
    out: dict = {"device": device, "pairs": pairs, "sft_steps": sft_steps, "rft_steps": rft_steps,
                 "warmup_steps": dict(WARMUP)}
    # The one headline ratio: per pair, engine / plain steps/s from each run's median step; the median over
    # pairs. Each pair ran back to back, so it shares the machine's state of the moment, and the median step
    # ignores pauses from other processes without discarding most steps. (The mean step time let one pause
    # decide; the pooled fastest quarter kept a quarter of the steps and compared runs made minutes apart;
    # the ratio "implied" by the engine's own work was an estimate, not a measurement of runs.)
    out["runs"] = {side: [{stage: {"gaps": r[stage]["gaps"]} for stage in ("sft", "rft")} for r in results[side]]
                   for side in results}  # the raw step times, so the ratio can be recomputed from the JSON
    for stage in ("sft", "rft"):
        ratios = [e[stage]["steps_per_s"] / p[stage]["steps_per_s"]
                  for e, p in zip(results["engine"], results["plain"])]
        out[f"ratio_{stage}"] = _summary(ratios)
        for side in ("engine", "plain"):
            out[f"{side}_{stage}_steps_per_s"] = statistics.median(r[stage]["steps_per_s"] for r in results[side])
            lengths = [r[stage].get("mean_completion_length") for r in results[side]]
            if None not in lengths:  # RFT: both sides should sample answers of the same length
                out[f"{side}_{stage}_completion_length"] = statistics.mean(lengths)
    out["anatomy"] = {k: statistics.median(a[k] for a in anatomies) for k in anatomies[0] if k != "steps"}
    out["anatomy"]["steps"] = [s for a in anatomies for s in a["steps"]]
    # The engine's own per-step work, timed in this process: far steadier than whole runs on shared cores.
    from benchmarks.overhead import engine_overhead

    over = engine_overhead(GRADER, plain_reward(), quick)
    out["overhead"] = over
    for stage in ("sft", "rft"):  # that work as a share of a plain step: what it costs, not a measured ratio
        out[f"overhead_share_{stage}"] = over[f"{stage}_ms"] * out[f"plain_{stage}_steps_per_s"] / 1000
    return out


def plain_reward():
    """The baseline's reward function, from benchmarks/plain_trl.py (a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_trl", PLAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward
