"""Read a data source (a JSONL, CSV, Parquet or JSON file, or a Hugging Face dataset id) into plain rows.

`read_source(source)` returns a `RawTable`: a list of dicts plus where each row came from ("line 7" for
JSONL and CSV, "row 3" otherwise), so later checks can name the line to fix. The file type comes from the
extension, but the first bytes win when the extension lies (a `.jsonl` holding one JSON array is still read,
with a note; a `.parquet` that is really a ZIP is refused). Problems are collected across the whole file and
raised once as `DataProblems`, so a person fixes every bad line in one go.

This module knows nothing about formats (messages, prompt/completion); that is `rows.py`.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from finetuner.data.table import UPLOAD_HINT, RawTable, utf8_problem
from graders.errors import DataError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv",
              ".parquet": "parquet", ".pq": "parquet"}
KIND_NAMES = {"jsonl": "JSON Lines", "json": "JSON", "csv": "CSV", "parquet": "Parquet", "hub": "Hugging Face"}
SHOWN_PROBLEMS = 5
KEPT_PROBLEMS = 1000  # listed problems per source; the rest are only counted
CHUNK_BYTES = 2 << 20  # a chunk of file read and checked at a time: rows take ~5-10x their bytes in Python
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

Progress = Callable[[int, int], None]  # (bytes read so far, total bytes)


class DataProblems(DataError):
    """Several located problems in one source. The message shows the first few and counts the rest;
    `.problems` keeps them (each starting with its place, e.g. "line 7: ...") for reports, and `.total` counts
    them, also those a reader counted without keeping (past KEPT_PROBLEMS)."""

    def __init__(self, name: str, problems: list[str], advice: str, what: str = "rows", total: int = 0):
        self.name, self.problems, self.advice = name, list(problems), advice
        n = max(total, len(problems))  # `total` counts problems beyond the ones listed
        self.total = n
        # A row can have several problems; a reader's uncounted ones are one per line.
        places = len({p.split(":", 1)[0] for p in problems}) if n == len(problems) else n
        shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {n - SHOWN_PROBLEMS} more." if n > SHOWN_PROBLEMS else ""
        noun = what if places != 1 else what.rstrip("s")
        count = f" ({n} problems)" if n != places else ""
        super().__init__(f"{name}: {places} {noun} cannot be used{count}:\n{shown}{more}\n{advice}")


def read_source(source: str, split: str = "train", progress: Progress | None = None) -> RawTable:
    """Read `source` (a file path, or a Hugging Face dataset id when no such file exists) whole."""
    reader = SourceReader(source, split, progress)
    rows: list[dict] = []
    numbers: list[int] = []
    unit = "row"
    for chunk in reader.chunks():
        rows += chunk.rows
        numbers += chunk.numbers
        unit = chunk.unit
    reader.raise_problems()
    if not rows:
        raise DataError(f"{source} holds no rows. {UPLOAD_HINT}")
    return RawTable(reader.name, reader.kind, rows, numbers, unit, reader.notes)


class SourceReader:
    """One pass over a source in chunks of about `chunk_bytes` of file, so a file of any size is checked in
    bounded memory. Problems of the reading itself (bad JSON lines, ...) are collected while reading: the first
    KEPT_PROBLEMS in `problems`, all of them counted in `problem_count`; `raise_problems()` raises them at the
    end. `notes` is complete once `chunks()` is exhausted. A file under `chunk_bytes` comes in one chunk."""

    def __init__(self, source: str, split: str = "train", progress: Progress | None = None,
                 chunk_bytes: int | None = None):
        self.name, self.split, self.progress = source, split, progress
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.problem_count = 0
        self.advice = ""
        path = Path(source).expanduser()
        self.path, self.size = path, 0
        if path.is_dir():
            raise DataError(f"{source} is a folder, not a data file. {UPLOAD_HINT}")
        if not path.is_file():
            if _looks_like_hub_id(source):
                self.kind = "hub"
                return
            raise DataError(f"Data file {source} does not exist. Check the path (a relative path is read from the "
                            f"config file's folder) or upload the file again.")
        self.size = path.stat().st_size
        if self.size == 0:
            raise DataError(f"{source} is empty. {UPLOAD_HINT}")
        with open(path, "rb") as fh:
            head = fh.read(8192)
        self.kind, note = _sniff(source, path, head)
        if note:
            self.notes.append(note)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(text)

    def raise_problems(self) -> None:
        if self.problem_count:
            raise DataProblems(self.name, self.problems, self.advice, "lines" if self.kind != "json" else "rows",
                               total=self.problem_count)

    def report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.size)

    def chunks(self) -> Iterator[RawTable]:
        if self.kind == "hub":
            table = _read_hub(self.name, self.split)
            self.notes += table.notes
            yield table
        elif self.kind == "parquet":
            yield from _parquet_chunks(self)
        elif self.kind == "csv":
            from finetuner.data.csv_rows import csv_chunks

            yield from csv_chunks(self)
        elif self.kind == "json":
            yield from _json_chunks(self)
        else:
            with open(self.path, "rb") as fh:
                yield from _jsonl_chunks(self, fh)
        self.report(self.size)


# ---------------------------------------------------------------- telling the type


def _looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and Path(source).suffix.lower() not in EXTENSIONS and ".." not in source


def _sniff(name: str, path: Path, head: bytes) -> tuple[str, str]:
    """(kind, note): the kind the bytes say, and a note when that differs from the extension."""
    ext = path.suffix.lower()
    claimed = EXTENSIONS.get(ext)
    if head.startswith(b"PAR1"):
        kind = "parquet"
    elif head.startswith(b"PK\x03\x04"):
        raise DataError(f"{name} is a ZIP archive, not a {KIND_NAMES.get(claimed, 'data')} file (an Excel "
                        f"workbook is a ZIP too). Unzip it, or save the sheet as CSV. {UPLOAD_HINT}")
    elif head.startswith(b"\x1f\x8b"):
        raise DataError(f"{name} is gzip-compressed. Decompress it first. {UPLOAD_HINT}")
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{name} is saved as UTF-16 text. Save it as UTF-8 (in most editors: Save As, "
                        f"encoding UTF-8) and upload it again.")
    elif b"\x00" in head:
        raise DataError(f"{name} is a binary file, not {KIND_NAMES.get(claimed, 'text')} data. {UPLOAD_HINT}")
    else:
        kind = _text_kind(head, claimed)
        if kind == "text":
            raise DataError(f"{name} is not a Parquet file (those start with `PAR1`), nor JSON or CSV text. "
                            f"Export it again. {UPLOAD_HINT}")
    if claimed is None:
        return kind, f"{name} has no known extension; read it as {KIND_NAMES[kind]} by its content."
    if kind == claimed or (claimed == "json" and kind == "jsonl"):
        return kind, ""  # a broken .json is read line by line to name its bad lines; no note needed
    if kind == "json" and claimed == "jsonl":
        return kind, f"{name} is one JSON array, not JSON Lines (one object per line); read it as a JSON array."
    return kind, f"{name} is named {ext} but holds {KIND_NAMES[kind]}; read it as {KIND_NAMES[kind]}."


def _text_kind(head: bytes, claimed: str | None) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    first_line = text.split("\n", 1)[0].strip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        # A one-document JSON file ({"data": [...]}) is told apart from JSON Lines while reading it.
        return "json" if claimed == "json" else "jsonl"
    if claimed in ("json", "jsonl") and not _looks_like_csv_header(first_line):
        return "jsonl"  # broken JSON: reading it line by line names the bad lines
    if claimed == "parquet" and not _looks_like_csv_header(first_line):
        return "text"  # refused by the caller, which knows the file name
    return "csv"


def _looks_like_csv_header(line: str) -> bool:
    for sep in (",", ";", "\t", "|"):
        cells = [c.strip().strip('"') for c in line.split(sep)]
        if len(cells) >= 2 and all(re.fullmatch(r"[\w .-]{1,64}", c) for c in cells if c):
            return True
    return False


# ---------------------------------------------------------------- readers


JSONL_ADVICE = ('Each line must be one JSON object, such as {"prompt": "2+2=", "completion": "4"}. Fix those '
                'lines and load the file again.')


def _jsonl_chunks(reader: SourceReader, fh: BinaryIO) -> Iterator[RawTable]:
    """Line by line from a binary file, so errors carry line numbers and the file is read once."""
    reader.advice = JSONL_ADVICE
    rows: list[dict] = []
    lines: list[int] = []
    blank = 0
    offset = pending = 0
    for lineno, raw in enumerate(fh, 1):
        start, offset = offset, offset + len(raw)
        pending += len(raw)
        if pending >= reader.chunk_bytes:
            reader.report(offset)
            if rows:
                yield RawTable(reader.name, "jsonl", rows, lines, "line")
                rows, lines = [], []
            pending = 0
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw, start = raw[3:], start + 3
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            reader.problem(f"line {lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte offset "
                           f"{start + err.start}); save the file as UTF-8")
            continue
        if not text.strip():
            blank += 1
            continue
        try:
            # Without the line break, a line cut short reports its real end column, not "column 1".
            obj = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            # A first line that opens an object but does not close it may start one pretty-printed document
            # (parsed whole); one that closes it is a bad JSON Lines row, and a huge file is not read whole.
            if lineno == 1 and text.lstrip().startswith("{") and not text.rstrip().endswith("}"):
                whole = _try_one_document(reader.name, fh)
                if whole is not None:
                    reader.kind = "json"
                    reader.notes += whole.notes
                    yield whole
                    return
            reader.problem(f"line {lineno}: bad JSON: {err.msg} (column {err.colno})")
            continue
        if not isinstance(obj, dict):
            reader.problem(f"line {lineno}: a JSON {_json_type(obj)}, but each line must be an object {{...}}")
            continue
        rows.append(obj)
        lines.append(lineno)
    if rows:
        yield RawTable(reader.name, "jsonl", rows, lines, "line")
    if blank:
        reader.notes.append(f"Skipped {blank} blank line{'s' if blank != 1 else ''}.")


def _try_one_document(name: str, fh: BinaryIO) -> RawTable | None:
    """A `.jsonl` whose first line is not a whole object may be one pretty-printed JSON document."""
    fh.seek(0)
    try:
        obj = json.loads(fh.read().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        fh.seek(0)
        fh.readline()  # back to where line-by-line reading stopped
        return None
    table = _rows_from_json(name, obj)
    table.notes.insert(0, f"{name} is one JSON document, not JSON Lines (one object per line); read it as JSON.")
    return table


def _json_chunks(reader: SourceReader) -> Iterator[RawTable]:
    """A JSON document is parsed whole (the standard library cannot stream it); JSON Lines under a .json name is
    streamed like any JSON Lines file."""
    name = reader.name
    data = reader.path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(utf8_problem(name, line, data, err, 0)) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            # Several objects one after another: JSON Lines under a .json name.
            del data, text
            reader.kind = "jsonl"
            reader.notes.append(f"{name} holds one JSON object per line (JSON Lines); read it as JSON Lines.")
            with open(reader.path, "rb") as fh:
                yield from _jsonl_chunks(reader, fh)
            return
        raise DataError(f"{name}: bad JSON at line {err.lineno}, column {err.colno}: {err.msg}. Fix it there, or "
                        f"save the data as JSON Lines (one object per line) so each bad row is named.") from None
    del data, text
    table = _rows_from_json(name, obj)
    reader.notes += table.notes
    yield table


def _rows_from_json(name: str, obj) -> RawTable:
    notes = []
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) != 1:
            found = f"several lists of rows ({', '.join(lists)})" if lists else "no list of rows"
            raise DataError(f"{name} is a JSON object with {found}. Give an array of row objects, "
                            f'[{{"prompt": ...}}, ...], or an object with one such list, {{"data": [...]}}.')
        notes.append(f"Read the {len(obj[lists[0]])} rows under \"{lists[0]}\" in {name}.")
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise DataError(f"{name} holds a JSON {_json_type(obj)}; it must be an array of row objects. {UPLOAD_HINT}")
    problems = [f"row {i + 1}: a JSON {_json_type(x)}, but each row must be an object {{...}}"
                for i, x in enumerate(obj) if not isinstance(x, dict)]
    if problems:
        raise DataProblems(name, problems, 'Each item of the array must be an object such as {"prompt": "..."}.')
    return RawTable(name, "json", obj, notes=notes)


def _json_type(obj) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false",
            type(None): "null", dict: "object"}.get(type(obj), type(obj).__name__)


def _parquet_chunks(reader: SourceReader) -> Iterator[RawTable]:
    """Record batches, so a large file never sits in memory whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = reader.name
    try:
        pf = pq.ParquetFile(reader.path)
        total, done = pf.metadata.num_rows, 0
        # Batches of about chunk_bytes of the file, judged by the file's bytes per row.
        batch = max(64, int(reader.chunk_bytes * max(total, 1) / max(reader.size, 1)))
        for rb in pf.iter_batches(batch_size=batch):
            rows = rb.to_pylist()
            yield RawTable(name, "parquet", rows, list(range(done + 1, done + len(rows) + 1)))
            done += len(rows)
            reader.report(int(reader.size * done / max(total, 1)))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{name} cannot be read as Parquet ({err}). Export it again, or save it as JSON Lines "
                        f"or CSV.") from None


