"""check_data / check-data: report contents, token lengths and truncation, trained-text preview, exit codes."""

import copy
import json

import pytest

from finetuner.config import DataConfig
from finetuner.data import check_data, main_check_data
from finetuner.modeling.tiny import TINY_DIR


@pytest.fixture(scope="module")
def tiny_tok():
    if not (TINY_DIR / "tokenizer.json").is_file():
        pytest.skip("the built-in tiny model (finetuner/modeling/assets/tiny) is not built yet")
    from finetuner.modeling.load import load_tokenizer

    return load_tokenizer("tiny")


def chat(question, answer):
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(p)


# The tiny tokenizer is character-level: "<|im_start|>user\n" + q + "<|im_end|>\n<|im_start|>assistant\n" + a +
# "<|im_end|>\n" is 1+5 + len(q) + 1+1+1+10 + len(a) + 1+1 = 21 + len(q) + len(a) tokens.
def test_report_counts_rows_lengths_and_truncation(tmp_path, gen_tok):
    rows = [chat("2+2?", "4"), chat("12+30?", "42"), chat("x" * 60, "y" * 20)]
    report = check_data(write(tmp_path, rows), "sft", gen_tok, max_length=50)
    assert report.ok and report.rows == 3 and report.format == "messages"
    assert report.columns == ["messages"] and report.errors == []
    s = report.lengths
    assert (s.min, s.max, s.p95, s.over_max, s.what) == (26, 101, 101, 1, "prompt + answer")
    assert s.mean == pytest.approx((26 + 29 + 101) / 3)
    assert report.truncated == 1
    text = report.text()
    assert "OK: 3 rows, format `messages`" in text
    assert "min 26, mean 52.0, p95 101, max 101" in text
    assert "1 row is longer than max_length 50 tokens and will be truncated." in text


def test_preview_marks_assistant_tokens_with_generation_template(tmp_path, gen_tok):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, *chat("2+2?", "4")["messages"],
                          {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]},
            chat("1+1?", "2")]
    report = check_data(write(tmp_path, rows), "sft", gen_tok)
    first, second = report.preview
    assert (first.stage, first.where, second.where) == ("sft", "line 1", "line 2")
    assert [first.text[a:b] for a, b in first.spans] == ["4<|im_end|>", "6<|im_end|>"]
    assert first.marked.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "<|im_start|>assistant\n⟦4<|im_end|>⟧\n<|im_start|>user" in first.marked
    assert second.marked.endswith("<|im_start|>assistant\n⟦2<|im_end|>⟧\n")
    assert "⟦2<|im_end|>⟧" in report.text()


def test_preview_without_generation_marks_only_the_last_answer(tmp_path, plain_tok):
    rows = [{"messages": chat("2+2?", "4")["messages"] + chat("3+3?", "6")["messages"]}]
    report = check_data(write(tmp_path, rows), "sft", plain_tok)
    (row,) = report.preview
    # prompt/completion: TRL trains everything after the prompt rendered with the generation prompt.
    assert [row.text[a:b] for a, b in row.spans] == ["6<|im_end|>\n"]
    assert "⟦4" not in row.marked
    assert any("no {% generation %} markers" in n for n in report.notes)


def test_preview_of_plain_prompt_completion_and_text(tmp_path, bare_tok):
    bare = bare_tok
    report = check_data(write(tmp_path, [{"prompt": "2+2=", "completion": "4"}]), "sft", bare)
    assert report.preview[0].marked == "2+2=⟦4<|im_end|>⟧"
    report = check_data(write(tmp_path, [{"text": "Once upon a time"}]), "sft", bare)
    assert report.preview[0].marked == "⟦Once upon a time<|im_end|>⟧"
    assert report.lengths.min == 17  # the text and the EOS TRL appends


def test_rft_report_previews_prompts_and_grader_columns(tmp_path, gen_tok):
    rows = [{**chat("2+2?", "4"), "id": 1}, {**chat("3+3?", "6"), "id": "b"}]
    report = check_data(write(tmp_path, rows), "rft", gen_tok, max_length=20)
    assert report.ok and report.format == "messages"
    assert report.lengths.what == "prompt" and report.lengths.over_max == 2  # 23 tokens each
    first = report.preview[0]
    assert first.spans == [] and first.marked.endswith("<|im_start|>assistant\n")
    assert first.columns == {"id": "1", "completion": "4"}
    notes = " ".join(report.notes)
    assert "Column `id` mixes number and text" in notes and "{{item.completion}}" in notes
    assert "leave no room for an answer" in report.text()


