"""CUDA-only checks (skipped without a GPU): QLoRA loads in 4-bit and trains with the consumer-GPU defaults, and
the peak memory is reported against the estimate. The full check is scripts/gpu_check.sh."""

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_auto_quantization_loads_4bit_on_cuda():
    import bitsandbytes as bnb

    from finetuner.modeling.load import load_model

    model, _tok, plan = load_model("tiny", "auto")
    assert plan.quantize_4bit and plan.device == "cuda" and not plan.notice
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_qlora_sft_and_rft_train_on_cuda_with_the_consumer_defaults(tmp_path):
    from gpu_check import case, write_data

    data = write_data(tmp_path)
    for name, method in (("sft", "sft"), ("rft", "rft")):
        result = case(name, method, "auto", data, tmp_path / "runs")
        assert result["ok"], result
        assert result["loaded_as"] == "4bit" and result["adapter_b_norm"] > 0
        assert result["optim"] == "paged_adamw_8bit" and result["gradient_checkpointing"] is True
        # the comparison is reported, not asserted (the target is 15 %; gpu_check.py flags a miss)
        assert result["max_memory_allocated_gb"] > 0 and result["estimate_gb"] > 0


def test_the_trainer_really_uses_paged_8bit_adamw(tmp_path):
    from gpu_check import write_data

    from finetuner.config import from_dict
    from finetuner.data import load_stage_data
    from finetuner.modeling.load import load_model, lora_config
    from finetuner.runs import new_run
    from finetuner.training.stages import build_sft_trainer

    data = write_data(tmp_path)
    cfg = from_dict({"model": {"name": "tiny"}, "data": {"train": data["train"]}, "sft": {"max_steps": 1}})
    model, tok, plan = load_model("tiny", "auto")
    trainer = build_sft_trainer(cfg, new_run(tmp_path / "runs", "x"), model, tok, load_stage_data(cfg, "sft", tok),
                                lora_config(cfg.adapter), plan.device, [])
    trainer.train()
    assert type(trainer.optimizer.optimizer).__name__ == "PagedAdamW8bit"
    assert trainer.args.activation_checkpointing and trainer.state.global_step == 1
