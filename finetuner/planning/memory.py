"""Memory estimate before launch: will this run fit on this GPU (or in this CPU's RAM), and what to change if not.

    est = estimate(None, cfg)            # the model's shape from its config.json, or the table of known models
    est.total_gb, est.parts, est.verdict, est.advice      # verdict: "fits" | "tight" | "will-not-fit"
    est.allocated_gb                     # the part torch's allocator sees: compare with torch.cuda.max_memory_allocated
    cost = rft_cost(cfg, params)         # rollouts, tokens and (rough) seconds per RFT step

The run is the one train.py will launch: the optimizer, checkpointing and generation engine come from
gpu_defaults.py (paged 8-bit AdamW, checkpointing on, vLLM when installed, on CUDA). Every term, its formula and
the source of each constant, with a worked example: docs/memory.md. In bytes (GB = 1024**3); P parameters, L
layers, h hidden, i MLP width, V vocabulary, q = heads x head_dim, kv = key/value heads x head_dim; b = 2 for
activations on a GPU (bf16/fp16), 4 on CPU (fp32); B micro-batch, S sequence, C completion, G rollouts generated
together (rft.batch_size x rft.grad_accum):

  weights        P_linear x w + P_embed x e. 4-bit NF4 with double quantization w = (4 + 8/64 + 32/(64x256)) / 8
                 (QLoRA paper, section 2); bf16/fp16 w = 2; fp32 w = 4 (CPU). Embeddings, norms (and an untied
                 lm_head) stay 16-bit under 4-bit loading: e = 2 (e = w without quantization).
  adapter        A x 8: the LoRA parameters A = layers x sum over targeted linears of r x (in + out) (+ out for
                 DoRA), fp32 weights (PEFT upcasts adapters) and fp32 gradients.
  optimizer      AdamW: 8 bytes per adapter parameter (two fp32 states). 8-bit AdamW (bitsandbytes): 2 + 8/256
                 per parameter of tensors with >= 4096 elements (two uint8 states + an fp32 absmax per 256-block),
                 8 for smaller ones. Paged: tensors >= 1e5 elements live in CUDA unified memory, outside torch's
                 allocator (they count for the fit, not for max_memory_allocated).
  activations    B x S x c x b per layer kept, c = 6h + 2q + 2kv + 4i values per token (norm inputs and outputs,
                 q, k, v, attention output, gate, up, act, product) + LoRA dropout's copies (in x (b + 1) bytes per
                 targeted linear when adapter.dropout > 0). Without checkpointing: L x c. With it: L x h (each
                 layer's input) + c (the layer being recomputed). Attention scores are not counted (SDPA kernels).
  logits         the loss on N tokens (SFT: B x S; RFT: B x C on CUDA, B x S on CPU). Chunked (TRL's fused LM head,
                 always on in the pinned TRL): one min(N, 4096) x min(V, 32768) tile x b + the fp32 hidden
                 gradient N x h x 4 + N x 32 of per-token statistics. Unchunked: N x V x 4 x 2 (fp32 logits and
                 their gradient).
  KV cache       RFT with transformers' generate: 2 x L x kv x (prompt + C) x G x b; plus the sampling logits
                 G x V x 4 x 2 and one prefill layer's MLP G x prompt x (h + 2i) x b.
  reference      rft.beta > 0 with a PEFT model: the base model with the adapter disabled, no copy (0 bytes kept).
  vLLM           colocated: rft.vllm_gpu_memory_utilization x the GPU's memory (its weights and KV cache), and no
                 transformers KV cache; server mode: nothing on this GPU.
  CUDA context   0.5 GB outside the allocator (driver, kernels; lazy module loading); CPU: 0.5 GB of Python and torch.
  workspaces     cuBLAS + cuBLASLt: 2 x 32 MiB on Hopper and newer, 2 x 8.125 MiB before (torch's defaults); 4-bit:
                 one dequantized linear (in x out x 2).

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

GB = 1024 ** 3
MIB = 1024 ** 2
# NF4 with double quantization: 4 bits + an 8-bit absmax per 64 weights + an fp32 constant per 256 absmax blocks
# (Dettmers et al. 2023, QLoRA, section 2: 0.127 bits of constants per parameter).
FOUR_BIT = (4 + 8 / 64 + 32 / (64 * 256)) / 8
CUDA_CONTEXT = 0.5 * GB  # driver context + loaded kernels, outside torch's allocator
CPU_RUNTIME = 0.5 * GB  # Python, torch and the libraries in RAM
# torch's default cuBLAS workspace, one for cuBLAS and one for cuBLASLt (NVIDIA's cublasSetWorkspace advice).
WORKSPACE_HOPPER, WORKSPACE_OLDER = 2 * 32 * MIB, 2 * (8 * MIB + 128 * 1024)
# trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE and trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE (TRL 1.16)
LOGPROB_TOKEN_TILE, LOGPROB_VOCAB_TILE = 4096, 32768
# bitsandbytes' 8-bit optimizers: 8-bit states from this many elements, fp32 absmax per block, paging threshold
EIGHT_BIT_MIN, EIGHT_BIT_BLOCK, PAGED_MIN = 4096, 256, 100_000
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


def adapter_params(arch: Arch, r: int, targets: str, kind: str = "lora") -> tuple[int, list[str]]:
    """LoRA parameters over the targeted linears (and unknown target names, to report)."""
    shapes, unknown = adapter_tensors(arch, r, targets, kind)
    return arch.layers * sum(shapes), unknown


def _targets(arch: Arch, targets: str) -> tuple[list[str], list[str]]:
    linears = arch.linears()
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    if not wanted or wanted == ["all-linear"]:
        wanted = list(linears)
    unknown = [t for t in wanted if t not in linears]
    return [t for t in wanted if t in linears] or list(linears), unknown


def adapter_tensors(arch: Arch, r: int, targets: str, kind: str = "lora") -> tuple[list[int], list[str]]:
    """Element counts of one layer's adapter tensors (A, B, and DoRA's magnitude), and unknown target names."""
    linears = arch.linears()
    chosen, unknown = _targets(arch, targets)
    sizes = []
    for t in chosen:
        fan_in, fan_out = linears[t]
        sizes += [r * fan_in, fan_out * r] + ([fan_out] if kind == "dora" else [])
    return sizes, unknown


def _weights_bytes(params: int, embed: int, quant: str, device: str) -> float:
    linear = max(0, params - embed)
    if quant == "4bit":
        return linear * FOUR_BIT + embed * 2
    per = 2 if device == "cuda" else 4
    return params * per


def optimizer_bytes(sizes: list[int], layers: int, optim: str) -> tuple[float, float]:
    """(bytes of optimizer states, of which paged to unified memory) for adapter tensors of `sizes` per layer."""
    total = paged = 0.0
    for n in sizes:
        if optim in ("paged_adamw_8bit", "adamw_8bit") and n >= EIGHT_BIT_MIN:
            per = n * 2 + 2 * 4 * math.ceil(n / EIGHT_BIT_BLOCK)
        else:
            per = n * 8
        total += per * layers
        if optim.startswith("paged_") and n >= PAGED_MIN:
            paged += per * layers
    return total, paged


def _activations(arch: Arch, batch: int, seq: int, b: int, checkpointing: bool, lora_in: int = 0) -> float:
    """`lora_in`: summed input widths of the linears whose LoRA dropout copies its input (0 without dropout)."""
    per_layer = (6 * arch.hidden + 2 * arch.q_dim + 2 * arch.kv_dim + 4 * arch.intermediate) * b + lora_in * (b + 1)
    kept = arch.layers * arch.hidden * b + per_layer if checkpointing else arch.layers * per_layer
    return batch * seq * kept


def loss_bytes(arch: Arch, tokens: int, b: int, chunked: bool) -> float:
    """The LM head and loss over `tokens` positions (see the module docstring, `logits`)."""
    if not chunked:
        return tokens * arch.vocab * 4 * 2
    tile = min(tokens, LOGPROB_TOKEN_TILE) * min(arch.vocab, LOGPROB_VOCAB_TILE) * b
    return tile + tokens * arch.hidden * 4 + tokens * 32


def generation_bytes(arch: Arch, rollouts: int, prompt: int, completion: int, b: int) -> tuple[float, float]:
    """(KV cache, sampling logits + one prefill layer's MLP) of transformers' generate for `rollouts` at once."""
    kv = 2 * arch.layers * arch.kv_dim * (prompt + completion) * rollouts * b
    other = rollouts * arch.vocab * 4 * 2 + rollouts * prompt * (arch.hidden + 2 * arch.intermediate) * b
    return kv, other


def workspace_bytes(capability: tuple[int, int] | None) -> float:
    """torch's cuBLAS and cuBLASLt workspaces: 32 MiB each on Hopper (compute capability 9) and newer."""
    return WORKSPACE_HOPPER if capability and capability[0] >= 9 else WORKSPACE_OLDER


def _cuda_capability() -> tuple[int, int] | None:
    try:
        import torch

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no CUDA torch: plan for a pre-Hopper consumer GPU
        return None


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


def estimate(model_params: int | None, cfg, *, arch: Arch | None = None, capacity_gb: float | None = None,
             device: str | None = None, prompt_tokens: int | None = None, seq_tokens: int | None = None,
             setup: dict | None = None, cuda_capability: tuple[int, int] | None = None) -> Estimate:
    """Peak memory of `cfg` (a RunConfig). `model_params` overrides the count from the model's shape;
    `capacity_gb`/`device` default to the detected GPU (or RAM on CPU); `prompt_tokens` (RFT prompts) and
    `seq_tokens` (longest SFT row) come from the data check when known, else `model.max_length` bounds them.
    `setup` overrides any of run_setup's choices (optim, checkpointing, vllm, chunked_loss); `cuda_capability`
    (major, minor) sizes the cuBLAS workspaces (default: this machine's GPU, else a pre-Hopper one)."""
    from graders.errors import ModelError

    notes: list[str] = []
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
    params = int(model_params or arch.params)
    if capacity_gb is None or device is None:
        found_device, found_gb, _ = detect_memory()
        device = device or found_device
        capacity_gb = capacity_gb or found_gb
        if device == "cuda" and cuda_capability is None:
            cuda_capability = _cuda_capability()
    setup = {**run_setup(cfg, device, notes), **(setup or {})}
    cuda = device == "cuda"
    b = 2 if cuda else 4
    quant = resolve_quantization(cfg.model.quantization, device)
    setup["quantization"] = quant
    embed = min(params, arch.embed_params)
    parts = {"weights": _weights_bytes(params, embed, quant, device)}
    sizes, unknown = adapter_tensors(arch, cfg.adapter.r, cfg.adapter.target_modules, cfg.adapter.type)
    if unknown:
        notes.append(f"Target modules {', '.join(unknown)} are not Llama-style names; counted as all-linear.")
    parts["LoRA adapter + gradients"] = arch.layers * sum(sizes) * 8
    opt_total, opt_paged = optimizer_bytes(sizes, arch.layers, setup["optim"])
    parts[f"optimizer states ({setup['optim']})"] = opt_total
    parts["CUDA context" if cuda else "runtime (Python, torch)"] = CUDA_CONTEXT if cuda else CPU_RUNTIME
    if cuda:
        largest = max(a * c for a, c in arch.linears().values())
        parts["workspaces (cuBLAS, 4-bit dequant)"] = (workspace_bytes(cuda_capability)
                                                       + (largest * 2 if quant == "4bit" else 0))
    if setup["vllm"] == "colocate":
        parts["vLLM (colocated)"] = cfg.rft.vllm_gpu_memory_utilization * capacity_gb * GB
    linears = arch.linears()
    chosen, _ = _targets(arch, cfg.adapter.target_modules)
    lora_in = sum(linears[t][0] for t in chosen) if cfg.adapter.dropout > 0 else 0
    ckpt, chunked = setup["checkpointing"], setup["chunked_loss"]
    max_len = cfg.model.max_length
    peaks = {}
    if "sft" in cfg.stages:
        s, seq = cfg.sft, min(max_len, seq_tokens or max_len)
        parts["SFT activations"] = _activations(arch, s.batch_size, seq, b, ckpt, lora_in)
        parts["SFT logits (loss)"] = loss_bytes(arch, s.batch_size * seq, b, chunked)
        peaks["sft"] = parts["SFT activations"] + parts["SFT logits (loss)"]
    if "rft" in cfg.stages:
        r = cfg.rft
        prompt = min(max_len, prompt_tokens or max_len)
        seq, comp = prompt + r.max_completion_length, r.max_completion_length
        parts["RFT activations"] = _activations(arch, r.batch_size, seq, b, ckpt, lora_in)
        parts["RFT logits (loss)"] = loss_bytes(arch, r.batch_size * (comp if cuda else seq), b, chunked)
        peaks["rft"] = parts["RFT activations"] + parts["RFT logits (loss)"]
        if setup["vllm"] is None:
            kv, other = generation_bytes(arch, r.batch_size * r.grad_accum, prompt, comp, b)
            parts["RFT KV cache (generation)"] = kv
            parts["RFT sampling logits + prefill"] = other
            peaks["rft"] = max(peaks["rft"], kv + other)
        elif setup["vllm"] == "server":
            notes.append("vLLM runs as a separate server: its memory is on that server's GPU, not counted here.")
        if r.beta > 0:
            notes.append("rft.beta > 0: the reference model is the base with the adapter disabled (no copy).")
    stage_parts = {k for k in parts if k.startswith(("SFT ", "RFT "))}
    base = sum(v for k, v in parts.items() if k not in stage_parts)
    total = (base + max(peaks.values(), default=0)) / GB
    outside = (parts.get("CUDA context", 0) + opt_paged) / GB
    ratio = total / capacity_gb if capacity_gb else math.inf
    verdict = "fits" if ratio <= FITS else "tight" if ratio <= TIGHT else "will-not-fit"
    est = Estimate(total, {k: v / GB for k, v in parts.items()}, verdict, [], capacity_gb, device, params, notes,
                   outside, setup)
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
            return head + f"Time: {where}; about {_dur(seconds * self.steps)} for {self.steps:,} steps."
        # The formula was off by 2-8x against real runs (1.1-4.5 s guessed, 7.9-9.5 s measured): say so.
        return head + (f"Time: rough guess, not measured: {_dur(lo)} to {_dur(hi)} per step, {_dur(lo * self.steps)} "
                       f"to {_dur(hi * self.steps)} in all (from the model size only; real steps can be several "
                       f"times slower). Measure a step for a real number.")


def _dur(seconds: float) -> str:
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
