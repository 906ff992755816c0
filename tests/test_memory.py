"""The memory estimate against hand calculations (finetuner/memory.py's formula, term by term)."""

import pytest

from finetuner.config import from_dict
from finetuner.errors import ModelError
from finetuner.memory import GB, KNOWN, Arch, arch_for, arch_from_config, estimate, rft_cost

# A toy decoder small enough to add up by hand: 2 layers, hidden 8, MLP 16, 2 heads of 4, 1 KV head, vocab 10.
TOY = Arch(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=True)
GRADER = [{"name": "g", "type": "length", "max": 5}]


def cfg(**over):
    spec = {"data": {"train": "x.jsonl"}, "model": {"max_length": 5, "quantization": "auto"},
            "adapter": {"r": 2, "alpha": 4}, "sft": {"batch_size": 2}}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(spec)


def test_toy_shape_counts_by_hand():
    # linears per layer: q 8x8=64, k 8x4=32, v 32, o 64, gate 8x16=128, up 128, down 128 -> 576; x2 layers
    assert TOY.linear_params == 1152
    # embeddings 10x8 (tied, no lm_head) + norms 8 x (2 per layer x 2 + final) = 80 + 40
    assert TOY.embed_params == 120 and TOY.params == 1272


def test_sft_on_a_gpu_with_4bit_and_checkpointing():
    est = estimate(None, cfg(), arch=TOY, capacity_gb=24, device="cuda")
    parts = {k: v * GB for k, v in est.parts.items()}
    assert parts["weights"] == pytest.approx(1152 * 0.5 * (1 + 1 / 32) + 120 * 2)  # 4-bit linears, 16-bit rest
    # LoRA r=2: q 2(8+8)=32, k 2(8+4)=24, v 24, o 32, gate/up/down 2(8+16)=48 each -> 256 per layer, x2, x16 bytes
    assert parts["adapter + optimizer"] == 512 * 16
    # per token per layer c = 6h + 2q + 2kv + 4i = 48 + 16 + 8 + 64 = 136; checkpointing keeps L*h + c = 152
    assert parts["SFT activations"] == 2 * 5 * 152 * 2  # batch 2 x seq 5 x 152 values x bf16
    assert parts["SFT logits"] == 2 * 5 * 10 * 4 * 2  # fp32 logits and their gradient
    assert parts["runtime"] == pytest.approx(0.8 * GB)
    assert est.total_gb * GB == pytest.approx(sum(parts.values()))
    assert est.verdict == "fits" and est.params == 1272


def test_cpu_is_fp32_without_checkpointing():
    est = estimate(None, cfg(), arch=TOY, capacity_gb=16, device="cpu")
    parts = {k: v * GB for k, v in est.parts.items()}
    assert parts["weights"] == 1272 * 4  # `auto` on CPU: plain fp32 LoRA
    assert parts["SFT activations"] == 2 * 5 * (2 * 136) * 4  # every layer keeps its tensors, fp32
    assert parts["runtime"] == pytest.approx(0.5 * GB)


def test_rft_takes_the_larger_of_training_and_generation():
    c = cfg(method="rft", graders=GRADER, model={"max_length": 16},
            rft={"batch_size": 4, "grad_accum": 1, "num_generations": 2, "max_completion_length": 3})
    est = estimate(None, c, arch=TOY, capacity_gb=24, device="cuda", prompt_tokens=5)
    parts = {k: v * GB for k, v in est.parts.items()}
    assert parts["RFT activations"] == 4 * (5 + 3) * 152 * 2
    assert parts["RFT logits"] == 4 * 3 * 10 * 4 * 2  # completion tokens only
    # KV: 4 completions x 8 tokens x 2 layers x (K and V) x 1 head x 4 dims x bf16
    assert parts["RFT KV cache (generation)"] == 4 * 8 * 2 * 2 * 4 * 2
    peak = max(parts["RFT activations"] + parts["RFT logits"], parts["RFT KV cache (generation)"] + 4 * 10 * 4)
    base = parts["weights"] + parts["adapter + optimizer"] + parts["runtime"]
    assert est.total_gb * GB == pytest.approx(base + peak)
    beta = estimate(None, cfg(method="rft", graders=GRADER, rft={"beta": 0.1, "batch_size": 4, "num_generations": 2,
                                                                  "max_completion_length": 3}),
                    arch=TOY, capacity_gb=24, device="cuda")
    assert beta.parts["RFT logits"] * GB == 4 * 3 * 10 * 4 * 3  # the reference model's logits too


def test_verdicts_and_advice():
    c = cfg()
    total = estimate(None, c, arch=TOY, capacity_gb=100, device="cuda").total_gb
    assert estimate(None, c, arch=TOY, capacity_gb=total / 0.9, device="cuda").verdict == "tight"
    tight = estimate(None, c, arch=TOY, capacity_gb=total / 0.9, device="cuda")
    assert tight.advice[-1] == "Or pick a smaller model."
    assert estimate(None, c, arch=TOY, capacity_gb=total / 2, device="cuda").verdict == "will-not-fit"


def test_real_model_advice_names_the_fields_to_change():
    big = cfg(model={"name": "Qwen/Qwen2.5-7B-Instruct", "max_length": 4096, "quantization": "none"},
              sft={"batch_size": 8})
    est = estimate(None, big, capacity_gb=24, device="cuda")
    assert est.verdict == "will-not-fit" and est.total_gb > 24
    text = " ".join(est.advice)
    assert "quantization" in text and "sft.batch_size" in text and "model.max_length" in text
    four = estimate(None, cfg(model={"name": "Qwen/Qwen2.5-7B-Instruct", "max_length": 4096}), capacity_gb=24,
                    device="cuda")
    assert four.parts["weights"] < est.parts["weights"] / 2.5


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
