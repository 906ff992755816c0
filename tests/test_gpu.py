"""CUDA-only checks (skipped without a GPU): QLoRA loads in 4-bit and trains; the full check is scripts/gpu_check.py."""

import pytest

pytestmark = pytest.mark.gpu


def test_auto_quantization_loads_4bit_on_cuda():
    import bitsandbytes as bnb

    from finetuner.models import load_model

    model, _tok, plan = load_model("tiny", "auto")
    assert plan.quantize_4bit and plan.device == "cuda" and not plan.notice
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_qlora_sft_and_rft_train_on_cuda(tmp_path):
    import sys

    sys.path.insert(0, "scripts")
    from gpu_check import case, write_data

    data = write_data(tmp_path)
    for name, method in (("sft", "sft"), ("rft", "rft")):
        result = case(name, method, "auto", data, tmp_path / "runs")
        assert result["ok"], result
        assert result["loaded_as"] == "4bit" and result["adapter_b_norm"] > 0
