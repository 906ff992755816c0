"""`check-data`: say whether a file can train, before anything heavy starts.

`check_data(source, method, tokenizer)` never raises for bad data: it returns a `CheckReport` with the row
count, format, columns, token-length statistics (and how many rows `max_length` would truncate), notes, every
located error, and a preview of two rows rendered through the chat template with the trained text marked
(⟦ ⟧ in plain text; `PreviewRow.spans` for the UI to highlight). `main_check_data(argv)` is the CLI verb.
"""

from __future__ import annotations

import argparse
import math
import sys
from array import array
from dataclasses import dataclass, field

from finetuner.config import METHODS, DataConfig
from finetuner.data.notes import Note, merge_notes, render
from finetuner.data.prompt_limit import all_too_long, too_long_sentence
from finetuner.data.preview import CLOSE, OPEN, PreviewRow, preview_row, token_lengths
from finetuner.data.read import UPLOAD_HINT, DataProblems, Progress, SourceReader
from finetuner.data.rows import detect_format, normalise
from finetuner.data.to_trl import to_rft, to_sft
from graders.errors import DataError, FinetunerError

SHOWN_ERRORS = 20
KEPT_ERRORS = 1000  # errors listed in a report; the rest are counted in `unlisted`


@dataclass
class TokenStats:
    """Token lengths of the rows as the trainer will tokenize them."""

    what: str  # "prompt + answer" (SFT) or "prompt" (RFT)
    min: int
    mean: float
    p95: int
    max: int
    over_max: int  # rows longer than max_length: truncated by SFT; RFT prompts that leave no room to answer
    max_length: int


@dataclass
class CheckReport:
    source: str
    method: str
    ok: bool = False
    rows: int = 0
    format: str = ""  # the first stage's detected format
    columns: list[str] = field(default_factory=list)
    lengths: TokenStats | None = None  # None without a tokenizer or when the data cannot be read
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # each names its line/row where it has one
    unlisted: int = 0  # errors counted but not listed (past KEPT_ERRORS)
    hint: str = ""  # what to do about the errors
    preview: list[PreviewRow] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.unlisted

    @property
    def truncated(self) -> int:
        return self.lengths.over_max if self.lengths else 0

    def text(self) -> str:
        lines = [f"check-data {self.source} (method {self.method})"]
        if self.ok:
            lines.append(f"OK: {self.rows} rows, format `{self.format}`; columns: {', '.join(self.columns)}.")
        else:
            n = self.error_count
            lines.append(f"NOT USABLE: {n} problem{'s' if n != 1 else ''}.")
            lines += [f"  - {e}" for e in self.errors[:SHOWN_ERRORS]]
            if n > SHOWN_ERRORS:
                lines.append(f"  ... and {n - SHOWN_ERRORS} more.")
            if self.hint:
                lines.append(self.hint)
        if self.lengths:
            s = self.lengths
            lines.append(f"Tokens per row ({s.what}): min {s.min}, mean {s.mean:.1f}, p95 {s.p95}, max {s.max}.")
            if s.over_max:
                verb = "will be truncated" if s.what != "prompt" else "leave no room for an answer"
                rows = "1 row is" if s.over_max == 1 else f"{s.over_max} rows are"
                lines.append(f"{rows} longer than max_length {s.max_length} tokens and {verb}.")
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {n}" for n in self.notes]
        if self.preview:
            lines.append(f"Preview ({OPEN} {CLOSE} marks the text that is trained):")
            for p in self.preview:
                lines.append(f"--- {p.stage.upper()}, {p.where} ---")
                lines.append(p.marked)
                if p.columns:
                    lines.append("columns for graders: " + ", ".join(f"{k}={_short(v)}" for k, v in p.columns.items()))
        return "\n".join(lines)


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def check_data(source: str, method: str, tokenizer=None, dcfg: DataConfig | None = None,
               max_length: int = 512, progress: Progress | None = None, max_prompt_length: int = 512) -> CheckReport:
    """Check `source` for `method` ("sft", "rft" or "sft+rft") without training.

    The source is read and checked a chunk at a time (data.read.SourceReader), keeping only counts, token
    lengths, the first errors and the preview, so a file of any size is checked in bounded memory.
    `progress(bytes_read, total)` is called after each chunk. RFT prompts over `max_prompt_length` tokens
    (rft.max_prompt_length; 0: no limit), which training leaves out, are counted in a note."""
    dcfg = dcfg or DataConfig()
    report = CheckReport(source=source, method=method)
    if method not in METHODS:
        report.errors.append(f"Unknown method `{method}`; choose one of {', '.join(METHODS)}.")
        return report
    stages = {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}[method]
    checks = [_StageCheck(stage, f"{stage.upper()} stage: " if len(stages) > 1 else "",
                          max_prompt_length if stage == "rft" else 0) for stage in stages]
    columns: dict[str, None] = {}
    try:
        reader = SourceReader(source, dcfg.split, progress)
        for chunk in reader.chunks():
            report.rows += len(chunk.rows)
            for row in chunk.rows:
                columns.update(dict.fromkeys(row))
            if reader.problem_count:
                continue  # the file itself is broken: only its reading problems are reported
            for st in checks:
                st.add(chunk, list(columns), dcfg, tokenizer, report)
        reader.raise_problems()
    except DataError as err:
        report.rows, report.columns, report.errors, report.unlisted = 0, [], [], 0
        _add_error(report, err, "")
        return report
    if not report.rows:
        _add_error(report, DataError(f"{source} holds no rows. {UPLOAD_HINT}"), "")
        return report
    report.columns = list(columns)
    report.notes += reader.notes
    for st in checks:
        if not report.format and st.fmt and not st.failed:
            report.format = st.fmt
        report.notes += [st.label + n for n in render(st.notes)]
        if st.too_long and not st.failed and st.too_long == len(st.lengths):
            _add_error(report, all_too_long(st.too_long, source, st.prompt_limit), st.label)
        elif st.too_long and not st.failed:
            report.notes.append(st.label + too_long_sentence(st.too_long, len(st.lengths), st.prompt_limit))
        if st.lengths and not st.failed and report.lengths is None:
            report.lengths = _stats(st.lengths, st.what, max_length)
        report.preview += st.preview
    if tokenizer is None:
        report.notes.append("No tokenizer given: token lengths and the preview were skipped.")
    if dcfg.max_rows and report.rows > dcfg.max_rows:
        report.notes.append(f"data.max_rows is {dcfg.max_rows}: training would use {dcfg.max_rows} of the "
                            f"{report.rows} rows.")
    report.ok = not report.error_count
    return report


