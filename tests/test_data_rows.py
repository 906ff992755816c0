"""Format detection (with config overrides) and per-row checks with located messages."""

import json

import pytest

from finetuner.config import DataConfig
from finetuner.data import DataProblems, detect_format, read_source
from finetuner.data.notes import render
from finetuner.data.rows import normalise
from graders.errors import DataError

U = {"role": "user", "content": "2+2?"}
A = {"role": "assistant", "content": "4"}


def table_of(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return read_source(str(p))


def check(tmp_path, rows, stage="sft", **cfg):
    dcfg = DataConfig(**cfg)
    t = table_of(tmp_path, rows)
    return normalise(t, detect_format(t.columns, stage, dcfg, t.name), stage, dcfg)


@pytest.mark.parametrize("columns,stage,expected", [
    (["messages"], "sft", "messages"),
    (["prompt", "completion"], "sft", "prompt_completion"),
    (["text"], "sft", "text"),
    (["prompt", "answer"], "rft", "prompt"),
    (["prompt", "completion"], "rft", "prompt"),
    (["messages", "answer"], "rft", "messages"),
    (["messages", "prompt", "completion"], "sft", "messages"),
])
def test_auto_detection(columns, stage, expected):
    assert detect_format(columns, stage, DataConfig()) == expected


def test_column_overrides_are_honoured():
    dcfg = DataConfig(prompt_column="question", completion_column="answer")
    assert detect_format(["question", "answer"], "sft", dcfg) == "prompt_completion"
    assert detect_format(["question", "answer"], "rft", dcfg) == "prompt"
    assert detect_format(["conversations"], "sft", DataConfig(messages_column="conversations")) == "messages"
    assert detect_format(["body"], "sft", DataConfig(text_column="body")) == "text"


def test_explicit_format_needs_its_columns():
    with pytest.raises(DataError, match=r"no `completion` column, which format `prompt_completion` needs.*"
                                        r"`prompt`, `answer`.*data.completion_column"):
        detect_format(["prompt", "answer"], "sft", DataConfig(format="prompt_completion"))
    with pytest.raises(DataError, match=r"cannot be used for the RFT stage: plain text has no prompts"):
        detect_format(["text"], "rft", DataConfig(format="text"))
    with pytest.raises(DataError, match=r"cannot be used for the SFT stage: prompts alone"):
        detect_format(["prompt"], "sft", DataConfig(format="prompt"))


def test_unsure_detection_lists_columns_and_the_field_to_set():
    with pytest.raises(DataError) as info:
        detect_format(["question", "answer", "id"], "sft", DataConfig(), "qa.csv")
    msg = str(info.value)
    assert "Cannot tell what qa.csv holds" in msg
    assert "Columns found: `question`, `answer`, `id`" in msg
    assert "data.prompt_column: question" in msg and "data.completion_column: answer" in msg


def test_sft_prompt_without_completion_and_rft_text_only():
    with pytest.raises(DataError, match=r"no `completion` column, so SFT has no answers.*data.completion_column"):
        detect_format(["prompt", "answer"], "sft", DataConfig())
    with pytest.raises(DataError, match=r"only plain `text`, but RFT needs prompts.*data.prompt_column"):
        detect_format(["text"], "rft", DataConfig())


def test_message_errors_name_line_and_turn(tmp_path):
    rows = [
        {"messages": [U, A]},
        {"messages": "hello"},
        {"messages": [{"role": "human", "content": "hi"}, A]},
        {"messages": [U, {"role": "assistant", "content": "  "}]},
        {"messages": [U]},
        {"messages": [{"from": "human", "value": "hi"}]},
        {"messages": [U, {"role": "assistant", "content": 4}]},
        {"other": 1},
    ]
    with pytest.raises(DataProblems) as info:
        check(tmp_path, rows)
    problems = info.value.problems
    assert problems == [
        "line 2: `messages` is text, not a list of {role, content} messages",
        "line 3: `messages`[0] has role `human`; use one of system, developer, user, assistant (write `user`)",
        "line 4: `messages`[1] (assistant) has empty content",
        "line 5: `messages` has no assistant turn, so there is nothing to learn; add the answer as "
        '{"role": "assistant", "content": ...}',
        "line 6: `messages`[0] uses ShareGPT keys `from`/`value`; write `role`/`content` (human -> user, "
        "gpt -> assistant)",
        "line 7: `messages`[1] (assistant) content is a number; it must be text",
        "line 8: no `messages`",
    ]
    assert "7 rows cannot be used" in str(info.value) and "... and 2 more." in str(info.value)
    bad_twice = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": ""}]}
    with pytest.raises(DataProblems, match=r"1 row cannot be used \(2 problems\):"):
        check(tmp_path, [bad_twice])


def test_prompt_that_is_a_number_or_empty(tmp_path):
    rows = [{"prompt": 5, "completion": "x"}, {"prompt": "ok", "completion": ""}, {"prompt": "ok"}]
    with pytest.raises(DataProblems) as info:
        check(tmp_path, rows)
    assert info.value.problems == [
        "line 1: `prompt` is a number (5); it must be text or a list of chat messages",
        "line 2: `completion` is empty",
        "line 3: no `completion`",
    ]


def test_prompt_may_be_chat_messages_also_as_json_text_in_csv(tmp_path):
    p = tmp_path / "d.csv"
    cell = json.dumps([{"role": "system", "content": "Be brief."}, U]).replace('"', '""')
    p.write_text(f'prompt,completion\n"{cell}",4\n"[INST] plain",x\n', encoding="utf-8")
    t = read_source(str(p))
    recs = normalise(t, "prompt_completion", "sft", DataConfig())
    assert recs.rows[0]["prompt"] == [{"role": "system", "content": "Be brief."}, U]
    assert recs.rows[1]["prompt"] == "[INST] plain"


def test_text_format(tmp_path):
    recs = check(tmp_path, [{"text": "Once upon a time", "id": 1}])
    assert recs.format == "text" and recs.rows == [{"text": "Once upon a time"}]
    with pytest.raises(DataError, match=r"line 1: `text` is empty"):
        check(tmp_path, [{"text": ""}])


def test_rft_final_assistant_turn_becomes_completion(tmp_path):
    rows = [{"messages": [U, A], "answer": "4"}, {"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}]
    recs = check(tmp_path, rows, stage="rft")
    assert recs.format == "messages"
    assert recs.rows[0] == {"prompt": [U], "completion": "4", "answer": "4"}
    assert recs.rows[1] == {"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}
    assert any("1 of 2 rows end with an assistant turn" in n and "{{item.completion}}" in n for n in render(recs.notes))


def test_rft_keeps_every_other_column_and_a_renamed_prompt(tmp_path):
    rows = [{"question": "2+2?", "answer": 4, "meta": {"level": 1}}]
    recs = check(tmp_path, rows, stage="rft", prompt_column="question")
    assert recs.rows[0] == {"question": "2+2?", "answer": 4, "meta": {"level": 1}, "prompt": "2+2?"}


def test_rft_only_an_assistant_turn_leaves_no_prompt(tmp_path):
    with pytest.raises(DataError, match=r"line 1: `messages` holds only an assistant turn"):
        check(tmp_path, [{"messages": [A]}], stage="rft")


def test_extra_message_keys_are_ignored_with_a_note(tmp_path):
    rows = [{"messages": [U, {**A, "weight": 0}]}, {"messages": [U, A]}]
    recs = check(tmp_path, rows)
    assert recs.rows[0] == {"messages": [U, A]}
    assert any("ignored: `weight` (1 rows)" in n for n in render(recs.notes))
