"""Model loading plans (QLoRA on CUDA, honest LoRA on CPU), the 4-bit CPU workaround, adapters, errors."""

import pytest

from finetuner import models
from finetuner.config import AdapterConfig
from finetuner.errors import ModelError


def test_auto_on_cpu_is_fp32_lora_with_a_notice(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    plan = models.plan_loading("auto")
    assert not plan.quantize_4bit and plan.device == "cpu" and "No CUDA GPU" in plan.notice


def test_auto_on_cuda_is_qlora(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: True)
    plan = models.plan_loading("auto")
    assert plan.quantize_4bit and plan.device == "cuda" and plan.notice == ""
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: False)
    assert "pip install bitsandbytes" in models.plan_loading("auto").notice


def test_explicit_4bit_without_bitsandbytes_is_refused(monkeypatch):
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: False)
    with pytest.raises(ModelError, match="needs bitsandbytes"):
        models.plan_loading("4bit")


def test_4bit_on_cpu_turns_off_the_avx512bf16_path():
    import bitsandbytes as bnb

    model, _tok, plan = models.load_model("tiny", "4bit")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert plan.quantize_4bit and plan.device == "cpu" and "AVX512-BF16" in plan.notice
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)


def test_tiny_loads_offline_in_fp32():
    import torch

    model, tok, plan = models.load_model("tiny", "auto")
    assert next(model.parameters()).dtype == torch.float32 and tok.pad_token_id != tok.eos_token_id
    assert model.config.model_type == "llama"


def test_unknown_model_says_what_to_do():
    with pytest.raises(ModelError, match="not a local folder and the Hugging Face Hub is not reachable"):
        models.load_tokenizer("nobody/no-such-model-xyz")


def test_adapter_kinds_and_targets():
    assert models.lora_config(AdapterConfig()).target_modules == "all-linear"
    dora = models.lora_config(AdapterConfig(type="dora", target_modules="q_proj, v_proj", r=8, alpha=16))
    assert dora.use_dora and set(dora.target_modules) == {"q_proj", "v_proj"} and dora.r == 8
    assert models.lora_config(AdapterConfig(type="rslora")).use_rslora
