"""The memory estimate against hand calculations (finetuner/planning/memory.py's formula, term by term)."""

import importlib.util
from pathlib import Path

import pytest

from finetuner.config import from_dict
from graders.errors import ModelError
from finetuner.planning.memory import (EIGHT_BIT_MIN, FOUR_BIT, GB, KNOWN, LOGPROB_TOKEN_TILE, LOGPROB_VOCAB_TILE, Arch,
                              adapter_params, adapter_tensors, arch_for, arch_from_config, estimate,
                              optimizer_bytes, rft_cost)

# A toy decoder small enough to add up by hand: 2 layers, hidden 8, MLP 16, 2 heads of 4, 1 KV head, vocab 10.
TOY = Arch(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=True)
GRADER = [{"name": "g", "type": "length", "max": 5}]


def cfg(**over):
    spec = {"data": {"train": "x.jsonl"}, "model": {"max_length": 5, "quantization": "auto"},
            "adapter": {"r": 2, "alpha": 4, "dropout": 0.0}, "sft": {"batch_size": 2}}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(spec)


# What training/stages.py runs on CUDA (gpu_defaults.py), fixed here so the numbers do not depend on installed packages.
GPU = {"optim": "paged_adamw_8bit", "checkpointing": True, "vllm": None, "chunked_loss": True}
CPU = {"optim": "adamw_torch_fused", "checkpointing": False, "vllm": None, "chunked_loss": True}
PRE_HOPPER_WORKSPACE = 2 * (8 * 2**20 + 128 * 2**10)  # torch's cuBLAS + cuBLASLt workspaces before Hopper


def by_hand(est) -> dict:
    return {k: v * GB for k, v in est.parts.items()}


def test_toy_shape_counts_by_hand():
    # linears per layer: q 8x8=64, k 8x4=32, v 32, o 64, gate 8x16=128, up 128, down 128 -> 576; x2 layers
    assert TOY.linear_params == 1152
    # embeddings 10x8 (tied, no lm_head) + norms 8 x (2 per layer x 2 + final) = 80 + 40
    assert TOY.embed_params == 120 and TOY.params == 1272
    # LoRA r=2 per layer: q A 2x8 + B 8x2, k 16 + 4x2, v the same, o 16 + 16, gate/up 16 + 16x2, down 2x16 + 8x2
    sizes, unknown = adapter_tensors(TOY, 2, "all-linear")
    assert sizes == [16, 16, 16, 8, 16, 8, 16, 16, 16, 32, 16, 32, 32, 16] and not unknown
    assert adapter_params(TOY, 2, "all-linear")[0] == 512 and adapter_params(TOY, 2, "q_proj")[0] == 64
    assert sum(adapter_tensors(TOY, 2, "q_proj", "dora")[0]) == 16 + 16 + 8  # DoRA adds q's 8 magnitudes


def test_nf4_weights_carry_the_double_quantization_constants():
    # QLoRA section 2: 4 bits + 8/64 (8-bit absmax per 64) + 32/(64*256) (fp32 per 256 absmax) = 4.127 bits
    assert FOUR_BIT * 8 == pytest.approx(4.127, abs=5e-4) and FOUR_BIT == 0.515869140625