class _StageCheck:
    """What one stage's check keeps while chunks stream by."""

    def __init__(self, stage: str, label: str, prompt_limit: int = 0):
        self.stage, self.label = stage, label
        self.prompt_limit = prompt_limit  # rft.max_prompt_length for the RFT stage; 0: not counted
        self.too_long = 0  # prompts over it, which training leaves out (data.prompt_limit)
        self.fmt = ""
        self.failed = False  # a row in error: its rows are still checked, but no token lengths are counted
        self.stopped = False  # a problem with the whole data (no format, no chat template): checks stop
        self.notes: list[Note] = []  # every chunk's so far, merged (counts added up) as each chunk comes
        self.lengths = array("I")
        self.what = ""
        self.preview: list[PreviewRow] = []

    def add(self, chunk, columns, dcfg, tokenizer, report) -> None:
        if self.stopped:
            return
        try:
            if not self.fmt:
                self.fmt = detect_format(columns, self.stage, dcfg, chunk.name)
            records = normalise(chunk, self.fmt, self.stage, dcfg)
            conv = (to_sft if self.stage == "sft" else to_rft)(records, tokenizer)
        except DataProblems as err:
            # Later chunks are still checked, so every bad row of the file is counted.
            self.failed = True
            _add_error(report, err, self.label)
            return
        except DataError as err:
            self.failed = self.stopped = True
            _add_error(report, err, self.label)
            return
        self.notes = merge_notes(self.notes + records.notes + conv.notes)
        if tokenizer is None or self.failed:
            return
        try:
            lengths = token_lengths(conv, tokenizer, chunk.where, chunk.name)
        except DataProblems as err:
            self.failed = True
            _add_error(report, err, self.label)
            return
        self.lengths.extend(lengths)
        if self.prompt_limit and conv.format == "prompt":
            # token_lengths measures a prompt as data.prompt_limit does: chat template + generation prompt.
            self.too_long += sum(n > self.prompt_limit for n in lengths)
        self.what = "prompt" if conv.format == "prompt" else "prompt + answer"
        while len(self.preview) < 2 and len(self.preview) < len(conv.rows):
            i = len(self.preview)
            self.preview.append(preview_row(conv.rows[i], conv.format, tokenizer, self.stage, chunk.where(i)))


