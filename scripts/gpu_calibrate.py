"""Calibrate the memory estimate on real architectures: random-weight models of the real shapes, 4-bit QLoRA.

Run on a CUDA machine: `python scripts/gpu_calibrate.py --out DIR [--models 0.5B,Llama-3.2-1B] [--quick]`
(scripts/gpu_check.sh runs it with --quick). No real weights reach the GPU machine, so each model is built
from its published config.json (scripts/gpu_shapes/<name>/config.json) with random weights, saved in bf16 to
a temporary folder with a synthetic tokenizer (token `t<i>` is id i, so random ids round-trip through text),
and loaded back through the project's own `load_model` (NF4, double quantization, bf16 compute). Each case
then trains through the project's own trainer builders with the GPU defaults (paged 8-bit AdamW, gradient
checkpointing, the default LoRA adapter and batch sizes):

  SFT at seq 1024 and 2048 (sft.batch_size 4, random token rows of exactly that length);
  RFT: TRL's GRPO, 8 generations x 256 tokens from a random 128-token prompt (transformers generate, no vLLM),
  a cheap reward with spread so the policy-gradient backward is real.

For each case: torch.cuda.max_memory_allocated (reset after the base model is loaded, so the weights count;
less whatever an earlier case left allocated, reported as leftover_before_gb)
against `finetuner.planning.memory.estimate(...).allocated_gb` for the same RunConfig, their ratio (target
within 15 %: reported, not failed) and optimizer steps per second (the first step, which warms kernels up,
left out). Writes calibration.json and calibration.md into --out; exits non-zero when any case crashes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = Path(__file__).resolve().parent / "gpu_shapes"
# Hub id -> folder under gpu_shapes/; the Hub id is model.name, so the estimate takes the shape from shapes.KNOWN.
MODELS = {
    "Qwen/Qwen2.5-0.5B-Instruct": "Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct": "Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct": "Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct": "Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct": "Llama-3.2-3B-Instruct",
}
# --quick: one model of each family, the two smallest, so gpu_check.sh stays within its time.
QUICK = ["Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"]
SFT_SEQS = (1024, 2048)
RFT_PROMPT, RFT_GENERATIONS, RFT_COMPLETION = 128, 8, 256
TOLERANCE = 0.15  # the estimator's target against the measured peak


# ---- pure parts (tested on CPU: tests/test_gpu_calibrate.py) ----

def select_models(asked: str | None, quick: bool) -> list[str]:
    """Hub ids for --models (comma-separated, each matching the end of an id, e.g. `0.5B` or `Llama-3.2-1B`)."""
    if not asked:
        return list(QUICK if quick else MODELS)
    chosen = []
    for part in (p.strip() for p in asked.split(",") if p.strip()):
        hits = [m for m in MODELS if part.lower() in m.lower()]
        if len(hits) != 1:
            raise SystemExit(f"--models: `{part}` matches {len(hits)} of {', '.join(MODELS)}; name one.")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def run_dict(hub_id: str, mode: str, seq: int, steps: int) -> dict:
    """The RunConfig (as from_dict data) of one case: the project's defaults except length, steps and RFT size."""
    data = {"name": f"calibrate-{mode}-{seq}", "method": mode,
            "model": {"name": hub_id, "quantization": "4bit", "max_length": seq},
            "data": {"train": "random-ids.jsonl"}}
    if mode == "sft":
        data["sft"] = {"max_steps": steps, "save_steps": 10_000}
    else:
        # batch_size x grad_accum = 8 completions per step = one prompt's group of 8 generations
        data["rft"] = {"max_steps": steps, "save_steps": 10_000, "batch_size": RFT_GENERATIONS,
                       "num_generations": RFT_GENERATIONS, "max_completion_length": RFT_COMPLETION,
                       "max_prompt_length": RFT_PROMPT, "use_vllm": "off"}
        # validation asks for a grader; the case rewards with spread_reward instead (no sandbox, no judge)
        data["graders"] = [{"name": "any", "type": "regex", "pattern": "t"}]
    return data


def steps_per_s(step_seconds: list[float]) -> float | None:
    """Optimizer steps per second, leaving out the first step (kernel warm-up, optimizer state allocation)."""
    timed = step_seconds[1:] if len(step_seconds) > 1 else step_seconds
    return round(len(timed) / sum(timed), 3) if timed and sum(timed) > 0 else None


