"""GPU check: 4-bit (QLoRA) SFT, RFT and SFT->RFT a few steps on the built-in model, through the real engine.

Run on a CUDA machine: `python scripts/gpu_check.py [--out DIR]`. For each case it prints steps per second,
peak GPU memory, what was loaded (4-bit or not) and whether the adapter moved; it exits non-zero on any
failure, and writes gpu_check.json into --out. Also compares 4-bit with full-precision LoRA on the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_data(folder: Path) -> dict:
    from finetuner import arith

    def dump(name, rows):
        path = folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    labelled = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
                for r in arith.rft_rows(256, seed=3)]
    return {"train": dump("train.jsonl", labelled), "eval": dump("eval.jsonl", labelled[:16])}


GRADERS = [
    {"name": "correct", "type": "string_check", "input": "{{sample.output_text}}",
     "reference": "Answer: {{item.answer}}", "operation": "eq"},
    {"name": "format", "type": "regex", "pattern": "^Answer: -?\\d+$", "weight": 0.1},
    # Partial credit with spread inside every group, so RFT from the base model gets a gradient at once
    # (the two checks above score 0 until the format is learnt); it also runs the Python sandbox there.
    {"name": "digits", "type": "python", "weight": 0.5,
     "source": "def grade(sample, item):\n    t = sample['output_text']\n"
               "    return sum(c.isdigit() for c in t) / max(len(t), 1)\n"},
]


def case(name: str, method: str, quantization: str, data: dict, runs: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from finetuner.config import from_dict
    from finetuner.runs import new_run
    from finetuner.train import train_run

    cfg = from_dict({
        "name": name, "method": method, "model": {"name": "tiny", "quantization": quantization, "max_length": 64},
        "data": {"train": data["train"], "eval": data["eval"]}, "graders": GRADERS,
        "sft": {"max_steps": 20, "batch_size": 16, "learning_rate": 1e-3, "save_steps": 1000},
        "rft": {"max_steps": 10, "batch_size": 64, "num_generations": 8, "max_completion_length": 12,
                "learning_rate": 2e-4, "save_steps": 1000, "eval_steps": 5},
    })
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = new_run(runs, name)
    started = time.time()
    status = train_run(cfg, run)
    seconds = time.time() - started
    metrics = run.metrics()
    train_rows = [m for m in metrics if "time/step_s" in m]
    step_s = [m["time/step_s"] for m in train_rows]
    adapter = run.adapter / "adapter_model.safetensors"
    b_norm = (sum(float(v.float().norm()) for k, v in load_file(str(adapter)).items() if "lora_B" in k)
              if adapter.exists() else 0.0)
    out = {
        "case": name, "method": method, "quantization_asked": quantization, "state": status.get("state"),
        "error": status.get("error"), "loaded_as": status.get("quantization"), "device": status.get("device"),
        "steps": len(train_rows), "wall_s": round(seconds, 1),
        "steps_per_s": round(len(step_s) / sum(step_s), 2) if step_s else None,
        "peak_gb": round(max((m.get("memory/peak_gb") or 0) for m in metrics), 4) if metrics else None,
        "first_loss": next((m["loss"] for m in metrics if m.get("loss") is not None), None),
        "last_reward": next((m["reward"] for m in reversed(metrics) if m.get("reward") is not None), None),
        "eval_reward": [m["eval_reward"] for m in metrics if m.get("eval_reward") is not None],
        "adapter_b_norm": round(b_norm, 4),
        "handover_equal": (status.get("handover_sft_end") == status.get("handover_rft_start")
                           if method == "sft+rft" else None),
    }
    ok = (out["state"] == "finished" and b_norm > 0 and out["device"] == "cuda"
          and (out["loaded_as"] == "4bit") == (quantization in ("auto", "4bit"))
          and out["handover_equal"] is not False)
    out["ok"] = ok
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=None, help="folder for gpu_check.json")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: nothing to check.", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp)
        results = [case("sft-4bit", "sft", "auto", data, tmp / "runs"),
                   case("sft-bf16", "sft", "none", data, tmp / "runs"),
                   case("rft-4bit", "rft", "auto", data, tmp / "runs"),
                   case("sftrft-4bit", "sft+rft", "4bit", data, tmp / "runs")]
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(results, indent=1))
    failed = [r["case"] for r in results if not r["ok"]]
    print("GPU check:", "all passed" if not failed else f"FAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
