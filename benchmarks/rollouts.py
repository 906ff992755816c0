"""Rollout generation speed for `python -m benchmarks`: TRL's in-process generation engines side by side.

Generation is the largest share of an RFT step on CPU (issue 13), so this measures the engines TRL 1.16 can
use without vLLM, through the real GRPO path: for each engine a TimedGRPOTrainer (the engine's own trainer
class) is built from a GRPOConfig with that engine's settings, a LoRA adapter and the demo's prompt shape, and
its own `_generate` (the method the training loop calls for each generation batch) is timed. Generated tokens
are the completion lengths `_generate` returns (cut at EOS, as GRPO trains on them).

- `generate`: TRL's default, `model.generate` on a left-padded batch (dynamic KV cache).
- `static`: the same with `cache_implementation="static"` (TRL passes it to the GenerationConfig; TRL also
  sets `disable_compile=True`, so the static cache runs uncompiled).
- `cb`: `use_transformers_continuous_batching=True`, transformers' continuous batching / paged attention
  `generate_batch`, with a cache sized for the batch (`cb_config`): left to itself it sizes the paged cache
  and 8,192-token batches from free device memory x TRL's max_memory_percent 0.5, i.e. half the host RAM on
  CPU, and a rollout of the built-in model took 10-18 s instead of about 1 s.

Engines alternate within each repetition (generate, static, cb, generate, ...) and repeat, so a pause caused
by another process on the shared cores hits one sample, not one engine; medians and the spread are reported.
Correctness: greedy trainers (`generation_kwargs={"do_sample": False}`) of each engine generate for the same
prompts and the share of completions whose token ids equal `generate`'s is reported.
Torch runs on THREADS threads so the measurement stays modest on a shared 2-core machine.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "examples" / "arithmetic" / "prompts.jsonl"
THREADS = 1
ENGINES = ("generate", "static", "cb")

# name -> (model, prompts, num_generations, max_completion_length); tiny = the demo's RFT generation batch;
# smollm2 at 16 tokens: 32 at 1 thread made the full run ~7 min on the shared machine, for the same ratios.
SHAPES = {"tiny": ("tiny", 8, 8, 12), "smollm2": ("smollm2-135m", 4, 8, 16)}


def cb_config(completions: int, max_completion_length: int, max_prompt_tokens: int = 96) -> dict:
    """A paged cache sized for one generation batch, synchronous (no second buffer): enough pages for every
    request's prompt + completion, all requests in one batch."""
    page = 32
    pages_per_request = math.ceil((max_prompt_tokens + max_completion_length) / page)
    return {"page_size": page, "num_blocks": completions * pages_per_request + 8,
            "max_batch_tokens": 2048, "max_requests_per_batch": completions, "use_async_batching": False}


def engine_args(engine: str, completions: int, max_completion_length: int) -> dict:
    """The GRPOConfig kwargs that select an engine (the ones a config field would pass)."""
    if engine == "static":
        return {"cache_implementation": "static"}
    if engine == "cb":
        return {"use_transformers_continuous_batching": True,
                "transformers_continuous_batching_config": cb_config(completions, max_completion_length)}
    return {}


def _prompts(n: int) -> list:
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()][:n]
    return [[{"role": "user", "content": r["prompt"]}] for r in rows]


def _zero_reward(completions, **_):
    return [0.0] * len(completions)


def build(shape: str, engine: str, greedy: bool = False):
    """A TimedGRPOTrainer for `shape` generating with `engine`, as the engine builds one for RFT on CPU."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import GRPOConfig

    from finetuner.modeling.load import load_model
    from finetuner.training.timed_grpo import TimedGRPOTrainer

    name, n_prompts, n_gen, max_len = SHAPES[shape]
    set_seed(0)  # same LoRA init for every engine (B = 0, so the adapter starts as the base model anyway)
    model, tok, _ = load_model(name, quantization="none")
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-rollouts-"), per_device_train_batch_size=n_prompts * n_gen,
        num_generations=n_gen, max_completion_length=max_len, temperature=1.0, max_steps=1, report_to="none",
        disable_tqdm=True, log_completions=False, use_cpu=True, bf16=False, fp16=False,
        dataloader_pin_memory=False, generation_kwargs={"do_sample": False} if greedy else None,
        **engine_args(engine, n_prompts * n_gen, max_len))
    data = Dataset.from_list([{"prompt": p} for p in _prompts(n_prompts)])
    trainer = TimedGRPOTrainer(
        model=model, reward_funcs=[_zero_reward], args=args, train_dataset=data, processing_class=tok,
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"))
    trainer.model.train()  # rollouts are generated in training mode inside the loop
    return trainer


def batch_prompts(shape: str) -> list:
    """One generation batch: each prompt repeated num_generations times, as TRL's sampler lays it out."""
    _, n_prompts, n_gen, _ = SHAPES[shape]
    return [p for p in _prompts(n_prompts) for _ in range(n_gen)]