def test_sft_on_a_gpu_term_by_term():
    est = estimate(None, cfg(), arch=TOY, capacity_gb=24, device="cuda", setup=GPU)
    parts = by_hand(est)
    assert parts["weights"] == pytest.approx(834.28125)  # 1152 x 0.515869140625 (NF4) + 120 x 2 (16-bit rest)
    assert parts["LoRA adapter + gradients"] == 512 * 8  # fp32 weights + fp32 gradients
    # every toy tensor is under bitsandbytes' 4096-element minimum, so its states stay fp32: 8 bytes
    assert parts["optimizer states (paged_adamw_8bit)"] == 512 * 8
    assert parts["CUDA context"] == 0.5 * GB
    assert parts["workspaces (cuBLAS, 4-bit dequant)"] == PRE_HOPPER_WORKSPACE + 8 * 16 * 2  # + gate dequantized
    # c = 6h + 2q + 2kv + 4i = 48 + 16 + 8 + 64 = 136 values x bf16 = 272 bytes per token in the recomputed
    # layer; each of the 2 layers keeps its 8-value input (32 bytes): 304 bytes x batch 2 x seq 5
    assert parts["SFT activations"] == 3040
    # chunked loss on 10 tokens: a 10 x 10 bf16 tile (200) + fp32 hidden gradient 10 x 8 x 4 (320) + 10 x 32
    assert parts["SFT logits (loss)"] == 840
    assert est.total_gb * GB == pytest.approx(sum(parts.values()))
    assert est.verdict == "fits" and est.params == 1272
    assert est.allocated_gb * GB == pytest.approx(sum(parts.values()) - 0.5 * GB)  # the context is outside torch
    hopper = estimate(None, cfg(), arch=TOY, capacity_gb=24, device="cuda", setup=GPU, cuda_capability=(9, 0))
    assert by_hand(hopper)["workspaces (cuBLAS, 4-bit dequant)"] == 2 * 32 * 2**20 + 256


def test_lora_dropout_keeps_a_copy_of_each_adapted_input():
    est = estimate(None, cfg(adapter={"dropout": 0.1}), arch=TOY, capacity_gb=24, device="cuda", setup=GPU)
    # inputs of q, k, v, gate, up (8 each), o (8) and down (16) = 64 values x (2 bytes + a 1-byte mask) = 192
    assert by_hand(est)["SFT activations"] == 2 * 5 * (32 + 272 + 192)


def test_cpu_is_fp32_without_checkpointing():
    est = estimate(None, cfg(), arch=TOY, capacity_gb=16, device="cpu", setup=CPU)
    parts = by_hand(est)
    assert parts["weights"] == 1272 * 4  # `auto` on CPU: plain fp32 LoRA
    assert parts["SFT activations"] == 2 * 5 * (2 * 136) * 4  # every layer keeps its tensors, fp32
    assert parts["SFT logits (loss)"] == 10 * 10 * 4 + 320 + 320  # fp32 tile
    assert parts["runtime (Python, torch)"] == pytest.approx(0.5 * GB)
    assert parts["optimizer states (adamw_torch_fused)"] == 512 * 8
    assert not any("workspaces" in k or "CUDA" in k for k in parts)


def test_optimizer_states_by_tensor_size():
    sizes = [8192, 100, 200_000]
    # AdamW: two fp32 states, 8 bytes per element
    assert optimizer_bytes(sizes, 1, "adamw_torch") == (208_292 * 8, 0)
    # 8-bit: 2 bytes + two fp32 absmax per 256-block for tensors >= 4096 elements; the 100-element one stays fp32
    eight = 8192 * 2 + 8 * 32 + 100 * 8 + 200_000 * 2 + 8 * 782
    assert optimizer_bytes(sizes, 1, "adamw_8bit") == (eight, 0)
    # paged: tensors >= 1e5 elements live in unified memory, outside torch's allocator
    assert optimizer_bytes(sizes, 3, "paged_adamw_8bit") == (3 * eight, 3 * (200_000 * 2 + 8 * 782))


