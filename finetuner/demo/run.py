"""`python -m finetuner demo`: the offline SFT -> RFT demonstration, on the built-in model or a real one.

`--model tiny` (default) runs `examples/arithmetic` (2-digit sums); `--model smollm2-135m` runs `examples/smollm2`
(a number plus a digit, on SmolLM2-135M-Instruct); `--agent` runs `examples/agent` (2-digit products with a calculator
tool, on the built-in tiny-agent: Agent RFT). It launches the example's `run.yaml` exactly as the app would (a child process writing a run folder),
then measures held-out format compliance and accuracy for the base model, after SFT and after RFT, on
problems the model never trained on. With `--json` the last printed line is one JSON object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES_DIR / "arithmetic"
# model -> (example folder, task module name in finetuner.demo: its `evaluate` scores the held-out rows)
DEMOS = {"tiny": (EXAMPLE, "arith"), "smollm2-135m": (EXAMPLES_DIR / "smollm2", "addsmall"),
         "agent": (EXAMPLES_DIR / "agent", "agent_task")}
# What each demo's stages teach, said when it starts.
STORY = {"agent": "SFT shows a few calculator calls, then Agent RFT rewards right answers reached with the tool."}


def _follow(run, started: float) -> dict:
    """Print the run's progress from its folder until it ends (the same files the UI reads)."""
    from finetuner.runs import FINAL_STATES, read_jsonl, refresh_state

    offset, last_print = 0, 0.0
    while True:
        rows, offset = read_jsonl(run.metrics_path, offset)
        status = refresh_state(run)
        if rows and time.time() - last_print > 2:
            last = rows[-1]
            value = (f"reward {last['reward']:.3f}" if last.get("reward") is not None else
                     f"loss {last['loss']:.4f}" if last.get("loss") is not None else "")
            print(f"  {time.time() - started:5.0f}s  {last['stage']} step {last['step']}/{status.get('total', '?')}"
                  f"  {value}", flush=True)
            last_print = time.time()
        if status.get("state") in FINAL_STATES:
            return status
        time.sleep(0.5)


def measure(run, rows: list[dict], cfg=None, task: str = "arith") -> dict:
    """Held-out format and accuracy of the run's base model (`cfg.model`, else the run folder's config) and of
    each stage's adapter, all scored by the same greedy decoding of `finetuner.demo.<task>.evaluate`."""
    import importlib

    from peft import PeftModel

    from finetuner.config import load_config
    from finetuner.modeling.load import load_model

    cfg = cfg or load_config(run.config_path)
    evaluate = importlib.import_module(f"finetuner.demo.{task}").evaluate
    base, tok, _ = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code)
    results = {"base": evaluate(base, tok, rows)}
    model = None
    for stage in ("sft", "rft"):
        path = run.stage_adapter(stage)
        if not path.exists():
            continue
        if model is None:
            model = PeftModel.from_pretrained(base, str(path), adapter_name=stage)
        else:
            model.load_adapter(str(path), adapter_name=stage)
        model.set_adapter(stage)
        results[stage] = evaluate(model, tok, rows)
    return results


def run_demo(runs_dir: str = "runs", as_json: bool = False, rft_steps: int | None = None, model: str = "tiny",
             overrides: dict | None = None, heldout_rows: int | None = None) -> int:
    """Run the demo of `model` (a key of DEMOS). Tests shorten it: `overrides` ({section: {field: value}}) edit the
    run file's config, `heldout_rows` measures only the first rows of eval.jsonl."""
    from finetuner.config import load_config, to_dict, from_dict
    from finetuner.data import read_source
    from finetuner.runs import launch

    if model not in DEMOS:
        raise ValueError(f"No demo for model {model!r}; choose one of {', '.join(DEMOS)}.")
    example, task = DEMOS[model]
    started = time.time()
    cfg = load_config(example / "run.yaml")
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if rft_steps is not None:
        overrides.setdefault("rft", {})["max_steps"] = rft_steps
    if overrides:
        data = to_dict(cfg)
        for section, values in overrides.items():
            data[section].update(values)
        cfg = from_dict(data, base_dir=cfg.base_dir)
    run = launch(cfg, runs_dir)
    story = STORY.get(model, "SFT teaches the 'Answer: N' format, then RFT rewards correct sums.")
    print(f"Demo run {run.path} ({cfg.model.name}): {story}", flush=True)
    status = _follow(run, started)
    if status.get("state") != "finished":
        print(f"The demo run ended {status.get('state')}: {status.get('error')}. See {run.log_path}.")
        return 1
    train_seconds = time.time() - started
    rows = read_source(str(example / "eval.jsonl")).rows[:heldout_rows]
    results = measure(run, rows, cfg, task)
    results = {k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items()}
    summary = {**results, "seconds": round(time.time() - started, 1), "train_seconds": round(train_seconds, 1),
               "heldout_rows": len(rows), "model": cfg.model.name, "run_dir": str(run.path)}
    run.eval_dir.mkdir(exist_ok=True)
    (run.eval_dir / "demo.json").write_text(json.dumps(summary, indent=1))
    print(f"\nHeld-out problems: {len(rows)} (never trained on)")
    tools = any("tool_call_rate" in r for r in results.values())  # the agent demo also counts tool calls
    print(f"{'model':<10}{'format':>10}{'accuracy':>10}" + (f"{'tool calls':>12}" if tools else ""))
    for name in ("base", "sft", "rft"):
        if name in results:
            r = results[name]
            print(f"{name:<10}{r['format']:>10.1%}{r['accuracy']:>10.1%}"
                  + (f"{r.get('tool_call_rate', 0.0):>12.1%}" if tools else ""))
    print(f"Total {summary['seconds']:.0f}s (training {train_seconds:.0f}s). Run folder: {run.path}")
    if as_json:
        print(json.dumps(summary))
    return 0
