"""Memory estimate before launch: will this run fit on this GPU (or in this CPU's RAM), and what to change if not.

    est = estimate(None, cfg)            # the model's shape from its config.json, or the table of known models
    est.total_gb, est.parts, est.verdict, est.advice      # verdict: "fits" | "tight" | "will-not-fit"
    est.allocated_gb                     # the part torch's allocator sees: compare with torch.cuda.max_memory_allocated
    cost = rft_cost(cfg, params)         # rollouts, tokens and (rough) seconds per RFT step

The run is the one train.py will launch: the optimizer, checkpointing and generation engine come from
gpu_defaults.py (paged 8-bit AdamW, checkpointing on, vLLM when installed, on CUDA). Each term is one function
of memory_terms.py (weights, adapter, optimizer, activations, logits, KV cache and sampling, reference model,
vLLM, runtime, workspaces), its formula and source in its docstring; docs/memory.md has them all with a worked
example. `estimate` adds them up:

  total = weights + adapter + optimizer + CUDA context + workspaces + vLLM + the largest stage peak, where a
  stage's peak is activations + logits (SFT), or the larger of that and the generation terms (RFT).
  verdict: fits when total <= 85% of the memory, tight up to 100%, will-not-fit above.

It is an estimate: allocator fragmentation, TRL's own buffers and long-tail rows move it (scripts/gpu_check.py
measures it against torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from finetuner.planning.shapes import KNOWN, Arch, arch_for, arch_from_config, nearest_known  # noqa: F401 - re-exported
from finetuner.planning import memory_terms as t
from finetuner.planning.memory_terms import (  # noqa: F401 - re-exported: the terms' constants and functions
    EIGHT_BIT_MIN, FOUR_BIT, GB, LOGPROB_TOKEN_TILE, LOGPROB_VOCAB_TILE, adapter_params, adapter_tensors,
    generation_bytes, loss_bytes, optimizer_bytes, workspace_bytes)

FITS, TIGHT = 0.85, 1.0


def detect_memory() -> tuple[str, float, str]:
    """(device, memory in GB, description): the first CUDA GPU, else this machine's RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return "cuda", props.total_memory / GB, f"{props.name}, {props.total_memory / GB:.0f} GB"
    except Exception:  # noqa: BLE001 - no torch CUDA means CPU
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        ram = 16.0
    return "cpu", ram, f"no GPU: CPU with {ram:.0f} GB of RAM"


@dataclass
class Estimate:
    total_gb: float
    parts: dict  # name -> GB (unrounded; round for display)
    verdict: str  # fits | tight | will-not-fit
    advice: list[str]
    capacity_gb: float
    device: str  # cuda | cpu: what the run is planned for
    params: int
    notes: list[str] = field(default_factory=list)  # where the shape came from, assumptions
    outside_allocator_gb: float = 0.0  # CUDA context and paged optimizer states: not in max_memory_allocated
    setup: dict = field(default_factory=dict)  # optim, checkpointing, vllm, chunked_loss, quantization

    @property
    def allocated_gb(self) -> float:
        """What torch.cuda.max_memory_allocated should read at the peak."""
        return self.total_gb - self.outside_allocator_gb


def _cuda_capability() -> tuple[int, int] | None:
    try:
        import torch

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no CUDA torch: plan for a pre-Hopper consumer GPU
        return None


def _machine(device: str | None, capacity_gb: float | None, capability: tuple[int, int] | None) -> tuple:
    """(device, GB, CUDA capability) to plan for: those given; this machine's where the device or its memory
    is not (and then its GPU's capability too, unless given)."""
    if capacity_gb is not None and device is not None:
        return device, capacity_gb, capability
    found_device, found_gb, _ = detect_memory()
    device, capacity_gb = device or found_device, capacity_gb or found_gb
    if device == "cuda" and capability is None:
        capability = _cuda_capability()
    return device, capacity_gb, capability


def resolve_quantization(quantization: str, device: str) -> str:
    """What `model.quantization` means on `device`: 4bit, or full precision (bf16 on GPU, fp32 on CPU)."""
    if quantization == "4bit" or (quantization == "auto" and device == "cuda"):
        return "4bit"
    return "full"


