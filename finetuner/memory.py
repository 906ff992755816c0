"""Memory estimate before launch: will this run fit on this GPU (or in this CPU's RAM), and what to change if not.

    est = estimate(None, cfg)            # the model's shape from its config.json, or the table of known models
    est.total_gb, est.parts, est.verdict, est.advice      # verdict: "fits" | "tight" | "will-not-fit"
    cost = rft_cost(cfg, params)         # rollouts, tokens and (rough) seconds per RFT step

The formula, in bytes (GB = 1024**3 bytes). P = parameters, L layers, h hidden, i MLP width, V vocabulary,
q = heads x head_dim, kv = key/value heads x head_dim; b = 2 bytes for activations on a GPU (bf16), 4 on CPU (fp32):

  weights      P_linear x w + P_embed x e. w = 0.5 x (1 + 1/32) for 4-bit NF4 (the double-quantised block
               constants add about 1/32), 2 for bf16, 4 for fp32 (CPU). e = 2 on GPU, 4 on CPU: bitsandbytes
               keeps embeddings, lm_head and norms in 16 bits.
  adapter      A x 16: the LoRA parameters A = sum over targeted linears of r x (in + out) (+ out for DoRA's
               magnitudes), each with an fp32 weight (4), its gradient (4) and AdamW's two fp32 states (8).
  activations  B x S x c x b per stage, where one layer keeps c = 6h + 2q + 2kv + 4i values per token for
               backward (norm inputs and outputs, q, k, v, attention output, gate, up, act, product). Without
               checkpointing every layer keeps them: c x L. With checkpointing (always on for GPUs) only each
               layer's input is kept and one layer is recomputed at a time: L x h + c. Attention scores are not
               counted: GPUs use memory-efficient attention kernels.
  logits       B x T x V x 4 x 2: fp32 logits and their gradient. SFT: T = S. RFT: T = completion length (TRL
               keeps only the completion's logits); beta > 0 adds the reference model's logits (x 1 more).
  KV cache     RFT generation: G x (prompt + completion) x L x 2 x kv x b, G = rft.batch_size x
               rft.grad_accum completions generated together (TRL generates a whole accumulation round at once).
  runtime      0.8 GB for the CUDA context and the allocator's reserve (0.5 GB of Python and torch on CPU).

  total = weights + adapter + runtime + the largest stage peak, where a stage's peak is activations + logits
  (SFT), or the larger of activations + logits and KV cache + generation logits (RFT).
  verdict: fits when total <= 85% of the memory, tight up to 100%, will-not-fit above.

It is an estimate (typically within 20-30%): allocator fragmentation, TRL's own buffers and long-tail rows move it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

GB = 1024 ** 3
FOUR_BIT = 0.5 * (1 + 1 / 32)
FITS, TIGHT = 0.85, 1.0


@dataclass(frozen=True)
class Arch:
    """A decoder's shape, as in its config.json."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = True

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one block, by the module names PEFT targets."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears().values())

    @property
    def embed_params(self) -> int:
        """Embeddings, lm_head (when not tied) and norms: what stays 16-bit under 4-bit loading."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden * (2 * self.layers + 1)

    @property
    def params(self) -> int:
        return self.linear_params + self.embed_params


# Shapes of the models the Train tab recommends, so the estimate works offline for them.
KNOWN: dict[str, Arch] = {
    "Qwen/Qwen2.5-0.5B-Instruct": Arch(24, 896, 4864, 14, 2, 64, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": Arch(28, 1536, 8960, 12, 2, 128, 151936, True),
    "Qwen/Qwen2.5-3B-Instruct": Arch(36, 2048, 11008, 16, 2, 128, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": Arch(28, 3584, 18944, 28, 4, 128, 152064, False),
    "Qwen/Qwen3-0.6B": Arch(28, 1024, 3072, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-1.7B": Arch(28, 2048, 6144, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-4B": Arch(36, 2560, 9728, 32, 8, 128, 151936, True),
    "Qwen/Qwen3-8B": Arch(36, 4096, 12288, 32, 8, 128, 151936, False),
    "meta-llama/Llama-3.2-1B-Instruct": Arch(16, 2048, 8192, 32, 8, 64, 128256, True),
    "meta-llama/Llama-3.2-3B-Instruct": Arch(28, 3072, 8192, 24, 8, 128, 128256, True),
    "meta-llama/Llama-3.1-8B-Instruct": Arch(32, 4096, 14336, 32, 8, 128, 128256, False),
    "mistralai/Mistral-7B-Instruct-v0.3": Arch(32, 4096, 14336, 32, 8, 128, 32768, False),
}


def arch_from_config(config: dict) -> Arch:
    c = config.get("text_config") or config  # multimodal configs nest the language model's shape
    heads = int(c["num_attention_heads"])
    hidden = int(c["hidden_size"])
    return Arch(int(c["num_hidden_layers"]), hidden, int(c.get("intermediate_size") or 4 * hidden), heads,
                int(c.get("num_key_value_heads") or heads), int(c.get("head_dim") or hidden // heads),
                int(c["vocab_size"]), bool(c.get("tie_word_embeddings", False)))


def arch_for(name: str) -> tuple[Arch | None, str]:
    """(shape, where it came from) for `tiny`, a local folder, a Hub id in the local cache, or a known id."""
    from .models import resolve_model_path

    try:
        path = Path(resolve_model_path(name)).expanduser()
    except Exception:  # noqa: BLE001 - an incomplete tiny model: fall through to "unknown"
        path = Path(name)
    config_file = path / "config.json" if path.is_dir() else None
    if config_file is None and "/" in name and not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            config_file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - no cache is the same as not cached
            config_file = None
    if config_file is not None and config_file.is_file():
        try:
            return arch_from_config(json.loads(config_file.read_text(encoding="utf-8"))), "its config.json"
        except (KeyError, ValueError, TypeError):
            pass
    for key, arch in KNOWN.items():
        if key.lower() == name.lower() or key.split("/")[-1].lower() == name.split("/")[-1].lower():
            return arch, f"the table of known models ({key})"
    return None, ""


def nearest_known(params: int) -> tuple[str, Arch]:
    return min(KNOWN.items(), key=lambda kv: abs(math.log(kv[1].params / max(params, 1))))


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


def adapter_params(arch: Arch, r: int, targets: str, kind: str = "lora") -> tuple[int, list[str]]:
    """LoRA parameters over the targeted linears (and unknown target names, to report)."""
    linears = arch.linears()
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    if not wanted or wanted == ["all-linear"]:
        wanted = list(linears)
    unknown = [t for t in wanted if t not in linears]
    chosen = [t for t in wanted if t in linears] or list(linears)
    per_layer = sum(r * (linears[t][0] + linears[t][1]) + (linears[t][1] if kind == "dora" else 0)
                    for t in chosen)
    return arch.layers * per_layer, unknown


def _weights_bytes(params: int, embed: int, quant: str, device: str) -> float:
    linear = max(0, params - embed)
    if quant == "4bit":
        return linear * FOUR_BIT + embed * 2
    per = 2 if device == "cuda" else 4
    return params * per


def _activations(arch: Arch, batch: int, seq: int, b: int, checkpointing: bool) -> float:
    per_layer = 6 * arch.hidden + 2 * arch.q_dim + 2 * arch.kv_dim + 4 * arch.intermediate
    kept = arch.layers * arch.hidden + per_layer if checkpointing else arch.layers * per_layer
    return batch * seq * kept * b


def resolve_quantization(quantization: str, device: str) -> str:
    """What `model.quantization` means on `device`: 4bit, or full precision (bf16 on GPU, fp32 on CPU)."""
    if quantization == "4bit" or (quantization == "auto" and device == "cuda"):
        return "4bit"
    return "full"


def estimate(model_params: int | None, cfg, *, arch: Arch | None = None, capacity_gb: float | None = None,
             device: str | None = None, prompt_tokens: int | None = None, seq_tokens: int | None = None) -> Estimate:
    """Peak memory of `cfg` (a RunConfig). `model_params` overrides the count from the model's shape;
    `capacity_gb`/`device` default to the detected GPU (or RAM on CPU); `prompt_tokens` (RFT prompts) and
    `seq_tokens` (longest SFT row) come from the data check when known, else `model.max_length` bounds them."""
    from .errors import ModelError

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
    b = 2 if device == "cuda" else 4
    checkpointing = device == "cuda"  # train.py turns it on for every CUDA run and off on CPU
    quant = resolve_quantization(cfg.model.quantization, device)
    embed = min(params, arch.embed_params)
    parts = {"weights": _weights_bytes(params, embed, quant, device)}
    n_adapter, unknown = adapter_params(arch, cfg.adapter.r, cfg.adapter.target_modules, cfg.adapter.type)
    if unknown:
        notes.append(f"Target modules {', '.join(unknown)} are not Llama-style names; counted as all-linear.")
    parts["adapter + optimizer"] = n_adapter * 16
    parts["runtime"] = 0.8 * GB if device == "cuda" else 0.5 * GB
    max_len = cfg.model.max_length
    peaks = {}
    if "sft" in cfg.stages:
        s, seq = cfg.sft, min(max_len, seq_tokens or max_len)
        parts["SFT activations"] = _activations(arch, s.batch_size, seq, b, checkpointing)
        parts["SFT logits"] = s.batch_size * seq * arch.vocab * 4 * 2
        peaks["sft"] = parts["SFT activations"] + parts["SFT logits"]
    if "rft" in cfg.stages:
        r = cfg.rft
        prompt = min(max_len, prompt_tokens or max_len)
        seq, comp = prompt + r.max_completion_length, r.max_completion_length
        parts["RFT activations"] = _activations(arch, r.batch_size, seq, b, checkpointing)
        parts["RFT logits"] = r.batch_size * comp * arch.vocab * 4 * (2 + (1 if r.beta > 0 else 0))
        gen = r.batch_size * r.grad_accum
        parts["RFT KV cache (generation)"] = gen * seq * arch.layers * 2 * arch.kv_dim * b
        gen_logits = gen * arch.vocab * 4
        peaks["rft"] = max(parts["RFT activations"] + parts["RFT logits"],
                           parts["RFT KV cache (generation)"] + gen_logits)
    base = parts["weights"] + parts["adapter + optimizer"] + parts["runtime"]
    total = (base + max(peaks.values(), default=0)) / GB
    ratio = total / capacity_gb if capacity_gb else math.inf
    verdict = "fits" if ratio <= FITS else "tight" if ratio <= TIGHT else "will-not-fit"
    est = Estimate(total, {k: v / GB for k, v in parts.items()}, verdict, [], capacity_gb, device, params, notes)
    est.advice = _advice(est, cfg, quant, arch)
    return est


def _advice(est: Estimate, cfg, quant: str, arch: Arch) -> list[str]:
    """What to change, largest saving first, when the run is tight or does not fit."""
    if est.verdict == "fits":
        spare = est.capacity_gb - est.total_gb
        return [f"About {spare:.1f} GB to spare."] if spare > 0 else []
    p, tips = est.parts, []
    if quant != "4bit" and est.device == "cuda":
        tips.append((p["weights"] * 0.7, "Set quantization to `auto` or `4bit` (QLoRA): the weights shrink to "
                     "about a quarter."))
    for stage in ("SFT", "RFT"):
        act = p.get(f"{stage} activations", 0) + p.get(f"{stage} logits", 0)
        s = getattr(cfg, stage.lower())
        if act and s.batch_size > 1:
            half = max(1, s.batch_size // 2)
            what = (f"Halve `{stage.lower()}.batch_size` to {half} and double `{stage.lower()}.grad_accum` to "
                    f"{s.grad_accum * 2} (same effective batch)")
            if stage == "RFT" and half % cfg.rft.num_generations:
                what = f"Lower `rft.batch_size` (keeping it a multiple of num_generations {cfg.rft.num_generations})"
            tips.append((act / 2, what + "."))
    if p.get("SFT activations", 0) > 0.5:
        tips.append((p["SFT activations"] / 2, f"Lower `model.max_length` (now {cfg.model.max_length}) towards "
                     "your data's longest rows."))
    kv = p.get("RFT KV cache (generation)", 0)
    if kv:
        tips.append((kv / 2, f"Use fewer `rft.num_generations` (now {cfg.rft.num_generations}) or a shorter "
                     f"`rft.max_completion_length` (now {cfg.rft.max_completion_length})."))
    if p["adapter + optimizer"] > 0.5:
        tips.append((p["adapter + optimizer"] / 2, f"Lower the adapter rank `adapter.r` (now {cfg.adapter.r})."))
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
    seconds_per_step: tuple[float, float]  # (low, high): a rough range, not a measurement

    @property
    def total_rollouts(self) -> int:
        return self.rollouts_per_step * self.steps

    def text(self) -> str:
        lo, hi = self.seconds_per_step
        k = self.rollouts_per_step // max(1, self.prompts_per_step)
        return (f"Per step: {self.prompts_per_step} prompts x {k} samples = {self.rollouts_per_step} rollouts, up to "
                f"{self.tokens_per_step:,} generated tokens. {self.steps:,} steps: {self.total_rollouts:,} rollouts. "
                f"Rough time: {_dur(lo)} to {_dur(hi)} per step, {_dur(lo * self.steps)} to {_dur(hi * self.steps)} "
                f"in all (a guess from the model size, not a measurement).")


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rft_cost(cfg, params: int, device: str = "cuda", prompt_tokens: int | None = None,
             rows: int | None = None) -> RFTCost:
    """Rollouts and tokens per RFT step, and a rough time. Generation decodes a step's rollouts together, so it
    takes about max_completion_length decode steps (HF generate on a GPU: ~30 steps/s up to 4B parameters, ~15
    above; on CPU ~60/s for the built-in model, ~1/s for real ones); training costs about 6 x params FLOPs per
    token (forward, backward through frozen weights, checkpoint recompute) at an effective 20 TFLOP/s on a
    consumer GPU, 0.05 TFLOP/s on CPU. The range is x0.5 to x2. Steps come from `max_steps`, or from
    `epochs` over `rows` prompts (100 when unknown)."""
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
    return RFTCost(prompts, rollouts, rollouts * r.max_completion_length, steps, (seconds * 0.5, seconds * 2))