def test_sft_rft_checks_both_stages(tmp_path, gen_tok):
    report = check_data(write(tmp_path, [{"text": "just text"}]), "sft+rft", gen_tok)
    assert not report.ok and report.format == "text"
    assert len(report.errors) == 1 and report.errors[0].startswith("RFT stage: ")
    assert "only plain `text`, but RFT needs prompts" in report.errors[0]
    ok = check_data(write(tmp_path, [chat("2+2?", "4")] * 3), "sft+rft", gen_tok)
    assert ok.ok and [p.stage for p in ok.preview] == ["sft", "sft", "rft", "rft"]


def test_broken_file_lists_every_located_error(tmp_path, gen_tok):
    rows = [chat("2+2?", "4")] * 30
    p = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[2] = "{not json"
    lines[25] = json.dumps({"messages": [{"role": "user", "content": "only a question"}]})
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = check_data(str(p), "sft", gen_tok)
    assert not report.ok and report.lengths is None and report.preview == []
    assert report.errors == [f"{p}: line 3: bad JSON: Expecting property name enclosed in double quotes (column 2)"]
    assert "one JSON object" in report.hint
    p.write_text("\n".join(lines[:2] + lines[3:]) + "\n", encoding="utf-8")
    report = check_data(str(p), "sft", gen_tok)
    assert report.errors == [f"{p}: line 25: `messages` has no assistant turn, so there is nothing to learn; add "
                             'the answer as {"role": "assistant", "content": ...}']
    text = report.text()
    assert "NOT USABLE: 1 problem." in text and "line 25" in text


def test_column_overrides_and_max_rows(tmp_path, gen_tok):
    path = write(tmp_path, [{"question": "2+2?", "answer": "4"}] * 5)
    report = check_data(path, "sft", gen_tok)
    assert not report.ok and "data.prompt_column: question" in report.errors[0]
    dcfg = DataConfig(prompt_column="question", completion_column="answer", max_rows=2)
    report = check_data(path, "sft", gen_tok, dcfg)
    assert report.ok and report.format == "prompt_completion"
    assert any("training would use 2 of the 5 rows" in n for n in report.notes)


def test_without_tokenizer_only_validates(tmp_path):
    report = check_data(write(tmp_path, [chat("2+2?", "4")]), "sft")
    assert report.ok and report.lengths is None and report.preview == []
    assert any("No tokenizer" in n for n in report.notes)


# ---------------------------------------------------------------- CLI


def test_cli_exit_codes(tmp_path, capsys):
    good = write(tmp_path, [chat("2+2?", "4")] * 2, "good.jsonl")
    assert main_check_data([good, "--method", "sft", "--model", "none"]) == 0
    assert "OK: 2 rows" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,completion\na,b\nc\n", encoding="utf-8")
    assert main_check_data([str(bad), "--method", "sft", "--model", "none"]) == 1
    out = capsys.readouterr().out
    assert "NOT USABLE" in out and "line 3: 1 values, but the header has 2 columns" in out
    assert main_check_data([str(tmp_path / "missing.jsonl"), "--model", "none"]) == 1
    assert "does not exist" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main_check_data([good, "--method", "dpo"])
    assert info.value.code == 2


def test_cli_column_override(tmp_path, capsys):
    path = write(tmp_path, [{"question": "2+2?", "answer": "4"}])
    assert main_check_data([path, "--method", "rft", "--model", "none", "--prompt-column", "question"]) == 0
    assert "format `prompt`" in capsys.readouterr().out


def test_cli_with_the_tiny_model(tmp_path, capsys, tiny_tok):
    path = write(tmp_path, [chat("2+2?", "4")] * 3)
    assert main_check_data([path, "--method", "sft+rft", "--model", "tiny", "--max-length", "20"]) == 0
    out = capsys.readouterr().out
    assert "3 rows are longer than max_length 20 tokens" in out and "⟦" in out


def test_tiny_tokenizer_trains_assistant_turns_only(tmp_path, tiny_tok):
    report = check_data(write(tmp_path, [chat("2+2?", "4")]), "sft", tiny_tok)
    assert report.preview[0].marked.endswith("assistant\n⟦4<|im_end|>⟧\n")


def test_rows_the_chat_template_refuses_are_named(tmp_path, gen_tok):
    strict = copy.deepcopy(gen_tok)
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                  "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    rows = [chat("2+2?", "4"), {"messages": [{"role": "system", "content": "Be brief."}, *chat("1+1?", "2")["messages"]]}]
    report = check_data(write(tmp_path, rows), "sft", strict)
    assert not report.ok and report.errors == [f"{tmp_path / 'd.jsonl'}: line 2: System role not supported"]
    assert "chat template refuses these rows" in report.hint