def test_rft_takes_the_larger_of_training_and_generation():
    c = cfg(method="rft", graders=GRADER, model={"max_length": 16},
            rft={"batch_size": 4, "grad_accum": 1, "num_generations": 2, "max_completion_length": 3})
    est = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda", prompt_tokens=5, setup=GPU)
    parts = by_hand(est)
    assert parts["RFT activations"] == 4 * (5 + 3) * 304
    # loss on the 12 completion tokens only: 12 x 10 bf16 tile + 12 x 8 x 4 + 12 x 32
    assert parts["RFT logits (loss)"] == 240 + 384 + 384
    # KV: (K and V) x 2 layers x 1 head x 4 dims x 8 tokens x 4 rollouts x bf16
    assert parts["RFT KV cache (generation)"] == 2 * 2 * 4 * 8 * 4 * 2
    # sampling: 4 x 10 fp32 logits + probabilities; prefill: 4 x 5 tokens x (8 + 2 x 16) x bf16
    assert parts["RFT sampling logits + prefill"] == 320 + 1600
    base = sum(v for k, v in parts.items() if not k.startswith("RFT"))
    assert est.total_gb * GB == pytest.approx(base + max(9728 + 1008, 1024 + 1920))
    accum = estimate(None, cfg(method="rft", graders=GRADER, model={"max_length": 16},
                               rft={"batch_size": 4, "grad_accum": 2, "num_generations": 2, "max_completion_length": 3}),
                     arch=TOY, capacity_gb=24, device="cuda", prompt_tokens=5, setup=GPU)
    # TRL generates a whole accumulation round at once: twice the rollouts, twice the cache
    assert accum.parts["RFT KV cache (generation)"] == 2 * est.parts["RFT KV cache (generation)"]


def test_reference_model_and_vllm():
    c = cfg(method="rft", graders=GRADER, rft={"beta": 0.1, "batch_size": 4, "num_generations": 2,
                                              "max_completion_length": 3, "vllm_gpu_memory_utilization": 0.25})
    plain = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda", setup=GPU)
    # beta > 0 with a PEFT model: the adapter is disabled for the reference, nothing is copied
    assert plain.parts["weights"] * GB == pytest.approx(834.28125) and any("no copy" in n for n in plain.notes)
    colocated = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda", setup={**GPU, "vllm": "colocate"})
    assert colocated.parts["vLLM (colocated)"] == pytest.approx(0.25 * 24)  # its share of the 24 GB
    assert "RFT KV cache (generation)" not in colocated.parts  # vLLM's cache lives inside its share
    server = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda", setup={**GPU, "vllm": "server"})
    assert "vLLM (colocated)" not in server.parts and "RFT KV cache (generation)" not in server.parts
    assert any("separate server" in n for n in server.notes)


QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


def real(setup=GPU, **over):
    spec = {"model": {"name": QWEN, "max_length": 1024, "quantization": "auto"}, "sft": {"batch_size": 4}, **over}
    return estimate(None, cfg(**spec), capacity_gb=24, device="cuda", setup=setup)


def test_each_saving_lowers_the_estimate():
    on, off = real(), real(setup={**GPU, "checkpointing": False})
    assert on.parts["SFT activations"] < off.parts["SFT activations"] / 5 and on.total_gb < off.total_gb
    four, full = real(), real(model={"name": QWEN, "max_length": 1024, "quantization": "none"})
    # Qwen2.5-0.5B keeps its 136M embedding parameters in 16 bits, so the weights halve rather than quarter
    assert four.parts["weights"] < full.parts["weights"] / 2 and four.total_gb < full.total_gb
    chunked, whole = real(), real(setup={**GPU, "chunked_loss": False})
    # 4096 tokens x 151936 vocab x fp32 x 2 = 4.6 GB without chunking; one tile + the hidden gradient with it
    assert whole.parts["SFT logits (loss)"] == pytest.approx(4096 * 151936 * 8 / GB)
    assert chunked.parts["SFT logits (loss)"] < whole.parts["SFT logits (loss)"] / 10
    # rank 64: every adapter tensor has >= 4096 elements, so all states are 8-bit: 75 % smaller than fp32 AdamW
    rank = {"adapter": {"r": 64}}
    eight, fp32 = real(**rank), real(setup={**GPU, "optim": "adamw_torch"}, **rank)
    ratio = eight.parts["optimizer states (paged_adamw_8bit)"] / fp32.parts["optimizer states (adamw_torch)"]
    assert ratio == pytest.approx((2 + 8 / 256) / 8, rel=1e-3)
    # rank 2: the A matrices (2 x 896) stay under bitsandbytes' threshold in fp32, so 8-bit saves less than half
    low = real().parts["optimizer states (paged_adamw_8bit)"] / real(setup={**GPU, "optim": "adamw_torch"}).parts[
        "optimizer states (adamw_torch)"]
    assert 0.5 < low < 0.6
    assert eight.allocated_gb < eight.total_gb - 0.5  # the paged states are outside torch's allocator