def _add_error(report: CheckReport, err: DataError, label: str) -> None:
    if isinstance(err, DataProblems):
        found = [f"{label}{err.name}: {p}" for p in err.problems]
        unlisted = err.total - len(err.problems)
        report.hint = report.hint or err.advice
    else:
        found, unlisted = [label + str(err)], 0
    room = max(0, KEPT_ERRORS - len(report.errors))
    report.errors += found[:room]
    report.unlisted += unlisted + len(found[room:])


# ---------------------------------------------------------------- token statistics


def _stats(lengths, what: str, max_length: int) -> TokenStats:
    lengths = sorted(lengths)
    p95 = lengths[max(0, math.ceil(0.95 * len(lengths)) - 1)]
    return TokenStats(what, lengths[0], sum(lengths) / len(lengths), p95, lengths[-1],
                      sum(n > max_length for n in lengths), max_length)


# ---------------------------------------------------------------- the CLI verb

PROGRESS_BYTES = 8 << 20  # files from this size on print their reading progress
MB = 1 << 20


def _progress_printer():
    """A progress callback printing "read N MB of M MB" to stderr at every tenth of a large file."""
    shown = [-1]

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if total >= PROGRESS_BYTES and tenth > shown[0]:
            shown[0] = tenth
            print(f"read {done / MB:.0f} MB of {total / MB:.0f} MB", file=sys.stderr, flush=True)

    return progress



def main_check_data(argv: list[str] | None = None) -> int:
    """`check-data FILE --method sft|rft|sft+rft [--model tiny] [--max-length N]`: 0 when usable, 1 when not."""
    parser = argparse.ArgumentParser(prog="python -m finetuner check-data",
                                     description="Check a data file before training: format, problems by line, "
                                                 "token lengths and a preview of what is trained.")
    parser.add_argument("file", help="a .jsonl, .csv, .parquet or .json file, or a Hugging Face dataset id")
    parser.add_argument("--method", choices=METHODS, default="sft", help="training method to check for")
    parser.add_argument("--model", default="tiny", help="model whose tokenizer counts tokens (default: tiny); "
                                                        "`none` skips token counts and the preview")
    parser.add_argument("--max-length", type=int, default=512, help="longest sequence in tokens (model.max_length)")
    parser.add_argument("--max-prompt-length", type=int, default=512,
                        help="longest RFT prompt in tokens (rft.max_prompt_length; longer ones are left out; 0: none)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the model's own code run to load its tokenizer (model.trust_remote_code)")
    defaults = DataConfig()
    parser.add_argument("--format", default="auto", choices=("auto", "messages", "prompt_completion", "text",
                                                             "prompt"), help="how rows are read (data.format)")
    for col in ("messages", "prompt", "completion", "text"):
        parser.add_argument(f"--{col}-column", default=getattr(defaults, f"{col}_column"),
                            help=f"column holding the {col} (data.{col}_column)")
    parser.add_argument("--split", default="train", help="split of a Hugging Face dataset id")
    args = parser.parse_args(argv)
    dcfg = DataConfig(train=args.file, format=args.format, split=args.split, messages_column=args.messages_column,
                      prompt_column=args.prompt_column, completion_column=args.completion_column,
                      text_column=args.text_column)
    tokenizer = None
    if args.model.lower() != "none":
        from finetuner.modeling.load import load_tokenizer

        try:
            tokenizer = load_tokenizer(args.model, args.trust_remote_code)
        except FinetunerError as err:
            print(f"Note: no tokenizer, so no token counts or preview. {err}")
    report = check_data(args.file, args.method, tokenizer, dcfg, args.max_length, _progress_printer(),
                        args.max_prompt_length)
    print(report.text())
    return 0 if report.ok else 1
