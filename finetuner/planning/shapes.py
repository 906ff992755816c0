"""Shapes of decoder models, for the memory estimate: from a model's config.json, or a table of known models.

    arch, where = arch_for("Qwen/Qwen2.5-0.5B-Instruct")   # (Arch or None, where the shape came from)
    arch.params, arch.linears(), arch.embed_params
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


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
    "smollm2-135m": Arch(30, 576, 1536, 9, 3, 64, 49152, True),  # the built-in real small model
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
    from finetuner.modeling.load import resolve_model_path

    try:
        path = Path(resolve_model_path(name, fetch=False)).expanduser()
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
