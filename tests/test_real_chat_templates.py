"""Chat templates on the real small model (SmolLM2-135M-Instruct, ChatML without {% generation %}): every
assistant turn of a multi-turn chat is trained, `model.chat_template_kwargs` reaches every place the template is
applied, and plain-text prompts keep the BOS token the tokenizer adds."""

from __future__ import annotations

import copy
import json

import pytest

from finetuner.config import from_dict
from finetuner.data import load_stage_data
from finetuner.runs import RunFolder

pytestmark = [pytest.mark.real, pytest.mark.slow]

CHAT = [{"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four, of course."},
        {"role": "user", "content": "And three plus three?"},
        {"role": "assistant", "content": "Six, naturally."}]

# A tiny template that reads `enable_thinking` the way Qwen3's does.
THINKING = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% if enable_thinking is not defined or enable_thinking %}<think>{% endif %}{% endif %}")


def _cfg(tmp_path, real_model, rows, **over):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"model": {"name": real_model, "max_length": 96}, "data": {"train": str(path), "eval_fraction": 0},
            "method": "sft", "sft": {"max_steps": 1, "batch_size": 1}}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(spec)


def test_every_assistant_turn_of_a_chat_is_trained(tmp_path, real_model, real_tok):
    from transformers import AutoModelForCausalLM

    from finetuner.training.stages import build_sft_trainer

    cfg = _cfg(tmp_path, real_model, [{"messages": CHAT}] * 2)
    data = load_stage_data(cfg, "sft", real_tok)
    model = AutoModelForCausalLM.from_pretrained(real_model)
    trainer = build_sft_trainer(cfg, RunFolder(tmp_path / "run"), model, real_tok, data, None, "cpu", [])
    row = trainer.train_dataset[0]
    trained = real_tok.decode([t for t in row["labels"] if t != -100])  # what the loss is computed on
    # Both answers, each with its end-of-turn token (so the model learns to stop), and nothing of the user's.
    assert trained == "Four, of course.<|im_end|>Six, naturally.<|im_end|>"
    assert any("Finetuner's training template for SmolLM2/ChatML" in n for n in data.notes), data.notes
    # The tokenizer that is saved with the adapter keeps the model's own template.
    assert "{% generation %}" not in real_tok.chat_template
    assert "{% generation %}" in trainer.processing_class.chat_template


def _thinking_tok(real_tok):
    tok = copy.deepcopy(real_tok)
    tok.chat_template = THINKING
    return tok


def test_chat_template_kwargs_reach_generation_and_rft(tmp_path, real_model, real_tok):
    from trl import GRPOConfig

    from finetuner.modeling.generate import prompt_ids, render_prompt
    from finetuner.training.stages import _grpo_args

    tok = _thinking_tok(real_tok)
    assert render_prompt(tok, "Hi").endswith("<think>")  # the template's default: thinking on
    off = {"enable_thinking": False}
    assert render_prompt(tok, "Hi", off) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(prompt_ids(tok, "Hi", off)) == render_prompt(tok, "Hi", off)
    cfg = _cfg(tmp_path, real_model, [{"prompt": "Hi"}] * 2, method="rft", model={"chat_template_kwargs": off},
               graders=[{"name": "g", "type": "length", "max": 5}],
               rft={"max_steps": 1, "batch_size": 2, "num_generations": 2})
    grpo = GRPOConfig(**_grpo_args(cfg, RunFolder(tmp_path / "run"), "cpu", [1.0], False))
    assert grpo.chat_template_kwargs == off


def test_sft_rows_carry_chat_template_kwargs(tmp_path, real_model, real_tok):
    from transformers import AutoModelForCausalLM

    from finetuner.training.stages import build_sft_trainer

    tok = _thinking_tok(real_tok)
    tok.chat_template = THINKING.replace("{% if add_generation_prompt %}", "{% if True %}")  # thinks after a chat
    off = {"enable_thinking": False}
    cfg = _cfg(tmp_path, real_model, [{"prompt": "Hi", "completion": "Hello"}] * 2,
               model={"chat_template_kwargs": off})
    data = load_stage_data(cfg, "sft", tok)
    model = AutoModelForCausalLM.from_pretrained(real_model)
    trainer = build_sft_trainer(cfg, RunFolder(tmp_path / "run"), model, tok, data, None, "cpu", [])
    assert "<think>" not in tok.decode(trainer.train_dataset[0]["input_ids"])


def test_plain_text_prompts_get_bos_once(real_tok):
    from finetuner.modeling.generate import prompt_ids

    tok = copy.deepcopy(real_tok)
    tok.add_bos_token = True  # SmolLM2 adds no BOS; this copy does, like Llama-style tokenizers
    bos, body = tok.bos_token_id, real_tok("Hello there", add_special_tokens=False)["input_ids"]
    assert tok("x")["input_ids"][0] == bos
    tok.chat_template = None  # a base model: the prompt is plain text
    assert prompt_ids(tok, "Hello there") == [bos] + body
    assert prompt_ids(tok, tok.bos_token + "Hello there") == [bos] + body  # already there: not twice
    # A template that writes BOS itself: exactly one.
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ids = prompt_ids(tok, [{"role": "user", "content": "Hello there"}])
    assert ids == [bos] + body and ids.count(bos) == 1