def _read_hub(dataset_id: str, split: str) -> RawTable:
    import datasets
    from huggingface_hub import constants

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:  # noqa: BLE001 - the Hub raises many types; all mean "cannot get it here"
        offline = constants.HF_HUB_OFFLINE or "offline" in str(err).lower() or isinstance(err, ConnectionError)
        if offline:
            raise DataError(f"`{dataset_id}` is not a file here, and the Hugging Face Hub is unreachable (offline), "
                            f"so it cannot be loaded as a dataset id. {UPLOAD_HINT}") from None
        if "split" in str(err).lower():
            raise DataError(f"Dataset `{dataset_id}` has no split `{split}` ({err}). Set `data.split` to one of "
                            f"its splits.") from None
        raise DataError(f"`{dataset_id}` is not a file here and could not be loaded from the Hugging Face Hub "
                        f"({type(err).__name__}: {err}). Check the id (and access to gated datasets), or "
                        f"{UPLOAD_HINT[0].lower()}{UPLOAD_HINT[1:]}") from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"`{dataset_id}` did not give one split. Set `data.split`, e.g. `train`.")
    table = RawTable(dataset_id, "hub", ds.to_list())
    table.notes.append(f"Loaded {len(ds)} rows of `{dataset_id}` (split `{split}`) from the Hugging Face Hub.")
    return table
