"""Consumer-GPU defaults: which optimizer, gradient checkpointing and generation engine a run gets on its device.

One place decides, so the trainer (`training/stages.py`) and the memory estimate (`memory.py`) always agree:

    optim, notice = resolve_optim(cfg.train.optim, device)         # "paged_adamw_8bit" on CUDA with bitsandbytes
    resolve_checkpointing(cfg.train.gradient_checkpointing, device)   # on for CUDA, off on CPU
    mode, notice = resolve_vllm(cfg.rft, device)                     # None | "colocate" | "server"
    check_run_settings(cfg)                                           # refuses what cannot run here, early

Why each default, with the numbers behind it: README, "Consumer-GPU defaults"; the memory each one saves:
docs/memory.md.
"""

from __future__ import annotations

import importlib.util

from graders.errors import ConfigError
from finetuner.modeling.load import bitsandbytes_available

PAGED_8BIT = "paged_adamw_8bit"
# TrainingArguments' own default with torch >= 2.8 (what the CPU path always used): AdamW, fp32 states, fused.
ADAMW = "adamw_torch_fused"
EIGHT_BIT = ("paged_adamw_8bit", "adamw_8bit")
VLLM_INSTALL = ("pip install vllm (a CUDA build matching your torch; see https://docs.vllm.ai/en/latest/"
                "getting_started/installation/)")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_optim(asked: str, device: str, bnb: bool | None = None) -> tuple[str, str]:
    """(the `optim` TrainingArguments gets, a notice or ""). `auto`: paged 8-bit AdamW on CUDA when bitsandbytes
    is installed (optimizer states 4x smaller and paged out under pressure instead of an OOM), else AdamW."""
    bnb = bitsandbytes_available() if bnb is None else bnb
    if asked == "auto":
        if device != "cuda":
            return ADAMW, ""
        if bnb:
            return PAGED_8BIT, ""
        return ADAMW, ("bitsandbytes is not installed: using AdamW with fp32 states instead of paged 8-bit "
                               "AdamW (pip install bitsandbytes saves 6 bytes per trainable parameter).")
    if asked in EIGHT_BIT:
        if not bnb:
            raise ConfigError(f"`train.optim: {asked}` needs bitsandbytes. Install it (pip install bitsandbytes) or "
                              f"set `train.optim: auto`.")
        if device != "cuda":
            raise ConfigError(f"`train.optim: {asked}` needs a CUDA GPU; this run trains on CPU. Set `train.optim: "
                              f"auto` (AdamW on CPU).")
    return asked, ""


def resolve_checkpointing(asked: str, device: str) -> bool:
    """`auto`: on for CUDA (activations shrink from every layer's tensors to one layer's, for about a third more
    compute), off on CPU, where memory is plentiful and time is not."""
    if asked == "auto":
        return device == "cuda"
    return asked == "on"


def resolve_vllm(rft, device: str, installed: bool | None = None) -> tuple[str | None, str]:
    """(vLLM mode for TRL or None for transformers' generate, a notice or ""). Raises ConfigError when vLLM is
    asked for and cannot run here."""
    installed = vllm_available() if installed is None else installed
    asked = rft.use_vllm
    if asked == "off":
        return None, ""
    if asked == "auto":
        if device == "cuda" and installed:
            return "colocate", ""
        if device == "cuda":
            return None, (f"vLLM is not installed: RFT generates with transformers (slower for long completions). "
                          f"For faster generation: {VLLM_INSTALL}.")
        return None, ""
    if not installed:
        raise ConfigError(f"`rft.use_vllm: {asked}` needs vLLM, which is not installed here. Install it ("
                          f"{VLLM_INSTALL}) or set `rft.use_vllm: off` to generate with transformers.")
    if asked == "colocate" and device != "cuda":
        raise ConfigError("`rft.use_vllm: colocate` needs a CUDA GPU; this machine has none. Set `rft.use_vllm: "
                          "off`.")
    return asked, ""


def vllm_args(rft, mode: str | None) -> dict:
    """GRPOConfig fields for the generation engine: nothing for transformers' generate."""
    if mode is None:
        return {}
    if mode == "colocate":
        return {"use_vllm": True, "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": rft.vllm_gpu_memory_utilization}
    return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": rft.vllm_server_url.rstrip("/")}


def memory_args(cfg, device: str) -> tuple[dict, str]:
    """(TrainingArguments fields for the optimizer and checkpointing, a notice or "")."""
    optim, notice = resolve_optim(cfg.train.optim, device)
    args = {"optim": optim, "activation_checkpointing": resolve_checkpointing(cfg.train.gradient_checkpointing,
                                                                              device)}
    if args["activation_checkpointing"]:
        # Non-reentrant checkpointing works with frozen 4-bit inputs without enable_input_require_grads and is
        # what torch recommends (the reentrant variant is deprecated as the default).
        args["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return args, notice


def check_run_settings(cfg, device: str | None = None) -> list[str]:
    """Refuse, before any weights load, an optimizer or vLLM setting that cannot work on this machine; returns
    the notices a person should see (a fallback taken)."""
    if device is None:
        from finetuner.modeling.load import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    notices = [resolve_optim(cfg.train.optim, device)[1]]
    if "rft" in cfg.stages:
        notices.append(resolve_vllm(cfg.rft, device)[1])
    return [n for n in notices if n]
