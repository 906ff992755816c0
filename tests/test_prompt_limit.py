"""Issue 12 item 4: RFT prompts over `rft.max_prompt_length` are dropped (counted, reported) rather than sent
untruncated; SFT-only evaluation answers are capped by the data, not by `rft.max_completion_length`."""

import json

import pytest

from finetuner.config import from_dict
from graders.errors import DataError

LONG = "Add 1 and 2. " + "Please think about it carefully. " * 40  # far over 64 tokens on any tokenizer


def _rft_cfg(tmp_path, rows, limit, method="rft", **extra):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"method": method, "model": {"name": "tiny", "max_length": 512}, "data": {"train": str(data),
            "eval_fraction": 0.0}, "graders": [{"name": "any", "type": "regex", "pattern": "."}],
            "rft": {"max_prompt_length": limit, **extra}}
    return from_dict(spec, base_dir=str(tmp_path))


@pytest.fixture(scope="module")
def tiny_tok():
    from finetuner.modeling.load import load_tokenizer

    return load_tokenizer("tiny")


def test_long_rft_prompts_are_dropped_and_counted(tmp_path, tiny_tok):
    from finetuner.data import load_stage_data

    rows = [{"prompt": "Add 1 and 2.", "answer": "3"}] * 5 + [{"prompt": LONG, "answer": "3"}] * 2
    data = load_stage_data(_rft_cfg(tmp_path, rows, 64), "rft", tiny_tok)
    assert len(data.train) == 5 and data.dropped_long_prompts == 2
    note = next(n for n in data.notes if "rft.max_prompt_length" in n)
    assert "2 of 7" in note and "64" in note
    # 0 turns the limit off: every row is kept
    data = load_stage_data(_rft_cfg(tmp_path, rows, 0), "rft", tiny_tok)
    assert len(data.train) == 7 and data.dropped_long_prompts == 0


def test_every_prompt_too_long_is_a_clear_error(tmp_path, tiny_tok):
    from finetuner.data import load_stage_data

    with pytest.raises(DataError, match="max_prompt_length"):
        load_stage_data(_rft_cfg(tmp_path, [{"prompt": LONG, "answer": "3"}] * 3, 64), "rft", tiny_tok)


def test_check_data_reports_prompts_too_long(tmp_path, tiny_tok):
    from finetuner.data import check_data

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"prompt": "Add 1 and 2."}, {"prompt": LONG}]))
    report = check_data(str(path), "rft", tiny_tok, max_prompt_length=64)
    assert report.ok
    assert any("1 of 2" in n and "rft.max_prompt_length" in n for n in report.notes), report.notes
    report = check_data(str(path), "rft", tiny_tok, max_prompt_length=0)
    assert not any("max_prompt_length" in n for n in report.notes)


def test_sft_only_eval_answers_are_not_cut_at_rft_max_completion_length(tmp_path, tiny_tok):
    """An SFT-only run's held-out answers are ~60 tokens: the cap comes from them, not from rft's 8."""
    from finetuner.evaluation.heldout import eval_split
    from finetuner.training.heldout_callback import HeldoutSet

    answer = "Answer: " + "seven " * 10
    rows = [{"prompt": f"Say {i}.", "completion": answer} for i in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"method": "sft", "model": {"name": "tiny", "max_length": 200},
            "data": {"train": str(data), "eval_fraction": 0.5}, "rft": {"max_completion_length": 8},
            "eval": {"every_steps": 5, "rows": 3}}
    cfg = from_dict(spec, base_dir=str(tmp_path))
    _prompts, items, _ = eval_split(cfg, tiny_tok, 3)
    longest = len(tiny_tok(answer, add_special_tokens=False)["input_ids"])
    assert longest > 8
    during_training = HeldoutSet.prepare(cfg, tiny_tok, []).max_new_tokens
    assert longest < during_training <= 200  # was rft.max_completion_length: 8
    from finetuner.evaluation.heldout import answer_token_limit

    assert answer_token_limit(cfg, items, tiny_tok) == during_training
    # capped by model.max_length
    cfg.model.max_length = 20
    assert answer_token_limit(cfg, items, tiny_tok) == 20
    # a run with RFT keeps the RFT answer length it trained with
    cfg.method = "sft+rft"
    assert answer_token_limit(cfg, items, tiny_tok) == 8


def test_the_limit_never_blocks_evaluating_an_sft_only_run(tmp_path, tiny_tok):
    """An SFT run with long chat prompts: the RFT-only limit must not stop its held-out evaluation."""
    from finetuner.evaluation.heldout import eval_split

    rows = [{"prompt": LONG, "completion": "Answer: 3"}] * 6
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = from_dict({"method": "sft", "model": {"name": "tiny", "max_length": 2048},
                     "data": {"train": str(data), "eval_fraction": 0.34}, "rft": {"max_prompt_length": 64}},
                    base_dir=str(tmp_path))
    prompts, items, _notes = eval_split(cfg, tiny_tok, 10)
    assert len(prompts) == 2 and all(LONG.strip() in item["prompt"] for item in items)
