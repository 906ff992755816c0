"""Model loading plans (QLoRA on CUDA, honest LoRA on CPU), adapters, errors."""

import pytest

from finetuner.modeling import load as models
from finetuner.config import AdapterConfig
from graders.errors import ModelError


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
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: False)
    with pytest.raises(ModelError, match="needs bitsandbytes"):
        models.plan_loading("4bit")


def test_explicit_4bit_without_cuda_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: True)
    with pytest.raises(ModelError, match="needs an NVIDIA GPU with CUDA") as info:
        models.load_model("tiny", "4bit")
    assert "model.quantization: auto" in str(info.value)


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
