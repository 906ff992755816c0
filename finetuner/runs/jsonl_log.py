"""Append-only JSONL logs of a run folder (metrics.jsonl, samples.jsonl): the tolerant reader, rotation into
numbered segments with disk caps, and `JsonlTail`, which reads segments and live file as one continuous,
incrementally tailed stream. Used through finetuner/runs/__init__.py (RunFolder's appenders and readers) and the UI.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# Disk bounds for the two files that grow with every step. Rollouts are large (prompt and completion text of
# every generation) and only recent ones are worth browsing, so samples.jsonl is rotated into numbered
# segments and the oldest are dropped. Metric rows are small but the whole curve matters, so old metrics are
# never dropped: beyond the newest segments they are merged into one archive segment that keeps the rows whose
# run_step is a multiple of a power-of-two stride (stage boundaries and stage summaries always), the stride
# doubling whenever the archive outgrows its budget. Old history thus stays evenly spaced from step 1, at a
# coarser resolution the longer the run, while recent steps stay complete. Totals: metrics <=
# METRICS_MAX_BYTES (archive + KEEP_FULL segments + the live file); samples <= (SAMPLES_KEEP + 1) segments.
METRICS_SEGMENT_BYTES = 16 * 2**20
METRICS_MAX_BYTES = 64 * 2**20
SAMPLES_SEGMENT_BYTES = 32 * 2**20
SAMPLES_KEEP = 4
# The newest segments that compaction never rewrites: a reader that is at most this many rotations behind
# continues where it was; one further behind starts over (see JsonlTail).
KEEP_FULL = 2



def read_jsonl(path: Path | str, offset: int = 0) -> tuple[list[dict], int]:
    """Rows of a JSONL file from byte `offset`; returns (rows, offset after the last complete line).

    A last line without its newline is being written right now: it is left for the next read.
    A corrupt complete line (a crash mid-write followed by more writes) is skipped, not fatal.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    rows = []
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return rows, offset + end + 1





def segments(path: Path | str) -> list[tuple[int, Path]]:
    """The rotated segments of a live JSONL file, oldest first: metrics.jsonl -> [(1, metrics.1.jsonl), ...]."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.(\d+)" + re.escape(path.suffix))
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    return sorted((int(m.group(1)), path.parent / n) for n in names if (m := pattern.fullmatch(n)))


def rotate(path: Path) -> list[tuple[int, Path]]:
    """The live file becomes the next numbered segment; the next append starts a new live file. Numbers only
    grow, so a segment's name says where it sits on the timeline. Returns every segment, oldest first."""
    segs = segments(path)
    seq = segs[-1][0] + 1 if segs else 1
    target = path.with_name(f"{path.stem}.{seq}{path.suffix}")
    os.replace(path, target)
    return [*segs, (seq, target)]


def _downsample(rows: list[dict], budget: int) -> list[dict]:
    """The rows kept at the smallest power-of-two stride over run_step whose JSON fits `budget` bytes.
    Strides are powers of two, so a row kept at a coarser stride was kept at every finer one: archive rows
    thinned earlier and fresh rows end up evenly spaced."""
    sized = [(json.dumps(r, ensure_ascii=False) + "\n", r) for r in rows]
    evals = [any(k.startswith("eval_") for k in r) for r in rows]
    # Held-out scores are sparse and precious (best checkpoint, overfitting warning): all kept unless they
    # alone would take a quarter of the budget (eval every step), then thinned like the rest.
    keep_evals = sum(len(t) for (t, _r), e in zip(sized, evals) if e) <= budget // 4
    always, stage = [], object()
    for (_text, row), is_eval in zip(sized, evals):
        x = row.get("run_step", row.get("step"))
        always.append("train_runtime" in row or row.get("stage") != stage or not isinstance(x, int)
                      or (is_eval and keep_evals))
        stage = row.get("stage")
    stride = 1
    while True:
        kept = [(t, r) for (t, r), keep in zip(sized, always)
                if keep or r.get("run_step", r.get("step")) % stride == 0]
        if sum(len(t.encode("utf-8")) for t, _r in kept) <= budget or len(kept) <= sum(always) or stride >= 2**40:
            return [t for t, _r in kept]
        stride *= 2