def compare(measured_gb: float, estimate_gb: float) -> dict:
    ratio = measured_gb / estimate_gb if estimate_gb > 0 else None
    return {"measured_gb": round(measured_gb, 3), "estimate_gb": round(estimate_gb, 3),
            "ratio": round(ratio, 3) if ratio is not None else None,
            "within_15pct": bool(ratio is not None and abs(ratio - 1) <= TOLERANCE)}


def markdown_table(rows: list[dict], header: str = "") -> str:
    lines = [header, ""] if header else []
    lines += ["| model | mode | seq | measured GB | estimated GB | ratio | within 15 % | steps/s |",
              "|---|---|---:|---:|---:|---:|:---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['mode']} | {r['seq']} | crashed: {r['error'][:80]} | | | | |")
            continue
        sps = f"{r['steps_per_s']:.2f}" if r.get("steps_per_s") else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['seq']} | {r['measured_gb']:.2f} | {r['estimate_gb']:.2f} "
                     f"| {r['ratio']:.2f} | {'yes' if r['within_15pct'] else 'no'} | {sps} |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps({"meta": meta, "cases": rows}, indent=1) + "\n")
    header = (f"Memory estimate against torch.cuda.max_memory_allocated, 4-bit QLoRA, random weights of the real "
              f"shapes ({meta.get('gpu', '?')}, torch {meta.get('torch', '?')}, {meta.get('date', '?')}). "
              f"GB = GiB (2^30 bytes). RFT: {RFT_GENERATIONS} generations x {RFT_COMPLETION} tokens, prompt "
              f"{RFT_PROMPT}; seq is prompt + completion.")
    (out / "calibration.md").write_text(markdown_table(rows, header))


def synthetic_tokenizer(vocab: int):
    """A word-level tokenizer whose token `t<i>` is id i (the last two are eos and pad): random ids written as
    text come back as the same ids, so TRL's text paths (GRPO prompts) run without a real tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="t0", eos_token=f"t{vocab - 1}",
                                   pad_token=f"t{vocab - 2}")


def random_rows(vocab: int, length: int, n: int, seed: int) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(vocab - 2) for _ in range(length)] for _ in range(n)]  # never eos or pad


def spread_reward(completions, **_):
    """Share of distinct tokens: varies within a group, so GRPO's advantages (and the backward) are not zero."""
    out = []
    for c in completions:
        words = (c if isinstance(c, str) else str(c)).split()
        out.append(len(set(words)) / max(1, len(words)))
    return out


# ---- the GPU path ----

def build_model_folder(hub_id: str, folder: Path) -> float:
    """Random bf16 weights of `hub_id`'s shape (initialised on the GPU: fast), saved with a synthetic tokenizer
    into `folder` for load_model; returns the seconds it took."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    start = time.time()
    config = AutoConfig.from_pretrained(SHAPES / MODELS[hub_id])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="2GB")
    synthetic_tokenizer(config.vocab_size).save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return time.time() - start


class StepTimer:
    """Seconds of each optimizer step, synchronised with the GPU."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                import torch

                torch.cuda.synchronize()
                timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                import torch

                torch.cuda.synchronize()
                timer.seconds.append(time.perf_counter() - timer.start)

        self.seconds: list[float] = []
        self.start = 0.0
        self.callback = _CB()


