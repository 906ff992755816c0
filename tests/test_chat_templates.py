"""Training chat templates (modeling/chat_templates.py), `model.chat_template_kwargs`, without the real model:
the SmolLM2 template ships as an asset, and any tokenizer renders it the same."""

from __future__ import annotations

import copy

import pytest

from finetuner.config import from_dict
from finetuner.data.preview import preview_row
from finetuner.data.rows import Records
from finetuner.data.to_trl import to_sft
from finetuner.modeling.chat_templates import _asset, sft_tokenizer, training_template
from graders.errors import ConfigError

SMOLLM2 = _asset("smollm2")
TRAINING = _asset("smollm2_training")

CHATS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}],
    [{"role": "user", "content": "Only a question"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "line one\nline two"}],
]


@pytest.fixture()
def smol_tok(gen_tok):
    tok = copy.deepcopy(gen_tok)
    tok.chat_template = SMOLLM2
    return tok


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("gen_prompt", [False, True])
def test_our_training_template_renders_byte_identically(smol_tok, chat, gen_prompt):
    original = smol_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen_prompt)
    training = smol_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen_prompt,
                                            chat_template=TRAINING)
    assert training == original and "<|im_start|>" in original


def test_the_template_is_matched_exactly(smol_tok, gen_tok):
    found = training_template(smol_tok)
    assert (found.source, found.template, found.family) == ("finetuner", TRAINING, "SmolLM2/ChatML")
    assert training_template(gen_tok).source == "own"  # already marked: used as it is
    edited = copy.deepcopy(smol_tok)
    edited.chat_template = SMOLLM2.replace("SmolLM", "SmolLM ")  # one character off is another template
    assert training_template(edited).source == "none"


def test_sft_tokenizer_is_a_copy(smol_tok, gen_tok):
    patched = sft_tokenizer(smol_tok)
    assert patched is not smol_tok and patched.chat_template == TRAINING and smol_tok.chat_template == SMOLLM2
    assert sft_tokenizer(gen_tok) is gen_tok


def test_every_assistant_turn_is_trained_and_the_preview_says_so(smol_tok):
    conv = to_sft(Records("messages", [{"messages": CHATS[1]}]), smol_tok)
    assert conv.format == "messages" and conv.assistant_only_loss
    assert [n.text() for n in conv.notes] == [
        "Chat template: Finetuner's training template for SmolLM2/ChatML (every assistant turn is trained)."]
    row = preview_row(conv.rows[0], conv.format, smol_tok, "sft", "line 1")
    assert [row.text[a:b] for a, b in row.spans] == ["4<|im_end|>", "6<|im_end|>"]


def test_no_known_template_keeps_the_last_turn_and_says_so(plain_tok):
    conv = to_sft(Records("messages", [{"messages": CHATS[1]}]), plain_tok)
    assert conv.format == "prompt_completion" and not conv.assistant_only_loss
    assert conv.notes[0].text().startswith("Chat template: none known")


def test_template_kwargs_ride_along_with_chat_rows(gen_tok):
    rows = [{"prompt": "2+2=", "completion": "4"}]
    conv = to_sft(Records("prompt_completion", rows), gen_tok, {"enable_thinking": False})
    assert conv.rows[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in to_sft(Records("prompt_completion", rows), gen_tok).rows[0]


def test_chat_template_kwargs_setting(tmp_path):
    from trl import GRPOConfig

    from finetuner.runs import RunFolder
    from finetuner.training.stages import _grpo_args

    spec = {"data": {"train": "x.jsonl"}, "method": "rft", "graders": [{"name": "g", "type": "length", "max": 5}],
            "rft": {"batch_size": 2, "num_generations": 2}}
    assert from_dict(spec).model.chat_template_kwargs == {}
    cfg = from_dict({**spec, "model": {"chat_template_kwargs": {"enable_thinking": False}}})
    grpo = GRPOConfig(**_grpo_args(cfg, RunFolder(tmp_path), "cpu", [1.0], False))
    assert grpo.chat_template_kwargs == {"enable_thinking": False}
    assert GRPOConfig(**_grpo_args(from_dict(spec), RunFolder(tmp_path), "cpu", [1.0], False)).chat_template_kwargs \
        in (None, {})
    with pytest.raises(ConfigError, match="model.chat_template_kwargs.*mapping"):
        from_dict({**spec, "model": {"chat_template_kwargs": "enable_thinking=false"}})
