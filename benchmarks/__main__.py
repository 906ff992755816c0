"""`python -m finetuner bench [--quick] [--out FILE.json] [--only train,graders,ui,rollouts,rl,class]` (which runs
`python -m benchmarks` with the same flags): the project's speed figures, measured side by side in one
invocation, with a short table and one JSON object. The benchmark lives outside the engine: it may import
anything (the engine, the UI's handlers), and nothing in the engine imports it.

- train: steps/s of a launched run (the engine) over a plain TRL script with the same model, data and
  hyper-parameters, for SFT and RFT, and the split of an RFT step into generation / grading / training
  (benchmarks/train.py, benchmarks/plain_trl.py), and the engine's own work per step as a share of a
  plain step (benchmarks/overhead.py). On a CUDA machine it runs on the CPU and on the GPU.
- graders: trivial Python grades/s through the sandbox pool, LLM judge concurrency speed-up against a
  loopback server (benchmarks/bench_graders.py, in its own process); seconds until the sandbox stops a
  runaway grader (benchmarks/sandbox.py).
- rollouts (only with --only): GRPO rollout generation, tokens/s, through the engine's own trainer: plain
  `generate` vs a static cache vs transformers' continuous batching, on the built-in and the real small model,
  with the share of identical greedy outputs (benchmarks/rollouts.py).
- rl (only with --only, about an hour on 2 CPU cores): the `rft.algorithm` presets with the curriculum off and
  on, on the demo task, 3 seeds: held-out accuracy, steps to a threshold, zero-signal groups, seconds
  (benchmarks/rl.py; its table is printed after the main one).
- class (only with --only, about 2 minutes): `python app.py --auth FILE` with 20 signed-in sessions over
  loopback HTTP polling the Monitor, the Runs list, uploading data and testing graders while a run trains:
  p50 / p95 per kind of call, errors, lost runs (benchmarks/class_load.py; its table is printed too).
- ui: `python app.py` to a served page, Launch to the first point in the Monitor's loss chart (the Monitor's
  handler polling the run folder, no browser), the Monitor refresh on 100,000 metric lines
  (benchmarks/ui.py).

The whole default run takes a few minutes on 2 CPU cores; `--quick` runs one short pair (under a minute) and
is what the test uses. Numbers on a shared machine move by several percent: runs are interleaved and
repeated, and the spread is printed with the ratios.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graders.errors import FinetunerError

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("train", "graders", "ui", "rollouts", "rl", "class")
DEFAULT = ("train", "graders", "ui")  # rollouts (~5 min), rl (~1 h) and class (~2 min) run when named in --only

# (key, label, target text, passes(value) or None, format)
TABLE = [
    ("train_ratio_sft", "SFT steps/s, engine / plain TRL", ">= 0.98", lambda v: v >= 0.98, "{:.3f}"),
    ("train_ratio_rft", "RFT steps/s, engine / plain TRL", ">= 0.98", lambda v: v >= 0.98, "{:.3f}"),
    ("engine_overhead_share_sft", "SFT: engine's own work, share of a step", "<= 2 %", lambda v: v <= 0.02,
     "{:.2%}"),
    ("engine_overhead_share_rft", "RFT: engine's own work, share of a step", "<= 2 %", lambda v: v <= 0.02,
     "{:.2%}"),
    ("rft_generation_share", "RFT step: generation share", "", None, "{:.1%}"),
    ("rft_grading_share", "RFT step: grading share (Python grader)", "<= 5 %", lambda v: v <= 0.05, "{:.1%}"),
    ("rft_training_share", "RFT step: training share", "", None, "{:.1%}"),
    ("python_grades_per_s", "Python grades/s (sandbox pool)", ">= 2,000", lambda v: v >= 2000, "{:,.0f}"),
    ("sandbox_cpu_stop_s", "Sandbox: busy grader stopped by cpu_s (s)", "< 3", lambda v: v < 3, "{:.2f}"),
    ("sandbox_c_kill_s", "Sandbox: C loop, signals ignored, killed", "< 10", lambda v: v < 10, "{:.2f}"),
    ("sandbox_crash_batch_s", "Sandbox: 10 crashing rows, batch done (s)", "< 10", lambda v: v < 10, "{:.2f}"),
    ("sandbox_timeout_batch_s", "Sandbox: 8 timing-out rows, batch done (s)", "< 5", lambda v: v < 5, "{:.2f}"),
    ("judge_speedup", "LLM judge, concurrent / one by one", ">= 8x", lambda v: v >= 8, "{:.1f}x"),
    ("app_start_s", "python app.py -> page served (s)", "", None, "{:.1f}"),
    ("launch_to_first_point_s", "Launch -> first plotted point (s)", "", None, "{:.1f}"),
    ("ui_refresh_first_ms_100k", "Monitor first load, 100k lines (ms)", "", None, "{:.0f}"),
    ("ui_refresh_ms_100k", "Monitor refresh, 100k lines (ms)", "< 200", lambda v: v < 200, "{:.0f}"),
]
from benchmarks.rollouts import TABLE_ROWS as _ROLLOUTS  # noqa: E402 - its rows after the rest

from benchmarks.class_load import TABLE_ROWS as _CLASS  # noqa: E402

TABLE += _ROLLOUTS + _CLASS


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(DEFAULT)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        raise FinetunerError(f"--only {text!r}: unknown section {', '.join(unknown) or '(none)'}. Choose from "
                             f"{', '.join(SECTIONS)}, comma-separated, e.g. --only train,ui.")
    return wanted


def machine() -> dict:
    import torch

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _graders(quick: bool) -> dict:
    rows = ["--python-rows", "4000", "--judge-rows", "32"] if quick else []
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_graders.py"), "--json", *rows],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        from benchmarks.train import BenchError

        raise BenchError(f"benchmarks/bench_graders.py failed (exit {proc.returncode}).\n--- end of its output ---\n"
                         + proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _train_keys(t: dict, suffix: str = "") -> dict:
    out = {f"train_ratio_sft{suffix}": t["ratio_sft"]["median"], f"train_ratio_rft{suffix}": t["ratio_rft"]["median"],
           f"rft_generation_share{suffix}": t["anatomy"]["generation"],
           f"rft_grading_share{suffix}": t["anatomy"]["grading"],
           f"rft_training_share{suffix}": t["anatomy"]["training"],
           f"engine_overhead_share_sft{suffix}": t["overhead_share_sft"],
           f"engine_overhead_share_rft{suffix}": t["overhead_share_rft"],
           f"engine_overhead_ms_sft{suffix}": t["overhead"]["sft_ms"],
           f"engine_overhead_ms_rft{suffix}": t["overhead"]["rft_ms"]}
    for stage in ("sft", "rft"):
        r = t[f"ratio_{stage}"]
        out[f"train_ratio_{stage}_spread{suffix}"] = [r["min"], r["max"]]
        for side in ("engine", "plain"):
            out[f"{side}_{stage}_steps_per_s{suffix}"] = t[f"{side}_{stage}_steps_per_s"]
            if f"{side}_{stage}_completion_length" in t:
                out[f"{side}_{stage}_completion_length{suffix}"] = t[f"{side}_{stage}_completion_length"]
    return out


def run_bench(quick: bool = False, out: str | None = None, only: str | None = None, say=print) -> dict:
    sections = parse_only(only)
    started = time.perf_counter()
    info = machine()
    devices = ["cpu"] + (["cuda"] if info["cuda"] else [])
    say(f"Finetuner bench{' (quick)' if quick else ''}: {info['cpu_count']} CPUs"
        + (f", GPU {info['gpu']}" if info["cuda"] else ", no GPU") + f"; sections: {', '.join(sections)}")
    result: dict = {"quick": quick, "machine": info, "devices": devices}
    details: dict = {}
    if "train" in sections:
        from benchmarks.train import bench_training

        for device in devices:
            say(f"train [{device}]: engine (launched run) vs benchmarks/plain_trl.py, interleaved")
            t = bench_training(device, quick, say)
            details[f"train_{device}"] = t
            result.update(_train_keys(t, "" if device == "cpu" else "_cuda"))
    if "graders" in sections:
        say("graders: benchmarks/bench_graders.py")
        g = _graders(quick)
        details["graders"] = g
        result.update(python_grades_per_s=g["python_grades_per_s"], judge_speedup=g["judge_speedup"])
        from benchmarks.sandbox import sandbox_stops

        say("graders: how fast the sandbox stops runaway graders (benchmarks/sandbox.py)")
        details["sandbox"] = sandbox_stops()
        result.update(details["sandbox"])
    if "ui" in sections:
        from benchmarks.train import launch_to_first_point
        from benchmarks.ui import app_start_seconds, monitor_refresh

        say("ui: python app.py -> page served; Launch -> first plotted point; Monitor refresh on 100,000 lines")
        tries = 1 if quick else 2  # the quickest try: the machine at its quietest; every try is in details
        starts = [app_start_seconds() for _ in range(tries)]
        launches = [launch_to_first_point() for _ in range(tries)]
        m = monitor_refresh(ticks=3 if quick else 7)
        details["ui"] = {"app_start_s": starts, "launch_to_first_point_s": launches, "monitor": m}
        result.update(app_start_s=min(starts), launch_to_first_point_s=min(launches), ui_refresh_ms_100k=m["tick_ms"],
                      ui_refresh_first_ms_100k=m["first_ms"], ui_refresh_idle_ms=m["idle_ms"])
    if "rollouts" in sections:
        from benchmarks import rollouts

        say("rollouts: GRPO generation through TimedGRPOTrainer, generate vs static cache vs continuous batching")
        r = rollouts.run(quick)
        details["rollouts"] = r
        result.update(r)
    if "rl" in sections:
        from benchmarks import rl

        say("rl: the rft.algorithm presets, curriculum off and on, on the demo task (benchmarks/rl.py)")
        with tempfile.TemporaryDirectory() as tmp:
            r = (rl.bench(6, [0], ["today", "dapo+adarft"], 20, Path(tmp), say) if quick else
                 rl.bench(100, [0, 1, 2], rl.DEFAULT_ARMS, 80, Path(tmp), say))
        details["rl"] = r
        say(rl.markdown(r))
    if "class" in sections:
        from benchmarks import class_load

        say("class: python app.py --auth FILE, signed-in sessions while a run trains (benchmarks/class_load.py)")
        r = class_load.run(quick, say=say)
        details["class"] = r.pop("class_detail")
        result.update(r)
        say(class_load.markdown({**r, "class_detail": details["class"]}))
    result["details"] = details
    result["seconds"] = time.perf_counter() - started
    say(table(result))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        say(f"Wrote {out}")
    return result


def table(result: dict) -> str:
    cuda = any(k.endswith("_cuda") for k in result)
    head = f"{'measure':<42} {'CPU':>10}" + (f" {'GPU':>10}" if cuda else "") + f"  {'target':<9} ok"
    lines = [head, "-" * len(head)]
    for key, label, target, passes, fmt in TABLE:
        value = result.get(key)
        if value is None and key not in result:
            continue
        cells = [fmt.format(value) if value is not None else "n/a"]
        if cuda:
            gpu = result.get(f"{key}_cuda")
            cells.append(fmt.format(gpu) if gpu is not None else "")
        verdict = "" if passes is None or value is None else ("yes" if passes(value) else "NO")
        lines.append(f"{label:<42} " + " ".join(f"{c:>10}" for c in cells) + f"  {target:<9} {verdict}")
    for stage in ("sft", "rft"):
        spread = result.get(f"train_ratio_{stage}_spread")
        if spread:
            lines.append(f"  {stage.upper()} ratio over {result['details']['train_cpu']['pairs']} pair(s): "
                         f"{spread[0]:.3f}..{spread[1]:.3f}; engine {result[f'engine_{stage}_steps_per_s']:.2f} vs "
                         f"plain {result[f'plain_{stage}_steps_per_s']:.2f} steps/s (median step)"
                         + (f"; mean completion {result['engine_rft_completion_length']:.1f} vs "
                            f"{result['plain_rft_completion_length']:.1f} tokens" if stage == "rft" else ""))
    if "engine_overhead_ms_sft" in result:
        parts = result["details"]["train_cpu"]["overhead"]["parts_ms"]
        lines.append(f"  engine's own work per step: SFT {result['engine_overhead_ms_sft']:.2f} ms (callbacks), RFT "
                     f"{result['engine_overhead_ms_rft']:.2f} ms (callbacks {parts['callbacks_rft']:.2f} + reward "
                     f"bridge and sandbox {parts['reward_bridge_and_sandbox']:.2f} - plain reward "
                     f"{parts['plain_reward']:.2f})")
    lines.append(f"({result['seconds']:.0f} s in all)")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m finetuner bench", description="Finetuner's speed figures.")
    p.add_argument("--quick", action="store_true", help="one short run of each (under a minute), for tests")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as one JSON object")
    p.add_argument("--only", metavar="SECTIONS", help="comma-separated: train, graders, ui, rollouts, rl, class "
                   "(default: train, graders, ui)")
    args = p.parse_args(argv)
    try:
        run_bench(quick=args.quick, out=args.out, only=args.only)
    except FinetunerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
