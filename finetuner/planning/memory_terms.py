"""The terms the memory estimate adds up, one function each, in bytes (GB = 1024**3); memory.estimate sums them.

Each function's docstring names its formula's source; docs/memory.md has every term with a worked example.
P parameters, L layers, h hidden, i MLP width, V vocabulary, q = heads x head_dim, kv = key/value heads x
head_dim; b = 2 for activations on a GPU (bf16/fp16), 4 on CPU (fp32); B micro-batch, S sequence, C completion,
G rollouts generated together (rft.batch_size x rft.grad_accum):

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
"""

from __future__ import annotations

import math

from finetuner.planning.shapes import Arch

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


def targets(arch: Arch, names: str) -> tuple[list[str], list[str]]:
    """(the targeted linears, unknown target names): `all-linear` or an empty list means every linear, and a
    list naming none of them falls back to every linear (PEFT's target_modules)."""
    linears = arch.linears()
    wanted = [t.strip() for t in names.split(",") if t.strip()]
    if not wanted or wanted == ["all-linear"]:
        wanted = list(linears)
    unknown = [t for t in wanted if t not in linears]
    return [t for t in wanted if t in linears] or list(linears), unknown


def adapter_tensors(arch: Arch, r: int, names: str, kind: str = "lora") -> tuple[list[int], list[str]]:
    """Element counts of one layer's adapter tensors, and unknown target names: PEFT's lora_A (r x in) and
    lora_B (out x r) per targeted linear, plus DoRA's magnitude vector (out) (docs/memory.md, adapter row)."""
    linears = arch.linears()
    chosen, unknown = targets(arch, names)
    sizes = []
    for t in chosen:
        fan_in, fan_out = linears[t]
        sizes += [r * fan_in, fan_out * r] + ([fan_out] if kind == "dora" else [])
    return sizes, unknown


def adapter_params(arch: Arch, r: int, names: str, kind: str = "lora") -> tuple[int, list[str]]:
    """LoRA parameters over the targeted linears (and unknown target names, to report)."""
    shapes, unknown = adapter_tensors(arch, r, names, kind)
    return arch.layers * sum(shapes), unknown


def weights_bytes(params: int, embed: int, quant: str, device: str) -> float:
    """The base model's weights: NF4 with double quantization for the linears under 4-bit loading (QLoRA,
    Dettmers et al. 2023, section 2), the `embed` embedding and norm parameters kept 16-bit by bitsandbytes;
    else bf16 on a GPU, fp32 on CPU."""
    linear = max(0, params - embed)
    if quant == "4bit":
        return linear * FOUR_BIT + embed * 2
    per = 2 if device == "cuda" else 4
    return params * per


def adapter_bytes(sizes: list[int], layers: int) -> float:
    """The adapter's fp32 weights and fp32 gradients, 8 bytes per parameter (PEFT upcasts adapters to fp32)."""
    return layers * sum(sizes) * 8


def optimizer_bytes(sizes: list[int], layers: int, optim: str) -> tuple[float, float]:
    """(bytes of optimizer states, of which paged to unified memory) for adapter tensors of `sizes` per layer:
    AdamW's two fp32 states; bitsandbytes' 8-bit ones (optim/optimizer.py: min_8bit_size, blocksize, and
    paging from 1e5 elements)."""
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


def runtime_bytes(device: str) -> tuple[str, float]:
    """(name, bytes) of what the process holds before any tensor: the CUDA context (driver context and loaded
    kernels with lazy module loading, outside torch's allocator) or, on CPU, Python, torch and the libraries."""
    return ("CUDA context", CUDA_CONTEXT) if device == "cuda" else ("runtime (Python, torch)", CPU_RUNTIME)


def workspace_bytes(capability: tuple[int, int] | None) -> float:
    """torch's cuBLAS and cuBLASLt workspaces: 32 MiB each on Hopper (compute capability 9) and newer."""
    return WORKSPACE_HOPPER if capability and capability[0] >= 9 else WORKSPACE_OLDER


def workspaces_bytes(arch: Arch, quant: str, capability: tuple[int, int] | None) -> float:
    """torch's cuBLAS workspaces, plus under 4-bit the largest linear dequantized to 16 bits for its matmul
    (bitsandbytes dequantizes one linear at a time; docs/memory.md, workspaces row)."""
    largest = max(a * c for a, c in arch.linears().values())
    return workspace_bytes(capability) + (largest * 2 if quant == "4bit" else 0)


def vllm_bytes(utilization: float, capacity_gb: float) -> float:
    """Colocated vLLM: the share of the GPU vLLM reserves up front for its weights and KV cache
    (`rft.vllm_gpu_memory_utilization`, vLLM's gpu_memory_utilization)."""
    return utilization * capacity_gb * GB


def dropout_inputs(arch: Arch, names: str, dropout: float) -> int:
    """Summed input widths of the targeted linears, whose LoRA dropout keeps a copy of its input and a 1-byte
    mask (0 without dropout: PEFT uses an identity then)."""
    linears = arch.linears()
    chosen, _ = targets(arch, names)
    return sum(linears[t][0] for t in chosen) if dropout > 0 else 0


def activation_bytes(arch: Arch, batch: int, seq: int, b: int, checkpointing: bool, lora_in: int = 0) -> float:
    """Activations kept for the backward pass, counted tensor by tensor in a Llama-style decoder layer (docs/
    memory.md, activations rows; attention scores are not kept by SDPA kernels): every layer's, or with gradient
    checkpointing each layer's input plus the one layer being recomputed. `lora_in`: see dropout_inputs."""
    per_layer = (6 * arch.hidden + 2 * arch.q_dim + 2 * arch.kv_dim + 4 * arch.intermediate) * b + lora_in * (b + 1)
    kept = arch.layers * arch.hidden * b + per_layer if checkpointing else arch.layers * per_layer
    return batch * seq * kept


def loss_bytes(arch: Arch, tokens: int, b: int, chunked: bool) -> float:
    """The LM head and loss over `tokens` positions: TRL 1.16's fused LM head (add_fused_lm_head) keeps one tile
    of its chunk sizes above, the fp32 hidden-state gradient and per-token statistics; unchunked, fp32 logits
    and their gradient (docs/memory.md, logits rows)."""
    if not chunked:
        return tokens * arch.vocab * 4 * 2
    tile = min(tokens, LOGPROB_TOKEN_TILE) * min(arch.vocab, LOGPROB_VOCAB_TILE) * b
    return tile + tokens * arch.hidden * 4 + tokens * 32


def generation_bytes(arch: Arch, rollouts: int, prompt: int, completion: int, b: int) -> tuple[float, float]:
    """(KV cache, sampling logits + one prefill layer's MLP) of transformers' generate for `rollouts` at once:
    K and V of every layer for every rollout, fp32 logits and probabilities of one decode step (docs/memory.md)."""
    kv = 2 * arch.layers * arch.kv_dim * (prompt + completion) * rollouts * b
    other = rollouts * arch.vocab * 4 * 2 + rollouts * prompt * (arch.hidden + 2 * arch.intermediate) * b
    return kv, other