def run_setup(cfg, device: str, notes: list[str]) -> dict:
    """The optimizer, checkpointing and generation engine train.py will use for `cfg` on `device`."""
    from finetuner.planning import gpu_defaults as g
    from graders.errors import ConfigError

    train = getattr(cfg, "train", None)
    try:
        optim = g.resolve_optim(train.optim if train else "auto", device)[0]
    except ConfigError as err:
        optim = g.ADAMW
        notes.append(f"{err} Estimated with AdamW.")
    checkpointing = g.resolve_checkpointing(train.gradient_checkpointing if train else "auto", device)
    vllm = None
    if "rft" in cfg.stages:
        try:
            vllm = g.resolve_vllm(cfg.rft, device)[0]
        except ConfigError as err:
            vllm = cfg.rft.use_vllm
            notes.append(f"{err} Estimated as if it were.")
    return {"optim": optim, "checkpointing": checkpointing, "vllm": vllm, "chunked_loss": True}


def model_shape(cfg, model_params: int | None, arch: Arch | None, notes: list[str]) -> Arch:
    """The shape to estimate with: `arch`, else the model's config.json or the table of known models, else the
    known model closest to `model_params` (a note says which)."""
    from graders.errors import ModelError

    if arch is None:
        arch, where = arch_for(cfg.model.name)
        if arch is not None:
            notes.append(f"Model shape from {where}.")
    if arch is None:
        if not model_params:
            raise ModelError(f"The size of `{cfg.model.name}` is unknown here (no local config.json). Enter its "
                             f"parameter count, e.g. 1.5e9, to get an estimate.")
        key, arch = nearest_known(model_params)
        notes.append(f"Shape guessed from {key}, the known model closest in size.")
    return arch


def sft_parts(arch: Arch, cfg, seq_tokens: int | None, b: int, setup: dict, lora_in: int) -> dict:
    """The SFT stage's activations and loss over batches of its longest row (at most model.max_length)."""
    s, max_len = cfg.sft, cfg.model.max_length
    seq = min(max_len, seq_tokens or max_len)
    return {"SFT activations": t.activation_bytes(arch, s.batch_size, seq, b, setup["checkpointing"], lora_in),
            "SFT logits (loss)": t.loss_bytes(arch, s.batch_size * seq, b, setup["chunked_loss"])}


def rft_parts(arch: Arch, cfg, prompt_tokens: int | None, b: int, setup: dict, lora_in: int, device: str,
              notes: list[str]) -> tuple[dict, float]:
    """(the RFT stage's parts, its peak): training on prompt + completion (the loss on completions only on a
    GPU), and, generating with transformers, the KV cache and sampling of a whole accumulation round (TRL
    generates rft.batch_size x grad_accum rollouts at once); the peak is the larger of the two."""
    r, max_len = cfg.rft, cfg.model.max_length
    prompt = min(max_len, prompt_tokens or max_len)
    comp = r.max_completion_length
    seq = prompt + comp
    parts = {"RFT activations": t.activation_bytes(arch, r.batch_size, seq, b, setup["checkpointing"], lora_in),
             "RFT logits (loss)": t.loss_bytes(arch, r.batch_size * (comp if device == "cuda" else seq), b,
                                               setup["chunked_loss"])}
    peak = parts["RFT activations"] + parts["RFT logits (loss)"]
    if setup["vllm"] is None:
        kv, other = t.generation_bytes(arch, r.batch_size * r.grad_accum, prompt, comp, b)
        parts["RFT KV cache (generation)"], parts["RFT sampling logits + prefill"] = kv, other
        peak = max(peak, kv + other)
    elif setup["vllm"] == "server":
        notes.append("vLLM runs as a separate server: its memory is on that server's GPU, not counted here.")
    if r.beta > 0:  # the reference model costs nothing kept (docs/memory.md, reference model row)
        notes.append("rft.beta > 0: the reference model is the base with the adapter disabled (no copy).")
    return parts, peak


def verdict_for(total_gb: float, capacity_gb: float) -> str:
    """fits up to FITS (85 %) of the memory, tight up to all of it, will-not-fit above."""
    ratio = total_gb / capacity_gb if capacity_gb else math.inf
    return "fits" if ratio <= FITS else "tight" if ratio <= TIGHT else "will-not-fit"


