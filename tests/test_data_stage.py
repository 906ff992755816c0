"""load_stage_data: seeded split shared by stages, SFT/RFT conversion for TRL, mixed types, eval and rft files."""

import json

import pytest

from finetuner.config import DataConfig, RunConfig
from finetuner.data import REFERENCE_COLUMN, grader_item, load_stage_data, split_indices
from finetuner.data.to_trl import GRPO_RESERVED
from graders.errors import DataError


def chat(i, turns=1):
    msgs = []
    for t in range(turns):
        msgs += [{"role": "user", "content": f"{i}+{t}?"}, {"role": "assistant", "content": str(i + t)}]
    return msgs


def run_cfg(tmp_path, rows, method="sft", name="train.jsonl", **data):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return RunConfig(method=method, data=DataConfig(train=name, **data), base_dir=str(tmp_path))


def test_split_is_seeded_and_keeps_at_least_one_row_each_side():
    assert split_indices(100, 0.1, 42) == split_indices(100, 0.1, 42)
    train, held = split_indices(100, 0.1, 42)
    assert len(held) == 10 and sorted(train + held) == list(range(100))
    assert split_indices(100, 0.1, 7)[1] != held
    assert split_indices(2, 0.01, 1)[1] != [] and len(split_indices(2, 0.5, 1)[0]) == 1
    assert split_indices(1, 0.3, 1) == ([0], [])
    assert split_indices(50, 0.0, 1) == (list(range(50)), [])


def test_sft_then_rft_hold_out_the_same_rows(tmp_path, gen_tok):
    rows = [{"messages": chat(i), "answer": str(i)} for i in range(40)]
    cfg = run_cfg(tmp_path, rows, method="sft+rft", eval_fraction=0.2)
    sft, rft = load_stage_data(cfg, "sft", gen_tok), load_stage_data(cfg, "rft", gen_tok)
    assert len(sft.eval_rows) == 8 and sft.eval_rows == rft.eval_rows
    assert [m[:-1] for m in sft.eval["messages"]] == list(rft.eval["prompt"])
    assert len(sft.train) == len(rft.train) == 32
    again = load_stage_data(cfg, "sft", gen_tok)
    assert again.eval_rows == sft.eval_rows
    assert any("Held out 8 of 40 rows" in n for n in sft.notes)


def test_sft_messages_with_generation_template_use_assistant_only_loss(tmp_path, gen_tok):
    cfg = run_cfg(tmp_path, [{"messages": chat(i, 2), "id": i} for i in range(5)], eval_fraction=0)
    data = load_stage_data(cfg, "sft", gen_tok)
    assert data.format == "messages" and data.assistant_only_loss is True
    assert data.train.column_names == ["messages"] and data.train[0]["messages"] == chat(0, 2)
    assert data.eval is None and data.eval_rows == []


def test_sft_messages_without_generation_become_prompt_completion(tmp_path, plain_tok):
    rows = [{"messages": chat(0, 2)}, {"messages": chat(1) + [{"role": "user", "content": "thanks"}]}]
    data = load_stage_data(run_cfg(tmp_path, rows, eval_fraction=0), "sft", plain_tok)
    assert data.format == "messages" and data.assistant_only_loss is False
    assert data.train.column_names == ["prompt", "completion"]
    assert data.train[0] == {"prompt": chat(0, 2)[:3], "completion": chat(0, 2)[3:]}
    assert data.train[1] == {"prompt": chat(1)[:1], "completion": chat(1)[1:]}
    notes = " ".join(data.notes)
    assert "no {% generation %} markers" in notes
    assert "1 chat has several assistant turns" in notes and "1 chat has turns after" in notes


def test_sft_prompt_completion_is_conversational_with_a_template(tmp_path, gen_tok):
    data = load_stage_data(run_cfg(tmp_path, [{"prompt": "2+2=", "completion": "4"}] * 3, eval_fraction=0),
                           "sft", gen_tok)
    assert data.format == "prompt_completion" and not data.assistant_only_loss
    assert data.train[0] == {"prompt": [{"role": "user", "content": "2+2="}],
                             "completion": [{"role": "assistant", "content": "4"}]}


def test_sft_without_chat_template(tmp_path, bare_tok):
    data = load_stage_data(run_cfg(tmp_path, [{"prompt": "2+2=", "completion": "4"}] * 3, eval_fraction=0),
                           "sft", bare_tok)
    assert data.train[0] == {"prompt": "2+2=", "completion": "4"}
    with pytest.raises(DataError, match=r"no chat template, so chat `messages` cannot be rendered"):
        load_stage_data(run_cfg(tmp_path, [{"messages": chat(1)}]), "sft", bare_tok)


def test_sft_text(tmp_path, gen_tok):
    data = load_stage_data(run_cfg(tmp_path, [{"text": f"story {i}"} for i in range(3)], eval_fraction=0),
                           "sft", gen_tok)
    assert data.format == "text" and data.train["text"] == ["story 0", "story 1", "story 2"]


