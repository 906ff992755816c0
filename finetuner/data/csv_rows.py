"""The CSV (and TSV) reader of `data_read.SourceReader`: rows streamed a chunk at a time, each with its line.

The separator comes from the header line; a BOM, CRLF line ends and quoted line breaks are read as
written; a non-UTF-8 byte is named by its line and byte offset.
"""

from __future__ import annotations

import codecs
import csv
from typing import TYPE_CHECKING, BinaryIO, Iterator

from finetuner.data.table import UPLOAD_HINT, RawTable, utf8_problem
from graders.errors import DataError

if TYPE_CHECKING:
    from finetuner.data.read import SourceReader


CSV_ADVICE = ("Each row needs one value per header column; quote values that contain the separator or line "
              "breaks (\"like, this\"). Fix those rows and load the file again.")


def csv_chunks(reader: SourceReader) -> Iterator[RawTable]:
    """Row by row through csv.reader fed one decoded line at a time, so quoted line breaks still work and a
    non-UTF-8 byte is named by its line."""
    name, path = reader.name, reader.path
    reader.advice = CSV_ADVICE
    with open(path, "rb") as fh:
        head = fh.read(65536)
    try:
        first = head.decode("utf-8-sig")
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end of `head` is not an error
        first = head[:err.start].decode("utf-8-sig")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(first)
    if delimiter not in (",", "\x1f"):
        reader.notes.append(f"{name}: values are separated by {_DELIM_NAMES.get(delimiter, repr(delimiter))}.")
    consumed = [0]

    def text_lines(fh: BinaryIO) -> Iterator[str]:
        for lineno, raw in enumerate(fh, 1):
            offset = consumed[0]
            consumed[0] += len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[3:], offset + 3
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(utf8_problem(name, lineno, raw, err, offset)) from None

    with open(path, "rb") as fh:
        records = csv.reader(text_lines(fh), delimiter=delimiter)
        try:
            yield from _csv_rows(reader, records, consumed)
        except csv.Error as err:
            raise DataError(f"{name}: CSV cannot be parsed near line {records.line_num}: {err}. {CSV_ADVICE}") from None


def _csv_rows(reader: SourceReader, records, consumed: list[int]) -> Iterator[RawTable]:
    name = reader.name
    header = next(records, None)
    while header is not None and not any(c.strip() for c in header):
        header = next(records, None)
    if header is None:
        raise DataError(f"{name} is empty. {UPLOAD_HINT}")
    header = [h.strip() for h in header]
    _check_header(name, header)
    unnamed = "" in header
    rows, lines, blank, total, pending = [], [], 0, 0, 0
    unnamed_values = 0  # rows with a value under a column that has no header name
    end = records.line_num
    for record in records:
        start, end = end + 1, records.line_num
        if consumed[0] - pending >= reader.chunk_bytes:
            pending = consumed[0]
            reader.report(consumed[0])
            if rows:
                yield RawTable(name, "csv", rows, lines, "line")
                rows, lines = [], []
        if not any(c.strip() for c in record):
            blank += 1
            continue
        if len(record) != len(header):
            reader.problem(f"line {start}: {len(record)} values, but the header has {len(header)} columns")
            continue
        row = dict(zip(header, record))
        if unnamed and row.pop("", "").strip():
            unnamed_values += 1
            reader.problem(f"line {start}: a value under a header column that has no name; name that column "
                           f"in the first row")
        rows.append(row)
        lines.append(start)
        total += 1
    if rows:
        yield RawTable(name, "csv", rows, lines, "line")
    if not total and not reader.problem_count:
        raise DataError(f"{name} has a header ({', '.join(header)}) but no rows. Add rows under the header.")
    if blank:
        reader.notes.append(f"Skipped {blank} empty row{'s' if blank != 1 else ''} in {name}.")
    if unnamed and not unnamed_values:
        # Spreadsheets often export a trailing empty column; it carries no data, so say so and drop it.
        reader.notes.append(f"Dropped an empty column without a header name in {name}.")


_DELIM_NAMES = {";": "semicolons", "\t": "tabs", "|": "vertical bars", ",": "commas"}


def _sniff_delimiter(text: str) -> str:
    """The separator the header line uses. Column names rarely hold separators, while values often hold commas,
    so the header is a surer guide than csv.Sniffer's vote over all lines."""
    header = text.lstrip("\r\n").split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    if counts[best]:
        return best
    # One column: no separator at all, so commas in its values stay text (quoting still works).
    return "\x1f"


def _check_header(name: str, header: list[str]) -> None:
    named = [h for h in header if h]
    dupes = sorted({h for h in named if named.count(h) > 1})
    if dupes:
        raise DataError(f"{name}: the header names column {', '.join(f'`{d}`' for d in dupes)} more than once. "
                        f"Give every column a distinct name in the first row.")