def estimate(model_params: int | None, cfg, *, arch: Arch | None = None, capacity_gb: float | None = None,
             device: str | None = None, prompt_tokens: int | None = None, seq_tokens: int | None = None,
             setup: dict | None = None, cuda_capability: tuple[int, int] | None = None) -> Estimate:
    """Peak memory of `cfg` (a RunConfig). `model_params` overrides the count from the model's shape;
    `capacity_gb`/`device` default to the detected GPU (or RAM on CPU); `prompt_tokens` (RFT prompts) and
    `seq_tokens` (longest SFT row) come from the data check when known, else `model.max_length` bounds them.
    `setup` overrides any of run_setup's choices (optim, checkpointing, vllm, chunked_loss); `cuda_capability`
    (major, minor) sizes the cuBLAS workspaces (default: this machine's GPU, else a pre-Hopper one)."""
    notes: list[str] = []
    arch = model_shape(cfg, model_params, arch, notes)
    params = int(model_params or arch.params)
    device, capacity_gb, cuda_capability = _machine(device, capacity_gb, cuda_capability)
    setup = {**run_setup(cfg, device, notes), **(setup or {})}
    setup["quantization"] = quant = resolve_quantization(cfg.model.quantization, device)
    b = 2 if device == "cuda" else 4  # activation bytes: bf16 on a GPU, fp32 on CPU
    ad = cfg.adapter
    sizes, unknown = t.adapter_tensors(arch, ad.r, ad.target_modules, ad.type)
    if unknown:
        notes.append(f"Target modules {', '.join(unknown)} are not Llama-style names; counted as all-linear.")
    opt_total, opt_paged = t.optimizer_bytes(sizes, arch.layers, setup["optim"])
    runtime, runtime_bytes = t.runtime_bytes(device)
    # the fixed parts, held for the whole run
    parts = {"weights": t.weights_bytes(params, min(params, arch.embed_params), quant, device),
             "LoRA adapter + gradients": t.adapter_bytes(sizes, arch.layers),
             f"optimizer states ({setup['optim']})": opt_total,
             runtime: runtime_bytes}
    if device == "cuda":
        parts["workspaces (cuBLAS, 4-bit dequant)"] = t.workspaces_bytes(arch, quant, cuda_capability)
    if setup["vllm"] == "colocate":
        parts["vLLM (colocated)"] = t.vllm_bytes(cfg.rft.vllm_gpu_memory_utilization, capacity_gb)
    base = sum(parts.values())
    # the stages run one after the other: only the larger peak adds to the fixed parts
    lora_in = t.dropout_inputs(arch, ad.target_modules, ad.dropout)
    peaks = []
    if "sft" in cfg.stages:
        sft = sft_parts(arch, cfg, seq_tokens, b, setup, lora_in)
        parts.update(sft)
        peaks.append(sum(sft.values()))
    if "rft" in cfg.stages:
        rft, peak = rft_parts(arch, cfg, prompt_tokens, b, setup, lora_in, device, notes)
        parts.update(rft)
        peaks.append(peak)
    total = (base + max(peaks, default=0)) / GB
    outside = (parts.get("CUDA context", 0) + opt_paged) / GB  # not in torch.cuda.max_memory_allocated
    est = Estimate(total, {k: v / GB for k, v in parts.items()}, verdict_for(total, capacity_gb), [], capacity_gb,
                   device, params, notes, outside, setup)
    est.advice = _advice(est, cfg, quant, arch)
    return est