def test_more_generations_raise_the_estimate():
    def rft(batch, gens):
        return real(method="rft", graders=GRADER, rft={"batch_size": batch, "num_generations": gens})

    two_by_four, two_by_eight = rft(8, 4), rft(16, 8)  # 2 prompts x 4 or x 8 samples
    assert two_by_eight.total_gb > two_by_four.total_gb
    assert two_by_eight.parts["RFT KV cache (generation)"] == pytest.approx(
        2 * two_by_four.parts["RFT KV cache (generation)"])


def test_defaults_follow_the_installed_packages(monkeypatch):
    from finetuner.planning import gpu_defaults

    c = cfg(method="rft", graders=GRADER, rft={"batch_size": 4, "num_generations": 2})
    monkeypatch.setattr(gpu_defaults, "bitsandbytes_available", lambda: False)
    monkeypatch.setattr(gpu_defaults, "vllm_available", lambda: False)
    est = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda")
    assert est.setup == {**GPU, "optim": "adamw_torch_fused", "quantization": "4bit"}
    monkeypatch.setattr(gpu_defaults, "bitsandbytes_available", lambda: True)
    monkeypatch.setattr(gpu_defaults, "vllm_available", lambda: True)
    est = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda")
    assert est.setup["optim"] == "paged_adamw_8bit" and est.setup["vllm"] == "colocate"
    assert est.parts["vLLM (colocated)"] == pytest.approx(0.3 * 24)
    assert estimate(None, c, arch=TOY, capacity_gb=24, device="cpu").setup == {**CPU, "quantization": "full"}
    monkeypatch.setattr(gpu_defaults, "vllm_available", lambda: False)
    asked = cfg(method="rft", graders=GRADER, rft={"batch_size": 4, "num_generations": 2, "use_vllm": "colocate"})
    est = estimate(None, asked, arch=TOY, capacity_gb=24, device="cuda")
    assert est.setup["vllm"] == "colocate" and any("not installed" in n for n in est.notes)


def _source(package: str, relative: str) -> str:
    # read, not imported: importing TRL takes ~15 s on 2 cores
    root = Path(importlib.util.find_spec(package).origin).parent
    return (root / relative).read_text(encoding="utf-8")


def test_constants_match_the_pinned_libraries():
    # the loss is chunked in both trainers with these tiles; if TRL changes them, so must memory.py
    utils = _source("trl", "trainer/utils.py")
    assert "def add_fused_lm_head(" in utils and f"_CHUNKED_LOGPROB_CHUNK_SIZE = {LOGPROB_VOCAB_TILE}\n" in utils
    assert f"TOKEN_CHUNK_SIZE = {LOGPROB_TOKEN_TILE}\n" in _source("trl", "kernels/chunked_logprob.py")
    for trainer in ("sft_trainer.py", "grpo_trainer.py"):
        assert "add_fused_lm_head(" in _source("trl", f"trainer/{trainer}")
    optim = _source("bitsandbytes", "optim/optimizer.py")
    assert f"min_8bit_size={EIGHT_BIT_MIN}," in optim and "p.numel() < 1e5" in optim and "blocksize = 256" in optim