def run_case(hub_id: str, folder: Path, mode: str, seq: int, steps: int, work: Path) -> dict:
    import torch
    from datasets import Dataset

    from finetuner.config import from_dict
    from finetuner.modeling.load import load_model, lora_config
    from finetuner.planning.memory import GB, estimate
    from finetuner.training.stages import build_grpo_trainer, build_sft_trainer

    cfg = from_dict(run_dict(hub_id, mode, seq, steps))
    props = torch.cuda.get_device_properties(0)
    est = estimate(None, cfg, capacity_gb=props.total_memory / GB, device="cuda",
                   prompt_tokens=RFT_PROMPT if mode == "rft" else None, seq_tokens=seq if mode == "sft" else None,
                   cuda_capability=torch.cuda.get_device_capability(0))
    gc.collect()
    torch.cuda.empty_cache()
    # anything a previous case left on the GPU is not this case's: subtracted from the peak, and reported
    leftover = torch.cuda.memory_allocated() / GB
    model, tok, plan = load_model(str(folder), cfg.model.quantization)
    vocab = model.config.vocab_size
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()  # after loading: the weights are in the peak, as in the estimate
    timer = StepTimer()
    run = SimpleNamespace(checkpoints=work / "checkpoints")
    if mode == "sft":
        rows = random_rows(vocab, seq, cfg.sft.batch_size * (steps + 1), seed=seq)
        data = SimpleNamespace(train=Dataset.from_dict({"input_ids": rows}), eval=None, assistant_only_loss=False)
        trainer = build_sft_trainer(cfg, run, model, tok, data, lora_config(cfg.adapter), plan.device,
                                    [timer.callback])
    else:
        prompts = [" ".join(f"t{i}" for i in r) for r in random_rows(vocab, RFT_PROMPT, steps + 2, seed=7)]
        data = SimpleNamespace(train=Dataset.from_dict({"prompt": prompts}), eval=None)
        bridge = SimpleNamespace(weights=None, reward_funcs=[spread_reward], tag=None)
        trainer = build_grpo_trainer(cfg, run, model, tok, data, lora_config(cfg.adapter), plan.device, bridge,
                                     [timer.callback])
    started = time.time()
    trainer.train()
    measured = torch.cuda.max_memory_allocated() / GB - leftover
    out = {"model": hub_id, "mode": mode, "seq": seq if mode == "sft" else RFT_PROMPT + RFT_COMPLETION,
           **compare(measured, est.allocated_gb), "steps": len(timer.seconds),
           "steps_per_s": steps_per_s(timer.seconds), "step_seconds": [round(s, 3) for s in timer.seconds],
           "train_wall_s": round(time.time() - started, 1), "loaded_4bit": plan.quantize_4bit,
           "optim": est.setup["optim"], "checkpointing": est.setup["checkpointing"],
           "estimate_parts_gb": {k: round(v, 4) for k, v in est.parts.items()},
           "estimate_outside_allocator_gb": round(est.outside_allocator_gb, 4),
           "leftover_before_gb": round(leftover, 4)}
    del trainer, model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def calibrate(hub_id: str, sft_steps: int, rft_steps: int) -> list[dict]:
    """All cases of one model; a crash becomes a row with `error` (and the traceback printed), not an exit."""
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        folder = Path(tmp) / "model"
        try:
            built = build_model_folder(hub_id, folder)
            print(f"{hub_id}: random weights built and saved in {built:.0f} s", flush=True)
        except Exception as err:  # noqa: BLE001 - reported as a crashed row, the run goes on
            traceback.print_exc()
            return [{"model": hub_id, "mode": "build", "seq": 0, "error": f"{type(err).__name__}: {err}"}]
        cases = [("sft", s, sft_steps) for s in SFT_SEQS] + [("rft", RFT_PROMPT + RFT_COMPLETION, rft_steps)]
        for mode, seq, steps in cases:
            try:
                row = run_case(hub_id, folder, mode, seq, steps, Path(tmp) / f"{mode}-{seq}")
            except Exception as err:  # noqa: BLE001 - as above
                traceback.print_exc()
                row = {"model": hub_id, "mode": mode, "seq": seq, "error": f"{type(err).__name__}: {err}"}
                torch.cuda.empty_cache()
            print(json.dumps({k: v for k, v in row.items() if k != "estimate_parts_gb"}), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_calibrate_out", help="folder for calibration.json and calibration.md")
    p.add_argument("--models", default=None, help="comma-separated subset, e.g. 0.5B,Llama-3.2-1B (default: all, "
                   "or the --quick pair)")
    p.add_argument("--quick", action="store_true", help=f"{' and '.join(QUICK)} only (unless --models), 3 SFT "
                   "and 2 RFT steps instead of 5 and 3")
    args = p.parse_args(argv)
    models = select_models(args.models, args.quick)
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: nothing to calibrate.", file=sys.stderr)
        return 2
    sft_steps, rft_steps = (3, 2) if args.quick else (5, 3)
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "models": models, "sft_steps": sft_steps, "rft_steps": rft_steps, "quick": args.quick}
    started, rows = time.time(), []
    for hub_id in models:
        rows += calibrate(hub_id, sft_steps, rft_steps)
        write_results(rows, Path(args.out), {**meta, "wall_s": round(time.time() - started)})  # partial on a kill
    print(markdown_table(rows), flush=True)
    misses = [f"{r['model']} {r['mode']} {r['seq']}" for r in rows if not r.get("error") and not r["within_15pct"]]
    print("Estimate:", "all within 15 %" if not misses else f"outside 15 % for {'; '.join(misses)} (reported, not "
          "a failure)", flush=True)
    crashed = [f"{r['model']} {r['mode']}" for r in rows if r.get("error")]
    print(f"Calibration ({time.time() - started:.0f} s):", "no crash" if not crashed else
          f"CRASHED: {'; '.join(crashed)}", flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
