"""What every reader returns: a `RawTable` (rows as read, with their line or row numbers) and the messages
readers share. Its own module so that the readers (read.py for JSONL / JSON / Parquet / the Hub, csv_rows.py for
CSV) depend on it and not on each other."""

from __future__ import annotations

from dataclasses import dataclass, field

UPLOAD_HINT = "Upload a .jsonl, .csv, .parquet or .json file."


@dataclass
class RawTable:
    """Rows as read, before any format checks."""

    name: str  # how messages name the source: the path as given, or the dataset id
    kind: str  # jsonl | json | csv | parquet | hub
    rows: list[dict]
    numbers: list[int] | None = None  # per row: its file line (JSONL, CSV) or its 1-based row number
    unit: str = "row"  # "line" when `numbers` are file lines
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.numbers is None:
            self.numbers = list(range(1, len(self.rows) + 1))

    def where(self, i: int) -> str:
        return f"{self.unit} {self.numbers[i]}"

    @property
    def columns(self) -> list[str]:
        """Every key seen, in first-seen order (JSONL rows may differ in their keys)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen[key] = None
        return list(seen)

    def subset(self, indices: list[int]) -> "RawTable":
        """Some rows, keeping their original numbers: "row 57" still means row 57 of the file after a split."""
        return RawTable(self.name, self.kind, [self.rows[i] for i in indices], [self.numbers[i] for i in indices],
                        self.unit, list(self.notes))


def utf8_problem(name: str, line: int, raw: bytes, err: UnicodeDecodeError, offset: int) -> str:
    return (f"{name}: line {line} is not UTF-8 text (byte 0x{raw[err.start]:02x} at byte offset "
            f"{offset + err.start}). Save the file as UTF-8 (in most editors: Save As, encoding UTF-8) and upload "
            f"it again.")
