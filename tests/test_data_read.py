"""Reading data sources: JSONL, CSV, Parquet, JSON, Hub ids; content sniffing; located read errors."""

import json

import pytest

from finetuner.data import DataProblems, read_source
from graders.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


ROWS = [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(4)]


def test_jsonl_rows_keep_their_line_numbers(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\r\n", encoding="utf-8")
    t = read_source(str(p))
    assert t.kind == "jsonl" and t.rows == ROWS[:2]
    assert [t.where(0), t.where(1)] == ["line 1", "line 3"]
    assert any("Skipped 1 blank line" in n for n in t.notes)


def test_jsonl_bad_json_names_lines_and_counts_the_rest(tmp_path):
    lines = [json.dumps(ROWS[0])] * 20
    for i in (6, 8, 10, 12, 14, 16, 18):  # 0-based -> lines 7, 9, ... 19
        lines[i] = '{"prompt": "x" "completion": "y"}'
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataProblems) as info:
        read_source(str(p))
    msg = str(info.value)
    assert "bad.jsonl" in msg and "7 lines cannot be used" in msg
    assert "line 7: bad JSON: Expecting ',' delimiter (column 16)" in msg
    assert "line 15" in msg and "line 17" not in msg and "... and 2 more." in msg
    assert "one JSON object" in msg  # what to do
    assert len(info.value.problems) == 7 and info.value.problems[-1].startswith("line 19:")


def test_jsonl_line_cut_short_reports_its_real_column(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: bad JSON: Expecting ',' delimiter \(column 34\)"):
        read_source(str(p))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: a JSON list, but each line must be an object"):
        read_source(str(p))


def test_non_utf8_names_line_and_byte_offset(tmp_path):
    p = tmp_path / "latin.jsonl"
    first = (json.dumps(ROWS[0]) + "\n").encode()
    p.write_bytes(first + '{"prompt": "café", "completion": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_source(str(p))
    msg = str(info.value)
    offset = len(first) + len('{"prompt": "caf')
    assert "line 2: not UTF-8 text (byte 0xe9 at byte offset %d)" % offset in msg
    assert "save the file as UTF-8" in msg


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ROWS[0]) + "\n").encode())
    assert read_source(str(p)).rows == ROWS[:1]


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl is empty"):
        read_source(str(p))
    p.write_text("\n\n  \n")
    with pytest.raises(DataError, match=r"holds no rows"):
        read_source(str(p))


def test_json_array_in_jsonl_is_read_with_a_note(tmp_path):
    p = tmp_path / "arr.jsonl"
    p.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    t = read_source(str(p))
    assert t.rows == ROWS and t.kind == "json"
    assert any("one JSON array, not JSON Lines" in n for n in t.notes)


def test_pretty_printed_object_in_jsonl_is_read_with_a_note(tmp_path):
    p = tmp_path / "obj.jsonl"
    p.write_text(json.dumps({"data": ROWS}, indent=2), encoding="utf-8")
    t = read_source(str(p))
    assert t.rows == ROWS
    assert any("one JSON document, not JSON Lines" in n for n in t.notes)


def test_json_array_and_object_with_one_list(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(ROWS), encoding="utf-8")
    assert read_source(str(p)).rows == ROWS
    p.write_text(json.dumps({"version": 2, "data": ROWS}), encoding="utf-8")
    t = read_source(str(p))
    assert t.rows == ROWS and any('under "data"' in n for n in t.notes)


