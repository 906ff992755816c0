"""Consumer-GPU defaults (gpu_defaults.py, training/stages.py's argument builders), checked on CPU: the CUDA branches run
with the device named "cuda" and the package checks monkeypatched; no CUDA tensor is ever made."""

import logging
from types import SimpleNamespace

import pytest

from finetuner.planning import gpu_defaults
from finetuner.config import from_dict
from graders.errors import ConfigError
from finetuner.training.stages import _common_args, _grpo_args, _sft_args

GRADER = [{"name": "g", "type": "length", "max": 5}]


def cfg(**over):
    spec = {"data": {"train": "x.jsonl"}, "method": "sft+rft", "graders": GRADER,
            "rft": {"batch_size": 4, "num_generations": 2}}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(spec)


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA machine with bf16, bitsandbytes and no vLLM, as far as the builders can tell."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(gpu_defaults, "bitsandbytes_available", lambda: True)
    monkeypatch.setattr(gpu_defaults, "vllm_available", lambda: False)
    return monkeypatch


def run(tmp_path):
    return SimpleNamespace(checkpoints=tmp_path / "checkpoints")


def test_cuda_gets_paged_8bit_adamw_and_non_reentrant_checkpointing(gpu, tmp_path):
    args = _common_args(cfg(), "sft", run(tmp_path), "cuda")
    assert args["optim"] == "paged_adamw_8bit" and args["bf16"] and not args["fp16"]
    assert args["activation_checkpointing"] is True
    assert args["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert "use_cpu" not in args
    grpo = _grpo_args(cfg(), run(tmp_path), "cuda", [1.0], False)
    assert grpo["optim"] == "paged_adamw_8bit" and grpo["activation_checkpointing"] is True
    assert "use_vllm" not in grpo  # vLLM not installed: transformers generates


def test_cpu_path_is_unchanged(gpu, tmp_path):
    args = _common_args(cfg(), "sft", run(tmp_path), "cpu")
    assert args["optim"] == "adamw_torch_fused" and args["activation_checkpointing"] is False
    assert args["use_cpu"] and args["dataloader_pin_memory"] is False and not args["bf16"] and not args["fp16"]
    assert "activation_checkpointing_kwargs" not in args


def test_missing_bitsandbytes_falls_back_to_adamw_with_a_notice(gpu, tmp_path, caplog):
    gpu.setattr(gpu_defaults, "bitsandbytes_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="finetuner.training.stages"):
        args = _common_args(cfg(), "sft", run(tmp_path), "cuda")
    assert args["optim"] == "adamw_torch_fused" and args["activation_checkpointing"] is True
    assert "bitsandbytes is not installed" in caplog.text and "pip install bitsandbytes" in caplog.text
    assert gpu_defaults.check_run_settings(cfg(), "cuda")[0].startswith("bitsandbytes is not installed")


def test_explicit_settings_win_or_are_refused_clearly(gpu, tmp_path):
    off = cfg(train={"gradient_checkpointing": "off", "optim": "adamw_torch"})
    args = _common_args(off, "sft", run(tmp_path), "cuda")
    assert args["activation_checkpointing"] is False and args["optim"] == "adamw_torch"
    assert _common_args(cfg(train={"gradient_checkpointing": "on"}), "sft", run(tmp_path), "cpu")[
        "activation_checkpointing"] is True
    eight = cfg(train={"optim": "adamw_8bit"})
    assert _common_args(eight, "sft", run(tmp_path), "cuda")["optim"] == "adamw_8bit"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        _common_args(eight, "sft", run(tmp_path), "cpu")
    gpu.setattr(gpu_defaults, "bitsandbytes_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.optim: adamw_8bit.*pip install bitsandbytes"):
        gpu_defaults.check_run_settings(eight, "cuda")


def test_vllm_auto_colocates_only_on_cuda_with_vllm(gpu, tmp_path):
    gpu.setattr(gpu_defaults, "vllm_available", lambda: True)
    grpo = _grpo_args(cfg(rft={"vllm_gpu_memory_utilization": 0.4}), run(tmp_path), "cuda", [1.0], False)
    assert (grpo["use_vllm"], grpo["vllm_mode"], grpo["vllm_gpu_memory_utilization"]) == (True, "colocate", 0.4)
    assert "use_vllm" not in _grpo_args(cfg(), run(tmp_path), "cpu", [1.0], False)
    assert "use_vllm" not in _grpo_args(cfg(rft={"use_vllm": "off"}), run(tmp_path), "cuda", [1.0], False)
    server = _grpo_args(cfg(rft={"use_vllm": "server", "vllm_server_url": "http://gpu-box:8000/"}), run(tmp_path),
                        "cuda", [1.0], False)
    assert (server["vllm_mode"], server["vllm_server_base_url"]) == ("server", "http://gpu-box:8000")


def test_vllm_asked_for_but_missing_is_refused_with_how_to_install(gpu, tmp_path):
    notice = gpu_defaults.check_run_settings(cfg(), "cuda")
    assert any("vLLM is not installed" in n and "pip install vllm" in n for n in notice)  # auto: explained, off
    for mode in ("colocate", "server"):
        with pytest.raises(ConfigError, match=r"needs vLLM.*pip install vllm.*use_vllm: off"):
            gpu_defaults.check_run_settings(cfg(rft={"use_vllm": mode}), "cuda")
    gpu.setattr(gpu_defaults, "vllm_available", lambda: True)
    with pytest.raises(ConfigError, match="colocate` needs a CUDA GPU"):
        gpu_defaults.check_run_settings(cfg(rft={"use_vllm": "colocate"}), "cpu")
    with pytest.raises(ConfigError, match="vllm_server_url"):
        cfg(rft={"use_vllm": "server", "vllm_server_url": "gpu-box:8000"})


def test_a_run_asking_for_missing_vllm_fails_before_loading_anything(gpu, tmp_path):
    from finetuner.modeling import load as models
    from finetuner.runs import new_run
    from finetuner.training.stages import train_run

    def never(*a, **k):
        raise AssertionError("the model must not load")

    gpu.setattr(models, "load_model", never)
    gpu.setattr(models, "load_tokenizer", never)
    status = train_run(cfg(rft={"use_vllm": "colocate"}), new_run(tmp_path, "v"))
    assert status["state"] == "failed" and "needs vLLM" in status["error"] and "pip install vllm" in status["error"]


def test_rft_generation_batch_must_hold_whole_groups():
    with pytest.raises(ConfigError, match=r"multiple of `rft.num_generations` \(4\)"):
        cfg(rft={"batch_size": 6, "grad_accum": 1, "num_generations": 4})
    assert cfg(rft={"batch_size": 2, "grad_accum": 2, "num_generations": 4}).rft.grad_accum == 2  # 2 x 2 = 4


@pytest.mark.slow  # imports TRL (~15 s on 2 cores)
def test_every_built_argument_is_a_trl_config_field(gpu, tmp_path):
    import dataclasses

    from trl import GRPOConfig, SFTConfig

    gpu.setattr(gpu_defaults, "vllm_available", lambda: True)
    for config_cls, args in ((SFTConfig, _sft_args(cfg(), run(tmp_path), "cuda", False)),
                             (GRPOConfig, _grpo_args(cfg(), run(tmp_path), "cuda", [1.0], True)),
                             (GRPOConfig, _grpo_args(cfg(rft={"use_vllm": "server"}), run(tmp_path), "cuda", [1.0],
                                                     False))):
        names = {f.name for f in dataclasses.fields(config_cls)}
        assert set(args) <= names, set(args) - names
    # on CPU the configs are built for real, as training/stages.py does
    gpu.setattr(gpu_defaults, "vllm_available", lambda: False)
    sft = SFTConfig(**_sft_args(cfg(), run(tmp_path), "cpu", False))
    assert sft.optim == "adamw_torch_fused" and sft.activation_checkpointing is False
    grpo = GRPOConfig(**_grpo_args(cfg(), run(tmp_path), "cpu", [1.0], False))
    assert grpo.activation_checkpointing is False and grpo.use_vllm is False
    assert grpo.generation_batch_size % grpo.num_generations == 0


def test_gpu_check_estimates_with_the_data_s_own_lengths(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from gpu_check import token_lengths, write_data

    prompt, full = token_lengths(write_data(tmp_path)["train"])
    assert 20 < prompt < full <= 64  # chat-templated prompts of sums, then "Answer: N"; max_length is 64
