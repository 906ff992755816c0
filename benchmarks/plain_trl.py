"""The baseline for `python -m finetuner bench`: the same training as a run file, written as a plain TRL script.

    python benchmarks/plain_trl.py RUN.yaml --out steps.jsonl

It reads the run file as plain YAML and does what anyone would write by hand with TRL: load the model and
tokenizer with transformers, a PEFT LoraConfig, SFTConfig / GRPOConfig with the run's hyper-parameters, the
same data rows, and (for RFT) a plain Python reward function equal to the bench's grader. Nothing from
finetuner or graders is imported, so the comparison measures everything the engine adds: run folder,
callbacks, status writes, the reward bridge and the sandboxed grader pool.

Only the fields the bench sets are read. The one addition to plain TRL is a stopwatch callback that stamps
each logged step (the engine stamps its metrics rows at the same point, in `on_log`), written to --out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import yaml

TINY = Path(__file__).resolve().parent.parent / "finetuner" / "modeling" / "assets" / "tiny"
_FORMAT = re.compile(r"Answer: -?\d+")


def reward(completions, answer, **kwargs):
    """The bench's grader (benchmarks/train.py GRADER) as a plain reward function."""
    out = []
    for completion, expected in zip(completions, answer):
        text = (completion[-1]["content"] if isinstance(completion, list) else completion).strip()
        out.append(1.0 if text == f"Answer: {expected}" else 0.1 if _FORMAT.fullmatch(text) else 0.0)
    return out


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def chat(text: str, role: str) -> list[dict]:
    return [{"role": role, "content": text}]


def precision(device: str) -> dict:
    if device == "cuda":
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16, "activation_checkpointing": True}
    return {"bf16": False, "fp16": False, "activation_checkpointing": False, "dataloader_pin_memory": False,
            "use_cpu": True}


def common(cfg: dict, stage: str, out_dir: str, device: str) -> dict:
    s = cfg[stage]
    return dict(output_dir=f"{out_dir}/{stage}", learning_rate=s["learning_rate"], max_steps=s["max_steps"],
                per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=s.get("grad_accum", 1),
                lr_scheduler_type=s["lr_scheduler"], warmup_steps=s["warmup_ratio"],
                logging_steps=s.get("logging_steps", 1), save_steps=s["save_steps"], save_strategy="steps",
                report_to="none", seed=cfg["seed"], disable_tqdm=True, **precision(device))


def stopwatch(stage: str, rows: list):
    """A callback that stamps every logged training step: (stage, step, wall time, the logged values)."""
    from transformers import TrainerCallback

    class Stopwatch(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" not in logs:  # the closing summary, not a step
                rows.append({"stage": stage, "step": state.global_step, "time": time.time(),
                             **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    return Stopwatch()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="the run's YAML file (the bench writes it)")
    p.add_argument("--out", required=True, help="JSON Lines file: one row per logged step")
    p.add_argument("--work", default=None, help="folder for the trainers' output_dir (default: next to --out)")
    args = p.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    base = Path(args.config).resolve().parent
    work = args.work or str(Path(args.out).resolve().parent / "plain_work")

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = cfg["model"]["name"]
    path = str(TINY) if name == "tiny" else name
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    a = cfg["adapter"]
    lora = LoraConfig(r=a["r"], lora_alpha=a["alpha"], lora_dropout=a["dropout"], target_modules=a["target_modules"],
                      bias="none", task_type="CAUSAL_LM")
    stages = {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}[cfg["method"]]
    rows: list[dict] = []
    for stage in stages:
        watch = stopwatch(stage, rows)
        if stage == "sft":
            data = [{"prompt": chat(r["prompt"], "user"), "completion": chat(r["completion"], "assistant")}
                    for r in read_rows(base / cfg["data"]["train"])]
            trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(data),
                                 peft_config=lora, callbacks=[watch],
                                 args=SFTConfig(**common(cfg, "sft", work, device),
                                                max_length=cfg["model"]["max_length"]))
        else:
            r = cfg["rft"]
            source = cfg["data"].get("rft_train") if cfg["method"] == "sft+rft" else None
            data = [{**row, "prompt": chat(row["prompt"], "user")}
                    for row in read_rows(base / (source or cfg["data"]["train"]))]
            # After SFT the model already carries its adapter, which RFT continues (as the engine does).
            trainer = GRPOTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_list(data),
                                  reward_funcs=[reward], peft_config=None if stage != stages[0] else lora,
                                  callbacks=[watch],
                                  args=GRPOConfig(**common(cfg, "rft", work, device),
                                                  num_generations=r["num_generations"],
                                                  max_completion_length=r["max_completion_length"],
                                                  temperature=r["temperature"], beta=r["beta"],
                                                  loss_type=r["loss_type"]))
        trainer.train()
        model = trainer.model
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(row) + "\n" for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