def rollout(trainer, prompts: list) -> tuple[float, int, list]:
    """(seconds, generated tokens, completion ids) of one generation batch through the trainer's `_generate`."""
    start = time.perf_counter()
    out = trainer._generate(prompts)  # (prompt_ids, completion_ids, ...) as GRPO consumes them
    seconds = time.perf_counter() - start
    completion_ids = [list(c) for c in out[1]]
    return seconds, sum(len(c) for c in completion_ids), completion_ids


def _spread(values: list[float]) -> float:
    """(max - min) / median: the relative spread of the repetitions."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def measure(shape: str, reps: int) -> dict:
    """Median tokens/s of each engine over `reps` interleaved rollouts (one untimed warm-up each), the spread,
    and the greedy agreement with `generate`. An engine that fails records its error instead."""
    out: dict = {}
    prompts = batch_prompts(shape)
    trainers, samples = {}, {}
    for engine in ENGINES:
        try:
            trainers[engine] = build(shape, engine)
            rollout(trainers[engine], prompts)  # warm-up: first-call allocations, thread start
            samples[engine] = []
        except Exception as err:  # a benchmark reports an unusable engine rather than stopping
            out[f"rollout_error_{engine}_{shape}"] = f"{type(err).__name__}: {err}"[:500]
    for _ in range(reps):
        for engine in list(trainers):
            try:
                seconds, tokens, _ = rollout(trainers[engine], prompts)
                samples[engine].append(tokens / seconds)
            except Exception as err:
                out[f"rollout_error_{engine}_{shape}"] = f"{type(err).__name__}: {err}"[:500]
                del trainers[engine]
    trainers.clear()
    gc.collect()
    for engine, values in samples.items():
        if values:
            out[f"rollout_tok_s_{engine}_{shape}"] = statistics.median(values)
            out[f"rollout_spread_{engine}_{shape}"] = _spread(values)
    base = out.get(f"rollout_tok_s_generate_{shape}")
    for engine in ("static", "cb"):
        if base and f"rollout_tok_s_{engine}_{shape}" in out:
            out[f"rollout_{engine}_speedup_{shape}"] = out[f"rollout_tok_s_{engine}_{shape}"] / base
    out.update(greedy_agreement(shape, prompts))
    return out


def greedy_agreement(shape: str, prompts: list) -> dict:
    """Share of greedy completions (token ids) of each engine identical to `generate`'s on the same prompts."""
    ids = {}
    for engine in ENGINES:
        try:
            trainer = build(shape, engine, greedy=True)
            ids[engine] = rollout(trainer, prompts)[2]
            del trainer
            gc.collect()
        except Exception:  # already recorded by the timed pass
            pass
    out = {}
    for engine in ("static", "cb"):
        if "generate" in ids and engine in ids:
            same = sum(a == b for a, b in zip(ids["generate"], ids[engine], strict=True))
            out[f"rollout_greedy_same_{engine}_{shape}"] = same / len(prompts)
    return out


def run(quick: bool = False) -> dict:
    """quick: the built-in model only, 2 repetitions; else also the real small model, more repetitions."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = {"rollout_threads": THREADS}
        result.update(measure("tiny", 2 if quick else 5))
        if not quick:
            result.update(measure("smollm2", 3))
        return result
    finally:
        torch.set_num_threads(threads)


def _table_rows(shape: str, label: str) -> list[tuple]:
    """One shape's rows: (key, label, target text, passes(value) or None, format), as TABLE in
    benchmarks/__main__.py."""
    return [(f"rollout_tok_s_generate_{shape}", f"Rollouts {label}: generate (tok/s)", "", None, "{:,.0f}"),
            (f"rollout_tok_s_static_{shape}", f"Rollouts {shape}: static cache (tok/s)", "", None, "{:,.0f}"),
            (f"rollout_tok_s_cb_{shape}", f"Rollouts {shape}: continuous batching (tok/s)", "", None, "{:,.0f}"),
            (f"rollout_cb_speedup_{shape}", f"Rollouts {shape}: continuous batching / generate", "", None, "{:.2f}x"),
            (f"rollout_greedy_same_cb_{shape}", f"Rollouts {shape}: CB greedy = generate", "100 %",
             lambda v: v == 1.0, "{:.0%}")]


TABLE_ROWS = _table_rows("tiny", "tiny 64x12") + _table_rows("smollm2", "smollm2 32x16")


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