def _advice(est: Estimate, cfg, quant: str, arch: Arch) -> list[str]:
    """What to change, largest saving first, when the run is tight or does not fit."""
    if est.verdict == "fits":
        spare = est.capacity_gb - est.total_gb
        return [f"About {spare:.1f} GB to spare."] if spare > 0 else []
    p, tips, setup = est.parts, [], est.setup
    if quant != "4bit" and est.device == "cuda":
        tips.append((p["weights"] * 0.7, "Set quantization to `auto` or `4bit` (QLoRA): the weights shrink to "
                     "about a quarter."))
    for stage in ("SFT", "RFT"):
        act = p.get(f"{stage} activations", 0) + p.get(f"{stage} logits (loss)", 0)
        s = getattr(cfg, stage.lower())
        if act and s.batch_size > 1:
            half = max(1, s.batch_size // 2)
            what = (f"Halve `{stage.lower()}.batch_size` to {half} and double `{stage.lower()}.grad_accum` to "
                    f"{s.grad_accum * 2} (same effective batch)")
            if stage == "RFT" and half % cfg.rft.num_generations:
                what = f"Lower `rft.batch_size` (keeping it a multiple of num_generations {cfg.rft.num_generations})"
            tips.append((act / 2, what + "."))
        if act and est.device == "cuda" and not setup.get("checkpointing"):
            tips.append((p.get(f"{stage} activations", 0) * 0.7, "Set `train.gradient_checkpointing` to `auto` "
                         "(recomputes activations in the backward pass)."))
    if p.get("SFT activations", 0) > 0.5:
        tips.append((p["SFT activations"] / 2, f"Lower `model.max_length` (now {cfg.model.max_length}) towards "
                     "your data's longest rows."))
    kv = p.get("RFT KV cache (generation)", 0)
    if kv:
        tips.append((kv / 2, f"Use fewer `rft.num_generations` (now {cfg.rft.num_generations}) or a shorter "
                     f"`rft.max_completion_length` (now {cfg.rft.max_completion_length})."))
    vllm = p.get("vLLM (colocated)", 0)
    if vllm:
        tips.append((vllm / 3, f"Lower `rft.vllm_gpu_memory_utilization` (now {cfg.rft.vllm_gpu_memory_utilization}), "
                     "or set `rft.use_vllm: off`."))
    opt_key = next((k for k in p if k.startswith("optimizer states")), "")
    if est.device == "cuda" and "8bit" not in setup.get("optim", "") and p.get(opt_key, 0) > 0.1:
        tips.append((p[opt_key] * 0.7, "Set `train.optim` to `auto` or `paged_adamw_8bit` (needs bitsandbytes)."))
    adapter = p.get("LoRA adapter + gradients", 0) + p.get(opt_key, 0)
    if adapter > 0.5:
        tips.append((adapter / 2, f"Lower the adapter rank `adapter.r` (now {cfg.adapter.r})."))
    tips.sort(key=lambda t: -t[0])
    out = [f"{text} Saves about {gb:.1f} GB." for gb, text in tips if gb >= 0.05]
    out.append("Or pick a smaller model.")
    return out


@dataclass
class RFTCost:
    prompts_per_step: int
    rollouts_per_step: int
    tokens_per_step: int  # generated, at most
    steps: int
    seconds_per_step: tuple[float, float]  # (low, high): a rough range from the formula, not a measurement
    # (seconds per step, where it was measured) when a run or probe on this machine timed these settings
    measured: tuple[float, str] | None = None

    @property
    def total_rollouts(self) -> int:
        return self.rollouts_per_step * self.steps

    def text(self) -> str:
        lo, hi = self.seconds_per_step
        k = self.rollouts_per_step // max(1, self.prompts_per_step)
        head = (f"Per step: {self.prompts_per_step} prompts x {k} samples = {self.rollouts_per_step} rollouts, up to "
                f"{self.tokens_per_step:,} generated tokens. {self.steps:,} steps: {self.total_rollouts:,} rollouts. ")
        if self.measured:
            seconds, where = self.measured
            return head + f"Time: {where}; about {duration(seconds * self.steps)} for {self.steps:,} steps."
        # The formula was off by 2-8x against real runs (1.1-4.5 s guessed, 7.9-9.5 s measured): say so.
        return head + (f"Time: rough guess, not measured: {duration(lo)} to {duration(hi)} per step, "
                       f"{duration(lo * self.steps)} to {duration(hi * self.steps)} in all (from the model size "
                       f"only; real steps can be several times slower). Measure a step for a real number.")


def duration(seconds: float) -> str:
    """`seconds` for people: 4.2 s, 35 s, 12 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rft_cost(cfg, params: int, device: str = "cuda", prompt_tokens: int | None = None,
             rows: int | None = None, measured: tuple[float, str] | None = None) -> RFTCost:
    """Rollouts and tokens per RFT step, and a rough time. Generation decodes a step's rollouts together, so it
    takes about max_completion_length decode steps (HF generate on a GPU: ~30 steps/s up to 4B parameters, ~15
    above; on CPU ~60/s for the built-in model, ~1/s for real ones); training costs about 6 x params FLOPs per
    token (forward, backward through frozen weights, checkpoint recompute) at an effective 20 TFLOP/s on a
    consumer GPU, 0.05 TFLOP/s on CPU. The range is x0.5 to x2. Steps come from `max_steps`, or from
    `epochs` over `rows` prompts (100 when unknown). `measured` (seconds per step, where: see step_time.py)
    replaces the guess in the text when a real run timed these settings."""
    r = cfg.rft
    rollouts = r.batch_size * r.grad_accum
    prompts = max(1, rollouts // r.num_generations)
    steps = r.max_steps or max(1, math.ceil((rows or 100) * r.epochs / prompts))
    prompt = min(cfg.model.max_length, prompt_tokens or cfg.model.max_length)
    if device == "cuda":
        decode_rate, flops = (30 if params <= 4e9 else 15), 20e12
    else:
        decode_rate, flops = (60 if params < 1e8 else 1), 5e10
    seconds = (r.max_completion_length / decode_rate
               + 6 * params * rollouts * (prompt + r.max_completion_length) / flops)
    return RFTCost(prompts, rollouts, rollouts * r.max_completion_length, steps, (seconds * 0.5, seconds * 2),
                   measured)
