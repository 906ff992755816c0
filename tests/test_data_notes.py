"""Notes are data (data.notes.Note) merged by key across chunks and rendered to English once."""

import json

from finetuner.data import check_data
from finetuner.data import read as data_read
from finetuner.data.notes import Note, merge_notes, render


def test_counts_of_the_same_note_add_up_and_the_sentence_agrees_with_the_sum():
    notes = [Note("turns_after_answer", count=1), Note("column_missing", "id", count=3, of=2048),
             Note("turns_after_answer", count=2), Note("column_missing", "id", count=1, of=1200),
             Note("column_missing", "tags", count=5, of=2048)]
    assert render(merge_notes(notes)) == [
        "3 chats have turns after their last assistant turn; those turns were dropped, since nothing after the "
        "trained answer is learned.",
        "Column `id` is missing in 4 of 3248 rows; they get an empty value.",
        "Column `tags` is missing in 5 of 2048 rows; they get an empty value."]
    assert render([Note("turns_after_answer", count=1)])[0].startswith("1 chat has turns after")


def test_notes_with_different_details_stay_apart_and_names_merge_per_name():
    merged = merge_notes([Note("column_as_text", "id", detail="mixes number and text"),
                          Note("column_as_text", "id", detail="holds values that are not JSON (dates, bytes, ...)"),
                          Note("message_keys_ignored", names={"weight": 2}),
                          Note("message_keys_ignored", names={"name": 1, "weight": 3})])
    assert len(merged) == 3
    assert "ignored: `name` (1 rows), `weight` (5 rows)." in merged[2].text()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_chunked_check_gives_the_notes_of_a_whole_read_when_chunks_differ(tmp_path, monkeypatch):
    """Chunks that see different sets of ignored message keys still give one note, counted over the file (the
    merge that parsed English gave one note per distinct set: `weight` (37 rows) and `name` (50), `weight` (13))."""
    rows = []
    for i in range(200):
        answer = {"role": "assistant", "content": str(i), **({"weight": 1} if i % 4 == 0 else {}),
                  **({"name": "x"} if i >= 150 else {})}
        rows.append({"messages": [{"role": "user", "content": f"{i}?"}, answer], "answer": str(i)})
    path = tmp_path / "rows.jsonl"
    _write(path, rows)
    whole = check_data(str(path), "rft")
    monkeypatch.setattr(data_read, "CHUNK_BYTES", 2000)
    chunked = check_data(str(path), "rft")
    assert whole.ok and chunked.ok and chunked.notes == whole.notes
    ignored = [n for n in chunked.notes if n.startswith("Message keys")]
    assert ignored == ["Message keys other than `role` and `content` are ignored: `name` (50 rows), `weight` "
                       "(50 rows). Every assistant turn is used as written."]
    assert sum(n.startswith("Graders can use") for n in chunked.notes) == 1
    assert any(n.startswith("200 of 200 rows end with an assistant turn") for n in chunked.notes)