def test_json_object_with_two_lists_or_bad_json(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"train": ROWS, "test": ROWS}), encoding="utf-8")
    with pytest.raises(DataError, match=r"several lists of rows \(train, test\)"):
        read_source(str(p))
    p.write_text('[{"prompt": "a"},\n {"prompt": }]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.json: bad JSON at line 2, column 13"):
        read_source(str(p))


def test_jsonl_named_json_is_read_as_jsonl(tmp_path):
    p = tmp_path / "lines.json"
    write_jsonl(p, ROWS)
    t = read_source(str(p))
    assert t.rows == ROWS and t.where(3) == "line 4"
    assert any("JSON Lines" in n for n in t.notes)


# ---------------------------------------------------------------- CSV


def test_csv_bom_crlf_quoted_newlines(tmp_path):
    p = tmp_path / "d.csv"
    text = 'prompt,completion\r\n"Say ""hi""\r\non two lines",hi\r\nplain,"a, b"\r\n'
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    t = read_source(str(p))
    assert t.columns == ["prompt", "completion"]
    assert t.rows == [{"prompt": 'Say "hi"\r\non two lines', "completion": "hi"},
                      {"prompt": "plain", "completion": "a, b"}]
    assert [t.where(0), t.where(1)] == ["line 2", "line 4"]


def test_csv_semicolons_are_sniffed(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt;completion\n1,5 + 1;2,5\nx;y\n", encoding="utf-8")
    t = read_source(str(p))
    assert t.rows[0] == {"prompt": "1,5 + 1", "completion": "2,5"}
    assert any("semicolons" in n for n in t.notes)


def test_single_column_csv_keeps_commas_in_values(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text\nHello, world. Bye, world.\n"quoted, with\nnewline"\n', encoding="utf-8")
    assert read_source(str(p)).rows == [{"text": "Hello, world. Bye, world."}, {"text": "quoted, with\nnewline"}]


def test_tsv(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("prompt\tcompletion\na, b\tc\n", encoding="utf-8")
    assert read_source(str(p)).rows == [{"prompt": "a, b", "completion": "c"}]


def test_csv_only_a_header(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("prompt,completion\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"h.csv has a header \(prompt, completion\) but no rows"):
        read_source(str(p))


def test_csv_wrong_number_of_values_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,completion\na,b\nc,d,e\n\nf,g\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: 3 values, but the header has 2 columns"):
        read_source(str(p))


def test_csv_blank_rows_are_counted_and_empty_trailing_column_dropped(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,completion,\na,b,\n,,\nc,d,\n", encoding="utf-8")
    t = read_source(str(p))
    assert t.rows == [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    assert any("Skipped 1 empty row" in n for n in t.notes)
    assert any("Dropped an empty column" in n for n in t.notes)


def test_csv_duplicate_header(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,prompt\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"names column `prompt` more than once"):
        read_source(str(p))


def test_csv_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes("prompt,completion\na,b\ncafé,x\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"line 3 is not UTF-8 text \(byte 0xe9 at byte offset 25\).*UTF-8"):
        read_source(str(p))


# ---------------------------------------------------------------- Parquet, lying extensions, paths, Hub


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    t = read_source(str(p))
    assert t.kind == "parquet" and t.rows == ROWS and t.where(2) == "row 3"


def test_parquet_that_is_a_zip_is_refused(tmp_path):
    import zipfile

    p = tmp_path / "d.parquet"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("d.csv", "prompt\nx\n")
    with pytest.raises(DataError, match=r"d.parquet is a ZIP archive, not a Parquet file.*Unzip it"):
        read_source(str(p))


def test_parquet_that_is_jsonl_is_read_with_a_note(tmp_path):
    p = write_jsonl(tmp_path / "d.parquet", ROWS)
    t = read_source(p)
    assert t.rows == ROWS and any("named .parquet but holds JSON Lines" in n for n in t.notes)


def test_csv_named_jsonl_is_read_as_csv(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("prompt,completion\na,b\n", encoding="utf-8")
    t = read_source(str(p))
    assert t.kind == "csv" and t.rows == [{"prompt": "a", "completion": "b"}]
    assert any("named .jsonl but holds CSV" in n for n in t.notes)


def test_binary_and_utf16_files_are_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(DataError, match=r"binary file"):
        read_source(str(p))
    p.write_bytes("prompt\nx\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"UTF-16.*Save it as UTF-8"):
        read_source(str(p))


def test_relative_parent_path_is_just_a_path(tmp_path, monkeypatch):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    monkeypatch.chdir(deep)
    assert read_source("../../x.jsonl").rows == ROWS
    with pytest.raises(DataError, match=r"Data file \.\./\.\./missing\.jsonl does not exist"):
        read_source("../../missing.jsonl")


def test_hub_id_offline_says_to_upload_a_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        read_source("someone/no-such-dataset-xyz")
    msg = str(info.value)
    assert "Hugging Face Hub is unreachable" in msg and "Upload a .jsonl" in msg


def test_ten_thousand_jsonl_rows_load(tmp_path):  # speed: `python -m finetuner bench`, not a timed assert
    row = {"messages": [{"role": "user", "content": "What is 12 + 30?"},
                        {"role": "assistant", "content": "12 + 30 = 42"}], "answer": "42"}
    p = write_jsonl(tmp_path / "big.jsonl", [row] * 10_000)
    t = read_source(p)
    assert len(t.rows) == 10_000 and t.where(9_999) == "line 10000"
