"""Bad data, fault by fault, through all three doors: the training loader (load_stage_data), the `check-data`
CLI and the Data tab's upload handler. Each fault must give a message naming the place and the fix, never a
traceback, and nothing may be dropped without a count."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetuner.data import read as data_read
from finetuner.config import DataConfig, ModelConfig, RunConfig
from finetuner.data import check_data, load_stage_data, main_check_data
from graders.errors import DataError
from finetuner.ui import data_view, tab_data
from finetuner.ui.context import AppContext, new_project

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(method="sft", fmt="auto", messages_column="", prompt_column="", completion_column="",
                text_column="", split="train", eval_mode=tab_data.EVAL_SHARE, eval_fraction=0.0, max_rows=0)


def chat(q="2+2?", a="4"):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def ctx(tmp_path):
    return AppContext(tmp_path / "runs")


def loader(path: Path, method="sft", tok=None, max_length=512):
    cfg = RunConfig(method=method, data=DataConfig(train=path.name, eval_fraction=0.0),
                    model=ModelConfig(max_length=max_length), base_dir=str(path.parent))
    return load_stage_data(cfg, "sft" if method != "rft" else "rft", tok)


def cli(path: Path, capsys, method="sft", *extra) -> tuple[int, str]:
    rc = main_check_data([str(path), "--method", method, "--model", "none", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return rc, captured.out


def tab(ctx, path: Path, method="sft") -> tuple[dict, str]:
    out = tab_data.upload_data(ctx, new_project(), str(path), *{**SETTINGS, "method": method}.values())
    return out[0], out[1]


def three_doors_refuse(path: Path, ctx, capsys, gen_tok, method, *expected):
    """The loader raises a DataError, the CLI exits 1, the tab says "Not usable": all with every `expected` text."""
    with pytest.raises(DataError) as info:
        loader(path, method, gen_tok)
    rc, out = cli(path, capsys, method)
    project, status = tab(ctx, path, method)
    assert rc == 1 and "NOT USABLE" in out
    assert not project["data"]["ok"] and "Not usable yet" in status
    for text in expected:
        assert text in str(info.value), (text, str(info.value))
        assert text in out, (text, out)
        assert text in status, (text, status)
    return str(info.value), out, status


# ---------------------------------------------------------------- whole-file faults


@pytest.mark.parametrize("name, content, expected", [
    ("empty.jsonl", b"", ["is empty", "Upload a .jsonl"]),
    ("blank.jsonl", b"\n  \n\r\n", ["holds no rows", "Upload a .jsonl"]),
    ("header.csv", b"prompt,completion\r\n", ["has a header (prompt, completion) but no rows",
                                              "Add rows under the header"]),
])
def test_empty_file_or_only_a_header(tmp_path, ctx, capsys, gen_tok, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    three_doors_refuse(path, ctx, capsys, gen_tok, "sft", *expected)


def test_parquet_that_is_really_a_zip(tmp_path, ctx, capsys, gen_tok):
    import zipfile

    path = tmp_path / "d.parquet"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("d.csv", "prompt,completion\na,b\n")
    three_doors_refuse(path, ctx, capsys, gen_tok, "sft", "is a ZIP archive, not a Parquet file", "Unzip it")


# ---------------------------------------------------------------- located faults


def test_invalid_json_lines_are_each_named_up_to_a_limit_then_counted(tmp_path, ctx, capsys, gen_tok):
    lines = [json.dumps(chat())] * 40
    bad = list(range(2, 40, 2))  # 0-based: file lines 3, 5, ..., 39 -> 19 bad lines
    for i in bad:
        lines[i] = '{"messages": [}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err, out, status = three_doors_refuse(path, ctx, capsys, gen_tok, "sft", "line 3: bad JSON", "one JSON object")
    assert "19 lines cannot be used" in err and "line 11: bad JSON" in err and "... and 14 more." in err
    assert "NOT USABLE: 19 problems" in out and "line 39: bad JSON" in out  # the CLI lists up to 20
    assert "19 problems" in status and "line 39" in status


def test_more_bad_lines_than_are_kept_are_still_counted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_read, "KEPT_PROBLEMS", 30)
    path = tmp_path / "junk.jsonl"
    path.write_text("not json\n" * 100, encoding="utf-8")
    with pytest.raises(data_read.DataProblems) as info:
        data_read.read_source(str(path))
    assert len(info.value.problems) == 30 and info.value.total == 100
    assert "100 lines cannot be used" in str(info.value) and "... and 95 more." in str(info.value)
    rc, out = cli(path, capsys)
    assert rc == 1 and "NOT USABLE: 100 problems" in out and "... and 80 more." in out


def test_json_array_instead_of_jsonl_is_read_with_a_note(tmp_path, ctx, capsys, gen_tok):
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps([chat(), chat("1+1?", "2")], indent=2), encoding="utf-8")
    note = "one JSON array, not JSON Lines"
    data = loader(path, "sft", gen_tok)
    assert len(data.train) == 2 and any(note in n for n in data.notes)
    rc, out = cli(path, capsys)
    assert rc == 0 and "OK: 2 rows" in out and note in out
    project, status = tab(ctx, path)
    assert project["data"]["rows"] == 2 and note in status


CSV_CASES = {
    "crlf": b"prompt,completion\r\n2+2?,4\r\n1+1?,2\r\n",
    "quoted newlines": b'prompt,completion\n"Add\nthese: 2+2?",4\n1+1?,"two\nlines"\n',
    "bom": b"\xef\xbb\xbfprompt,completion\n2+2?,4\n1+1?,2\n",
    "semicolons": b"prompt;completion\n2,5+1?;3,5\n1+1?;2\n",
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_csv_dialects_read_every_row(tmp_path, ctx, capsys, gen_tok, case):
    path = tmp_path / "d.csv"
    path.write_bytes(CSV_CASES[case])
    data = loader(path, "sft", gen_tok)
    assert len(data.train) == 2 and data.format == "prompt_completion"
    prompts = [row["prompt"][0]["content"] for row in data.train]
    assert all(not p.startswith("\ufeff") and "\r" not in p for p in prompts)
    if case == "quoted newlines":
        assert prompts[0] == "Add\nthese: 2+2?" and data.train[1]["completion"][0]["content"] == "two\nlines"
    if case == "semicolons":
        assert prompts[0] == "2,5+1?" and any("separated by semicolons" in n for n in data.notes)
    rc, out = cli(path, capsys)
    assert rc == 0 and "OK: 2 rows" in out and "columns: prompt, completion" in out
    project, _ = tab(ctx, path)
    assert project["data"]["ok"] and project["data"]["rows"] == 2


@pytest.mark.parametrize("name, content, line", [
    ("latin.jsonl", jsonl([chat()]) + '{"prompt": "café"}\n'.encode("cp1252"), 2),
    ("latin.csv", "prompt,completion\na,b\ncafé,x\n".encode("cp1252"), 3),
])
def test_non_utf8_bytes_name_the_line(tmp_path, ctx, capsys, gen_tok, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    err, out, status = three_doors_refuse(path, ctx, capsys, gen_tok, "sft", f"line {line}", "byte 0xe9")
    for text in (err, out, status):
        assert "save the file as utf-8" in text.lower()


def test_a_column_with_mixed_types_becomes_text_with_a_note(tmp_path, ctx, capsys, gen_tok):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl([{"prompt": "2+2?", "answer": 4}, {"prompt": "two and two?", "answer": "four"},
                            {"prompt": "1+1?", "answer": None}]))
    note = "Column `answer` mixes number and text: all its values were turned into text"
    data = loader(path, "rft", gen_tok)
    assert data.train["answer"] == ["4", "four", None] and any(note in n for n in data.notes)
    rc, out = cli(path, capsys, "rft")
    assert rc == 0 and note in out
    project, status = tab(ctx, path, "rft")
    assert project["data"]["ok"] and note in status


def _turns(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


@pytest.mark.parametrize("row, method, expected", [
    (_turns(("human", "2+2?"), ("assistant", "4")), "sft", ["line 2", "`messages`[0] has role `human`",
                                                         "(write `user`)"]),
    (_turns(("user", "2+2?"), ("assistant", "  ")), "sft", ["line 2", "`messages`[1] (assistant) has empty content"]),
    (_turns(("system", "Be brief."), ("user", "2+2?")), "sft", ["line 2", "has no assistant turn",
                                                               "SFT needs at least one assistant turn"]),
    (_turns(("assistant", "4")), "rft", ["line 2", "holds only an assistant turn", "no prompt is left"]),
])
def test_bad_messages_name_the_row_and_turn(tmp_path, ctx, capsys, gen_tok, row, method, expected):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(jsonl([chat(), row, chat("1+1?", "2")]))
    three_doors_refuse(path, ctx, capsys, gen_tok, method, *expected)


def test_final_assistant_turn_of_rft_prompts_is_kept_for_graders(tmp_path, ctx, capsys, gen_tok):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(jsonl([chat(), chat("1+1?", "2"), _turns(("user", "3+3?"))]))
    note = "2 of 3 rows end with an assistant turn: for RFT it was removed from the prompt"
    data = loader(path, "rft", gen_tok)
    assert [p[-1]["role"] for p in data.train["prompt"]] == ["user"] * 3
    assert data.train["reference_completion"] == ["4", "2", None] and any(note in n for n in data.notes)
    rc, out = cli(path, capsys, "rft")
    assert rc == 0 and note in out
    assert note in tab(ctx, path, "rft")[1]


def test_rows_longer_than_max_length_are_counted(tmp_path, ctx, capsys, gen_tok):
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl([chat("x" * 400, "y" * 400), chat(), chat("z" * 300, "w")]))
    data = loader(path, "sft", gen_tok, max_length=200)
    assert len(data.train) == 3  # truncated, not dropped
    assert any("2 of 3 rows are longer than model.max_length (200 tokens) even before" in n for n in data.notes)
    rc = main_check_data([str(path), "--method", "sft", "--model", "tiny", "--max-length", "200"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 rows are longer than max_length 200 tokens and will be truncated" in out
    project = new_project()
    project["config"]["model"] = {"name": "tiny", "max_length": 200}
    project, status = tab_data.upload_data(ctx, project, str(path), *SETTINGS.values())[:2]
    assert "Model set to `smollm2-135m`" in status  # own data moves off `tiny`; put it back to count its tokens
    project["config"]["model"]["name"] = "tiny"
    project, status = tab_data.check(project, *SETTINGS.values())[:2]
    assert "Longer than max length (200 tokens) | **2** (will be truncated)" in status


def test_a_file_named_with_parent_dirs_stays_in_the_uploads_folder(tmp_path, ctx, capsys, gen_tok, monkeypatch):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "x.jsonl").write_bytes(jsonl([chat(), chat("1+1?", "2")]))
    monkeypatch.chdir(deep)
    name = Path("../../x.jsonl")
    stored = data_view.save_upload(name, ctx.uploads)
    assert stored.parent == ctx.uploads and ".." not in stored.name and stored.suffix == ".jsonl"
    project, status = tab(ctx, name)
    assert Path(project["data"]["path"]).parent == ctx.uploads and project["data"]["name"] == "x.jsonl"
    assert "Ready: 2 rows" in status
    # The CLI and a run file read a relative path as the person wrote it: their own files, from where they are.
    rc, out = cli(name, capsys)
    assert rc == 0 and "OK: 2 rows" in out
    cfg = RunConfig(method="sft", data=DataConfig(train="../../x.jsonl", eval_fraction=0.0), base_dir=str(deep))
    assert len(load_stage_data(cfg, "sft", gen_tok).train) == 2


# ---------------------------------------------------------------- large files, in chunks


def test_chunked_check_counts_like_a_whole_read(tmp_path, monkeypatch, plain_tok):
    """A file read in many chunks reports the same rows, errors and merged notes as one read whole."""
    rows = [chat(f"{i}+1?", str(i + 1)) for i in range(300)]
    for i in (10, 150, 290):
        rows[i] = _turns(("human", "hi"), ("assistant", "yo"))
    for i in range(0, 300, 7):
        rows[i] = {**rows[i], "messages": rows[i]["messages"] + [{"role": "user", "content": "thanks"}]}
    path = tmp_path / "many.jsonl"
    path.write_bytes(jsonl(rows) + b"\n")
    whole_size = data_read.CHUNK_BYTES

    def both(**kw):
        monkeypatch.setattr(data_read, "CHUNK_BYTES", whole_size)
        whole = check_data(str(path), "sft", plain_tok)
        monkeypatch.setattr(data_read, "CHUNK_BYTES", 2000)
        return whole, check_data(str(path), "sft", plain_tok, **kw)

    calls = []
    whole, chunked = both(progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 5 and calls[-1] == (path.stat().st_size,) * 2
    assert chunked.rows == whole.rows == 300 and chunked.errors == whole.errors and len(whole.errors) == 3
    path.write_text(path.read_text().replace('"human"', '"user"'))
    whole, chunked = both()
    assert whole.ok and chunked.ok and chunked.notes == whole.notes
    assert any("43 chats have turns after their last assistant turn" in n for n in chunked.notes)
    assert chunked.lengths == whole.lengths


def test_the_data_tab_shows_reading_progress(tmp_path, ctx, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl([chat(f"{i}?", str(i)) for i in range(200)]))
    monkeypatch.setattr(data_read, "CHUNK_BYTES", 1000)
    seen = []
    # Through the wrapper the tab wires to the upload event (Gradio passes the Progress as the last argument).
    handler = tab_data.with_progress(tab_data.upload_data, 2 + len(SETTINGS), ctx)
    out = handler(new_project(), str(path), *SETTINGS.values(), lambda frac, desc="": seen.append((frac, desc)))
    assert out[0]["data"]["rows"] == 200 and len(seen) > 3
    assert seen[-1][0] == 1.0 and seen[-1][1].startswith("Read ") and " MB of " in seen[-1][1]


CHECK_IN_CHILD = textwrap.dedent("""
    import sys, time
    from finetuner.data import check_data
    calls = []
    start = time.perf_counter()
    report = check_data(sys.argv[1], "sft", None, progress=lambda done, total: calls.append(done))
    took = time.perf_counter() - start
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(report.ok, report.rows, len(calls), hwm, round(took, 1))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
def test_a_200_mb_file_is_checked_in_bounded_memory_with_progress(tmp_path):
    line = json.dumps(chat("What is 1234 + 5678? " * 8, "1234 + 5678 = 6912. " * 8)).encode() + b"\n"
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as fh:
        block = line * 1000
        while fh.tell() < 200 * 2 ** 20:
            fh.write(block)
    small = tmp_path / "small.jsonl"
    small.write_bytes(line * 10)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(path):
        done = subprocess.run([sys.executable, "-c", CHECK_IN_CHILD, str(path)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        ok, rows, calls, hwm_kb, took = done.stdout.split()
        return ok == "True", int(rows), int(calls), int(hwm_kb) * 1024, float(took)

    _, _, _, base, _ = run(small)
    ok, rows, calls, peak, took = run(big)
    size = big.stat().st_size
    growth = peak - base
    print(f"\n200 MB check: {rows} rows in {took} s, peak RSS growth {growth / 2 ** 20:.0f} MiB "
          f"({growth / size:.1%} of the file), {calls} progress calls")
    assert ok and rows == size // len(line)
    assert growth < 0.25 * size
    assert calls > 10
    # The CLI prints its progress as it reads.
    done = subprocess.run([sys.executable, "-m", "finetuner", "check-data", str(big), "--model", "none"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and f"OK: {rows:,} rows".replace(",", "") in done.stdout.replace(",", "")
    assert done.stderr.count(" MB of 200 MB") >= 5 and "read 200 MB of 200 MB" in done.stderr