def compact_metrics(segs: list[tuple[int, Path]], budget: int) -> None:
    """Merge the two oldest metrics segments (the first is the archive once one exists), downsampled to
    `budget` bytes, while more than KEEP_FULL segments follow the archive. The newest KEEP_FULL segments are
    never rewritten (JsonlTail relies on it)."""
    while len(segs) > KEEP_FULL + 1:
        (_sa, a), (sb, b) = segs[0], segs[1]
        lines = _downsample(read_jsonl(a)[0] + read_jsonl(b)[0], budget)
        tmp = b.with_name(f".{b.name}.tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, b)
        a.unlink(missing_ok=True)
        segs = [(sb, b), *segs[2:]]


def _listing(path: Path) -> list[tuple[int, int]]:
    out = []
    for seq, p in segments(path):
        try:
            out.append((seq, p.stat().st_size))
        except FileNotFoundError:
            out.append((seq, -1))
    return out


class JsonlTail:
    """Incremental reader of a rotated JSONL file: its segments (oldest first), then the live file.

    `read()` returns (new rows, reset). reset=True means the rows are everything from the start and a caller
    drops what it had: the first read, a reader more than KEEP_FULL rotations behind (older segments may have
    been thinned or dropped), or a folder re-created under it. Between reads it remembers only which live
    file it was in (the segment number that file will get) and the byte offset there. A read that raced with
    a rotation or a compaction (the segment list changed while reading) is discarded and done again.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.seq: int | None = None  # the number the live file being read will have once rotated
        self.offset = 0

    def read(self) -> tuple[list[dict], bool]:
        for _attempt in range(5):
            before = _listing(self.path)
            rows, reset, state = self._read(before)
            if _listing(self.path) == before:
                self.seq, self.offset = state
                return rows, reset
        return [], False  # rotating faster than we can read (never in practice): try at the next refresh

    def _read(self, listing):
        live_seq = (listing[-1][0] if listing else 0) + 1
        seqs = {seq for seq, _size in listing}
        if self.seq == live_seq:
            try:
                if self.path.stat().st_size >= self.offset:
                    rows, off = read_jsonl(self.path, self.offset)
                    return rows, False, (live_seq, off)
            except FileNotFoundError:
                if self.offset == 0:
                    return [], False, (live_seq, 0)
        elif self.seq is not None and self.seq < live_seq and self.seq in seqs and \
                self.seq > live_seq - 1 - KEEP_FULL:
            # Rotated since: finish the old live file, read the newer segments whole, then the new live file.
            rows, _ = read_jsonl(self._segment(self.seq), self.offset)
            for seq, _size in listing:
                if seq > self.seq:
                    rows += read_jsonl(self._segment(seq))[0]
            more, off = read_jsonl(self.path)
            return rows + more, False, (live_seq, off)
        rows = []
        for seq, _size in listing:
            rows += read_jsonl(self._segment(seq))[0]
        more, off = read_jsonl(self.path)
        return rows + more, True, (live_seq, off)

    def _segment(self, seq: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.{seq}{self.path.suffix}")


def tail_jsonl(path: Path | str, max_bytes: int = 65536) -> list[dict]:
    """The complete rows in the last `max_bytes` of a rotated JSONL stream (live file, topped up from the
    newest segment when the live file was just rotated): the latest values without reading it all."""
    path = Path(path)
    rows = _tail_file(path, max_bytes)
    try:
        live = path.stat().st_size
    except FileNotFoundError:
        live = 0
    segs = segments(path)
    if live < max_bytes and segs:
        rows = _tail_file(segs[-1][1], max_bytes - live) + rows
    return rows


def _tail_file(path: Path, max_bytes: int) -> list[dict]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line is cut
    rows = []
    for line in lines[:-1]:  # the last piece is empty or half-written
        try:
            rows.append(json.loads(line))
        except (ValueError, UnicodeDecodeError):
            continue
    return rows