def test_verdicts_and_advice():
    c = cfg()
    total = estimate(None, c, arch=TOY, capacity_gb=100, device="cuda", setup=GPU).total_gb
    tight = estimate(None, c, arch=TOY, capacity_gb=total / 0.9, device="cuda", setup=GPU)
    assert tight.verdict == "tight" and tight.advice[-1] == "Or pick a smaller model."
    assert estimate(None, c, arch=TOY, capacity_gb=total / 2, device="cuda", setup=GPU).verdict == "will-not-fit"


def test_real_model_advice_names_the_fields_to_change():
    big = cfg(model={"name": "Qwen/Qwen2.5-7B-Instruct", "max_length": 4096, "quantization": "none"},
              sft={"batch_size": 8})
    est = estimate(None, big, capacity_gb=24, device="cuda", setup={**GPU, "optim": "adamw_torch",
                                                                     "checkpointing": False})
    assert est.verdict == "will-not-fit" and est.total_gb > 24
    text = " ".join(est.advice)
    for field in ("quantization", "sft.batch_size", "model.max_length", "train.gradient_checkpointing"):
        assert field in text
    four = estimate(None, cfg(model={"name": "Qwen/Qwen2.5-7B-Instruct", "max_length": 4096}), capacity_gb=24,
                    device="cuda", setup=GPU)
    assert four.parts["weights"] < est.parts["weights"] / 2.5


@pytest.mark.slow  # imports gradio (~7 s)
def test_train_tab_shows_the_setup_and_the_new_terms():
    from finetuner.ui.tab_train import estimate_markdown

    c = cfg(method="rft", graders=GRADER, model={"name": QWEN}, rft={"batch_size": 4, "num_generations": 2})
    text = estimate_markdown({}, c, "24", None)
    assert "gradient checkpointing on" in text and "chunked loss" in text and "docs/memory.md" in text
    assert "| RFT KV cache (generation) |" in text or "| vLLM (colocated) |" in text
    assert "| optimizer states (" in text and "| CUDA context | 0.50 |" in text


def test_model_shapes_known_local_and_unknown():
    tiny, where = arch_for("tiny")
    assert tiny.params == 452832 and "config.json" in where  # the committed model's exact parameter count
    qwen = KNOWN["Qwen/Qwen2.5-0.5B-Instruct"]
    assert qwen.params == pytest.approx(494e6, rel=0.01)  # the model card's 0.49B
    assert arch_for("Qwen2.5-0.5B-Instruct")[0] == qwen
    nested = arch_from_config({"text_config": {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
                                               "vocab_size": 10}})
    assert nested.kv_heads == 2 and nested.head_dim == 4 and nested.intermediate == 32
    unknown = cfg(model={"name": "someone/unknown-model"})
    with pytest.raises(ModelError, match="parameter count"):
        estimate(None, unknown, capacity_gb=8, device="cuda")
    guessed = estimate(int(1.5e9), unknown, capacity_gb=8, device="cuda")
    assert guessed.params == int(1.5e9) and any("guessed" in n for n in guessed.notes)


def test_rft_cost_counts_rollouts_and_tokens():
    c = cfg(method="rft", graders=GRADER, rft={"batch_size": 8, "grad_accum": 2, "num_generations": 4,
                                              "max_completion_length": 100, "max_steps": 50})
    cost = rft_cost(c, 1_000_000_000, "cuda", prompt_tokens=50)
    assert (cost.rollouts_per_step, cost.prompts_per_step, cost.tokens_per_step) == (16, 4, 1600)
    assert cost.steps == 50 and cost.total_rollouts == 800
    lo, hi = cost.seconds_per_step
    assert hi == pytest.approx(4 * lo) and lo > 0
    assert "rough" in cost.text().lower() or "guess" in cost.text()
    by_epochs = rft_cost(cfg(method="rft", graders=GRADER, rft={"max_steps": 0, "epochs": 2, "batch_size": 8,
                                                                "num_generations": 4}), 1e6, "cpu", rows=10)
    assert by_epochs.steps == 10  # 10 prompts x 2 epochs / 2 prompts per step