def test_rft_prompts_pass_other_columns_and_fix_mixed_types(tmp_path, gen_tok, bare_tok):
    rows = [{"prompt": f"{i}+1=", "answer": i + 1, "tags": ["math"]} for i in range(9)]
    rows.append({"prompt": "x+1=", "answer": "x+1"})
    cfg = run_cfg(tmp_path, rows, method="rft", eval_fraction=0.2)
    data = load_stage_data(cfg, "rft", gen_tok)
    assert data.format == "prompt" and set(data.train.column_names) == {"prompt", "answer", "tags"}
    everything = list(data.train) + list(data.eval)
    assert sorted(r["answer"] for r in everything) == sorted([str(i + 1) for i in range(9)] + ["x+1"])
    assert data.train.features == data.eval.features
    assert all(r["prompt"][0]["role"] == "user" for r in everything)
    notes = " ".join(data.notes)
    assert "Column `answer` mixes number and text: all its values were turned into text" in notes
    assert "Column `tags` is missing in 1 of 10 rows" in notes
    assert "{{item.<column>}}: `answer`, `tags`" in notes
    plain = load_stage_data(cfg, "rft", bare_tok)
    assert isinstance(plain.train[0]["prompt"], str)


def test_rft_from_chats_keeps_the_answer_for_graders(tmp_path, gen_tok):
    cfg = run_cfg(tmp_path, [{"messages": chat(i)} for i in range(4)], method="rft", eval_fraction=0.25)
    data = load_stage_data(cfg, "rft", gen_tok)
    # GRPO withholds a `completion` column from reward functions, so it travels under another name ...
    row = data.train[0]
    assert set(row) == {"prompt", REFERENCE_COLUMN} and row["prompt"] == [row["prompt"][0]]
    assert row["prompt"][0]["role"] == "user"
    # ... and graders get it back as {{item.completion}}.
    assert grader_item(row) == {"prompt": row["prompt"], "completion": row[REFERENCE_COLUMN]}
    notes = " ".join(data.notes)
    assert "removed from the prompt and kept as column `completion`" in notes
    assert "{{item.<column>}}: `completion`" in notes
    # The held-out rows for grading carry the answer as `completion` too.
    (held,) = data.eval_rows
    assert held["completion"] == held["messages"][-1]["content"]


def test_grpo_hands_the_columns_to_reward_functions():
    """The reserved names match what TRL's GRPOTrainer withholds from reward kwargs (read from its source,
    so a TRL upgrade that changes them fails here rather than silently dropping graders' columns)."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("trl")
    source = (Path(spec.origin).parent / "trainer" / "grpo_trainer.py").read_text()
    found = re.search(r"keys = \[key for key in inputs\[0\] if key not in \[([^\]]*)\]\]", source)
    assert found, "GRPOTrainer no longer filters reward kwargs the way data_trl expects"
    assert {k.strip().strip("'\"") for k in found.group(1).split(",")} == set(GRPO_RESERVED)


def test_eval_file_and_max_rows(tmp_path, gen_tok):
    (tmp_path / "held.jsonl").write_text(json.dumps({"prompt": "9+9=", "completion": "18"}) + "\n")
    rows = [{"prompt": f"{i}+0=", "completion": str(i)} for i in range(10)]
    cfg = run_cfg(tmp_path, rows, eval="held.jsonl", max_rows=4)
    data = load_stage_data(cfg, "sft", gen_tok)
    assert len(data.train) == 4 and data.train[3]["prompt"][0]["content"] == "3+0="
    assert data.eval_rows == [{"prompt": "9+9=", "completion": "18"}] and len(data.eval) == 1
    notes = " ".join(data.notes)
    assert "Training on the first 4 of 10 rows (data.max_rows); 6 rows are not used." in notes
    assert "held.jsonl (1 rows; data.eval)" in notes


def test_eval_file_must_match_the_train_format(tmp_path, gen_tok):
    (tmp_path / "held.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    cfg = run_cfg(tmp_path, [{"messages": chat(1)}], eval="held.jsonl")
    with pytest.raises(DataError, match=r"held.jsonl reads as format `text`, but .*train.jsonl as `messages`"):
        load_stage_data(cfg, "sft", gen_tok)


def test_rft_stage_of_sft_rft_reads_rft_train(tmp_path, gen_tok):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"{i}*2=", "answer": str(2 * i)}) + "\n"
                                                    for i in range(6)))
    cfg = run_cfg(tmp_path, [{"messages": chat(i)} for i in range(6)], method="sft+rft", rft_train="prompts.jsonl",
                  eval_fraction=0)
    data = load_stage_data(cfg, "rft", gen_tok)
    assert data.format == "prompt" and len(data.train) == 6 and data.train[0]["answer"] == "0"
    assert any("data.rft_train" in n for n in data.notes)


def test_bad_row_stops_loading_with_its_line(tmp_path, gen_tok):
    rows = [{"messages": chat(i)} for i in range(5)]
    rows[3] = {"messages": [{"role": "user", "content": "no answer"}]}
    with pytest.raises(DataError, match=r"train.jsonl: 1 row cannot be used:\n  - line 4: `messages` has no "
                                        r"assistant turn"):
        load_stage_data(run_cfg(tmp_path, rows), "sft", gen_tok)


def test_ten_thousand_rows_to_datasets(tmp_path, gen_tok):
    rows = [{"messages": chat(i), "answer": str(i)} for i in range(10_000)]
    cfg = run_cfg(tmp_path, rows, method="sft+rft")
    data = load_stage_data(cfg, "sft", gen_tok)
    assert len(data.train) == 9_000 and len(data.eval) == 1_000
