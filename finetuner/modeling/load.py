"""Load a base model and its tokenizer the way a run asks for it.

`auto` quantization gives QLoRA (4-bit NF4, double quantization, bf16 compute) where a CUDA GPU and
bitsandbytes are present, and an honest fp32 LoRA fallback on CPU, with a one-line notice that the run
records. `model.name: tiny` is the built-in offline model committed under finetuner/modeling/assets/tiny.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from graders.errors import ModelError

log = logging.getLogger(__name__)


def resolve_model_path(name: str, fetch: bool = True, progress=None) -> str:
    """`tiny` -> the committed model folder; `smollm2-135m` -> the real small model's folder in the cache; a
    `.gguf` file -> its converted folder (both fetched or converted on first use, unless `fetch` is False:
    then the folder is returned even when it is not there yet, for callers that only read a config if one
    exists); anything else (Hub id or local folder) passes through."""
    from finetuner.modeling import builtin_real, gguf_in

    if name.strip().lower() == "tiny":
        from finetuner.modeling.tiny import tiny_path

        return tiny_path()
    if name.strip().lower() == "tiny-agent":  # the tool-calling tiny model (Agent RFT demo)
        from finetuner.modeling.tiny import tiny_agent_path

        return tiny_agent_path()
    if builtin_real.is_builtin_real(name):
        return builtin_real.builtin_real_path(progress) if fetch else str(builtin_real.folder())
    if gguf_in.is_gguf(name):
        if fetch:
            return gguf_in.gguf_model_path(name, progress)
        gguf = Path(name).expanduser()
        return str(gguf_in.converted_folder(gguf)) if gguf.is_file() else name
    return name


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bitsandbytes_available() -> bool:
    """Installed, even where keep_bitsandbytes_quiet has kept it out of this process (so CPU refusals still
    say "needs a CUDA GPU", not "install bitsandbytes")."""
    return _kept_out or importlib.util.find_spec("bitsandbytes") is not None


# The one line bitsandbytes logs when imported on an AVX512-BF16 CPU without the optional `kernels` package.
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_NOISE = "gemm_4bit_forward"
_kept_out = False


def _bnb_note(record: logging.LogRecord) -> bool:
    if _BNB_NOISE in str(record.msg):
        # Kept as one short line that says why it does not matter, instead of the library's install advice.
        record.msg, record.args, record.levelno, record.levelname = (
            "bitsandbytes: its optional CPU 4-bit kernel is not installed; Finetuner trains 4-bit on CUDA only, "
            "so nothing here uses it.", (), logging.INFO, "INFO")
    return True


def keep_bitsandbytes_quiet() -> bool:
    """Call first in a process of ours (the training child, the demo) before peft / trl are imported: both
    import bitsandbytes whenever it is installed, and on an AVX512-BF16 CPU that import logs "Failed to load CPU
    gemm_4bit_forward ... kernels" into every run log. Without CUDA nothing of ours uses bitsandbytes (4-bit
    and 8-bit optimizers are refused on CPU), so it is kept out of the process; with CUDA it is needed, and
    that one line becomes a short note. Returns whether it was kept out. Not for a library caller's process:
    the block lasts for the whole process."""
    global _kept_out
    if "bitsandbytes" in sys.modules:  # already imported (or already kept out): too late or nothing to do
        return _kept_out
    logging.getLogger(_BNB_CPU_LOGGER).addFilter(_bnb_note)
    if cuda_available():
        return False
    # Python's documented way to make an import fail: a None entry in sys.modules raises ImportError, which
    # peft and transformers treat as "not installed" (their checks use importlib.util.find_spec).
    sys.modules["bitsandbytes"] = None
    _kept_out = True
    return True


@dataclass
class LoadPlan:
    """What will be loaded, decided before any weights move, so the refusal comes first."""

    quantize_4bit: bool
    device: str  # "cuda" or "cpu"
    notice: str  # shown in the log and status.json; empty when nothing needs saying


def plan_loading(quantization: str) -> LoadPlan:
    cuda = cuda_available()
    bnb = bitsandbytes_available()
    if quantization == "none":
        return LoadPlan(False, "cuda" if cuda else "cpu", "" if cuda else "No CUDA GPU: training LoRA in fp32 "
                        "on CPU. Expect minutes for the built-in model, hours for real ones.")
    if quantization == "auto":
        if cuda and bnb:
            return LoadPlan(True, "cuda", "")
        if cuda:
            return LoadPlan(False, "cuda", "bitsandbytes is not installed: training LoRA on full-precision "
                            "weights (pip install bitsandbytes for QLoRA).")
        return LoadPlan(False, "cpu", "No CUDA GPU: 4-bit QLoRA needs one, so this run trains LoRA in fp32 on "
                        "CPU. Expect minutes for the built-in model, hours for real ones.")
    # explicit 4bit: bitsandbytes' CPU 4-bit path is slower than plain LoRA and, on AVX512-BF16 CPUs,
    # corrupts LoRA gradients after an eval-mode forward, so it is refused rather than offered.
    if not cuda:
        raise ModelError("`model.quantization: 4bit` needs an NVIDIA GPU with CUDA, and this machine has none. "
                         "Set `model.quantization: auto` (LoRA in fp32 here, QLoRA on a GPU) or `none`.")
    if not bnb:
        raise ModelError("`model.quantization: 4bit` needs bitsandbytes. Install it (pip install bitsandbytes) or "
                         "set `model.quantization: auto`.")
    return LoadPlan(True, "cuda", "")


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of `name`, with a pad token (TRL needs one) distinct from nothing at all."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ModelError(_not_found(name, err)) from None
    except ValueError as err:
        raise _remote_code_refused(name, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def trust_notice(name: str) -> str:
    """The warning a run with `model.trust_remote_code: true` logs and shows first."""
    return (f"model.trust_remote_code is on: model code from {name} will run on this machine, with your user's "
            f"rights, when it loads. Keep it on only for a model whose code you have read or whose publisher you "
            f"trust.")


def _remote_code_refused(name: str, err: ValueError) -> Exception:
    """transformers refuses a model that ships its own code (config.json `auto_map`) with a ValueError unless
    trust_remote_code is set: say which field to set, and why it is off by default. Other ValueErrors pass."""
    if "trust_remote_code" not in str(err):
        return err
    return ModelError(f"Model `{name}` comes with its own Python code (its config.json names it under `auto_map`), "
                      f"and that code would run on this machine when the model loads. Finetuner does not run it "
                      f"unless you allow it: set `model.trust_remote_code: true` (Train tab: Trust remote code) if "
                      f"you trust the model's publisher, or choose a model that needs no custom code.")


def _not_found(name: str, err: Exception) -> str:
    if Path(name).expanduser().exists():
        return f"Model folder {name} could not be read ({err}). It needs config.json and weights."
    return (f"Model `{name}` could not be loaded: it is not a local folder and the Hugging Face Hub is not "
            f"reachable or has no such model. Use `tiny` offline, a local folder, or check the id. ({err})")


def load_model(name: str, quantization: str = "auto", trust_remote_code: bool = False):
    """Return (model, tokenizer, plan). The model is on the plan's device, ready for PEFT."""
    import torch
    from transformers import AutoModelForCausalLM

    plan = plan_loading(quantization)
    path = resolve_model_path(name)
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if plan.quantize_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        # This process's GPU: under `accelerate launch` each rank has set its own (local rank), not GPU 0.
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["dtype"] = compute
    elif plan.device == "cuda":
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelError(_not_found(name, err)) from None
    except ValueError as err:
        raise _remote_code_refused(name, err) from None
    if not plan.quantize_4bit and plan.device == "cuda":
        model.to("cuda")
    tok = load_tokenizer(name, trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok, plan


def lora_config(adapter, task_type: str = "CAUSAL_LM"):
    """The PEFT LoraConfig for the run's adapter section (LoRA, DoRA or rsLoRA)."""
    from peft import LoraConfig

    targets = adapter.target_modules.strip()
    target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, target_modules=target_modules,
        use_dora=adapter.type == "dora", use_rslora=adapter.type == "rslora", bias="none", task_type=task_type)
