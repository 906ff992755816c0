"""The local judge's answer likelihoods (`LocalBackend.choose`) match a plain full-logits computation."""

import os

import pytest

from graders.judge_local import LocalBackend


def _tiny():
    tiny = pytest.importorskip("finetuner.modeling.tiny")
    if not os.path.isfile(os.path.join(tiny.TINY_DIR, "model.safetensors")):
        pytest.skip("the built-in tiny model is not built (finetuner/modeling/assets/tiny)")
    return tiny.tiny_path()


def _reference(backend, conversations, answers):
    """The former implementation: every position's logits, log_softmax over the vocabulary, one pair at a time."""
    import torch

    model, tok = backend._load()
    out = []
    for messages in conversations:
        prompt = backend._prompt(tok, messages)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        scores = []
        for answer in answers:
            a = backend._answer_ids(tok, messages, prompt, answer)
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([p + a])).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)[0]
            scores.append(float(sum(logprobs[len(p) - 1 + i, t] for i, t in enumerate(a))))
        out.append(dict(zip(answers, torch.softmax(torch.tensor(scores), dim=0).tolist())))
    return out


def test_choose_matches_full_logits_across_token_chunks():
    backend = LocalBackend(_tiny())
    conversations = [[{"role": "user", "content": "Rate 2+2=4 from 0 to 12"}],
                     [{"role": "user", "content": "Rate this much longer answer about adding two and three: 5"}]]
    answers = [str(v) for v in range(13)]  # "1" vs "10".."12": answers of different token lengths
    want = _reference(backend, conversations, answers)
    backend.tokens_per_pass = 60  # a few rows per pass: chunks split conversations and mix them
    passes = []
    backend._chunks = (lambda orig: lambda ls: [passes.append(c) or c for c in orig(ls)])(backend._chunks)
    got = backend.choose(conversations, answers)
    assert len(passes) > 2  # the small budget really split the pairs into several passes
    assert got[0] != got[1]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert max(abs(g[k] - w[k]) for k in g) < 1e-5
        assert abs(sum(g.values()) - 1) < 1e-5


def test_chunks_bound_padded_tokens_and_keep_every_row():
    backend = LocalBackend("unused")
    backend.tokens_per_pass = 10
    chunks = list(backend._chunks([3, 3, 3, 4, 20, 2]))
    assert chunks == [(0, 3), (3, 4), (4, 5), (5, 6)]  # 3x3=9 fits, 4x4 would not; 20 alone still runs
    assert list(backend._chunks([])) == []
