"""`check-data`: say whether a file can train, before anything heavy starts.

`check_data(source, method, tokenizer)` never raises for bad data: it returns a `CheckReport` with the row
count, format, columns, token-length statistics (and how many rows `max_length` would truncate), notes, every
located error, and a preview of two rows rendered through the chat template with the trained text marked
(⟦ ⟧ in plain text; `PreviewRow.spans` for the UI to highlight). `main_check_data(argv)` is the CLI verb.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from array import array
from dataclasses import dataclass, field

from finetuner.config import METHODS, DataConfig
from finetuner.data.read import UPLOAD_HINT, DataProblems, Progress, SourceReader
from finetuner.data.rows import detect_format, normalise
from finetuner.data.to_trl import Converted, grader_item, to_rft, to_sft
from graders.errors import DataError, FinetunerError

OPEN, CLOSE = "⟦", "⟧"
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
class PreviewRow:
    stage: str  # sft | rft
    where: str  # "line 3", "row 3"
    text: str  # the row as the model sees it, through the chat template
    spans: list[tuple[int, int]]  # [start, end) character ranges of `text` that are trained
    marked: str  # `text` with ⟦ ⟧ around each span
    columns: dict = field(default_factory=dict)  # RFT: the other columns graders see as {{item.<column>}}


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
               max_length: int = 512, progress: Progress | None = None) -> CheckReport:
    """Check `source` for `method` ("sft", "rft" or "sft+rft") without training.

    The source is read and checked a chunk at a time (data_read.SourceReader), keeping only counts, token
    lengths, the first errors and the preview, so a file of any size is checked in bounded memory.
    `progress(bytes_read, total)` is called after each chunk."""
    dcfg = dcfg or DataConfig()
    report = CheckReport(source=source, method=method)
    if method not in METHODS:
        report.errors.append(f"Unknown method `{method}`; choose one of {', '.join(METHODS)}.")
        return report
    stages = {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}[method]
    checks = [_StageCheck(stage, f"{stage.upper()} stage: " if len(stages) > 1 else "") for stage in stages]
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
        report.notes += [st.label + n for n in merge_notes(st.notes)]
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

    def __init__(self, stage: str, label: str):
        self.stage, self.label = stage, label
        self.fmt = ""
        self.failed = False  # a row in error: its rows are still checked, but no token lengths are counted
        self.stopped = False  # a problem with the whole data (no format, no chat template): checks stop
        self.notes: list[list[str]] = []  # per chunk
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
        self.notes.append(records.notes + conv.notes)
        if tokenizer is None or self.failed:
            return
        try:
            self.lengths.extend(token_lengths(conv, tokenizer, chunk.where, chunk.name))
        except DataProblems as err:
            self.failed = True
            _add_error(report, err, self.label)
            return
        self.what = "prompt" if conv.format == "prompt" else "prompt + answer"
        while len(self.preview) < 2 and len(self.preview) < len(conv.rows):
            i = len(self.preview)
            self.preview.append(preview_row(conv.rows[i], conv.format, tokenizer, self.stage, chunk.where(i)))


def merge_notes(per_chunk: list[list[str]]) -> list[str]:
    """One list of notes from the notes of each chunk: the same note from several chunks once, with its counts
    summed ("3 of 2048 rows ..." + "1 of 1200 rows ..." -> "4 of 3248 rows ..."). Numbers inside `code` are
    names, not counts."""
    if len(per_chunk) == 1:
        return list(per_chunk[0])
    merged: dict[str, list] = {}
    for notes in per_chunk:
        for note in notes:
            # data_trl says "1 chat has" but "2 chats have": one wording, so both merge.
            parts = _ONE_CHAT.sub("1 chats have", note).split("`")
            counts: list[int] = []
            for i in range(0, len(parts), 2):
                counts += [int(n) for n in _COUNT.findall(parts[i])]
                parts[i] = _COUNT.sub("\0", parts[i])
            key = "`".join(parts)
            if key in merged:
                merged[key] = [a + b for a, b in zip(merged[key], counts)]
            else:
                merged[key] = counts
    out = []
    for key, counts in merged.items():
        parts, it = key.split("`"), iter(counts)
        for i in range(0, len(parts), 2):
            parts[i] = re.sub("\0", lambda _m: str(next(it)), parts[i])
        out.append(_ONE_CHAT.sub("1 chat has", "`".join(parts)))
    return out


_COUNT = re.compile(r"\d+")
_ONE_CHAT = re.compile(r"(?<!\d)1 chats? ha(?:s|ve)")


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


# ---------------------------------------------------------------- what the tokenizer sees


def _render(tokenizer, messages: list[dict], **kw) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def _with_eos(text: str, tokenizer) -> str:
    # TRL appends EOS to plain (non-chat) text and completions so the model learns to stop.
    eos = tokenizer.eos_token or ""
    return text if text.endswith(eos) else text + eos


def _sequence(row: dict, fmt: str, tokenizer) -> tuple[str, bool]:
    """(text, add_special_tokens): the sequence a row becomes, as TRL tokenizes it."""
    if fmt == "messages":
        return _render(tokenizer, row["messages"]), False
    if fmt == "text":
        return _with_eos(row["text"], tokenizer), True
    prompt = row["prompt"]
    if fmt == "prompt":
        if isinstance(prompt, list):
            return _render(tokenizer, prompt, add_generation_prompt=True), False
        return prompt, True
    if isinstance(prompt, list):
        return _render(tokenizer, prompt + row["completion"]), False
    return prompt + _with_eos(row["completion"], tokenizer), True


TEMPLATE_ADVICE = ("The model's chat template refuses these rows (many templates require strictly alternating "
                   "user/assistant turns, or allow no system turn). Fix the rows, or choose another model.")


def token_lengths(conv: Converted, tokenizer, where=lambda i: f"row {i + 1}", name: str = "the data") -> list[int]:
    """Length in tokens of every row as TRL will tokenize it; DataProblems naming the rows the template refuses."""
    texts: dict[bool, list[str]] = {True: [], False: []}
    problems = []
    for i, row in enumerate(conv.rows):
        try:
            text, special = _sequence(row, conv.format, tokenizer)
        except Exception as err:  # noqa: BLE001 - templates raise their own errors (raise_exception(...))
            problems.append(f"{where(i)}: {err}")
            continue
        texts[special].append(text)
    if problems:
        raise DataProblems(name, problems, TEMPLATE_ADVICE)
    lengths = []
    for special, batch in texts.items():
        if batch:
            lengths += [len(ids) for ids in tokenizer(batch, add_special_tokens=special)["input_ids"]]
    return lengths


def _stats(lengths, what: str, max_length: int) -> TokenStats:
    lengths = sorted(lengths)
    p95 = lengths[max(0, math.ceil(0.95 * len(lengths)) - 1)]
    return TokenStats(what, lengths[0], sum(lengths) / len(lengths), p95, lengths[-1],
                      sum(n > max_length for n in lengths), max_length)


def preview_row(row: dict, fmt: str, tokenizer, stage: str, where: str) -> PreviewRow:
    """One converted row as the model sees it, with the character spans the loss trains on."""
    columns = {k: v for k, v in grader_item(row).items() if k != "prompt"} if fmt == "prompt" else {}
    if fmt == "messages":
        text, spans = _assistant_spans(row["messages"], tokenizer)
    elif fmt == "text":
        text = _with_eos(row["text"], tokenizer)
        spans = [(0, len(text))]
    elif fmt == "prompt":
        text, spans = _sequence(row, fmt, tokenizer)[0], []  # RFT trains on the model's own answers
    elif isinstance(row["prompt"], list):
        text = _render(tokenizer, row["prompt"] + row["completion"])
        prefix = _render(tokenizer, row["prompt"], add_generation_prompt=True)
        start = _common_prefix(prefix, text)
        spans = [(start, len(text))] if start < len(text) else []
    else:
        text = row["prompt"] + _with_eos(row["completion"], tokenizer)
        spans = [(len(row["prompt"]), len(text))]
    return PreviewRow(stage, where, text, spans, mark(text, spans), columns)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _assistant_spans(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Character spans of the tokens TRL's assistant_only_loss trains, from the template's own mask."""
    text = _render(tokenizer, messages)
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    offsets = None
    if getattr(tokenizer, "is_fast", False):
        plain = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(plain["input_ids"]) == ids:
            offsets = plain["offset_mapping"]
    if offsets is None:
        # Slow tokenizers have no offsets: rebuild the text run by run of equal mask.
        text, spans, pos, start = "", [], 0, 0
        for k in range(1, len(ids) + 1):
            if k == len(ids) or mask[k] != mask[start]:
                piece = tokenizer.decode(ids[start:k], skip_special_tokens=False)
                if mask[start]:
                    spans.append((pos, pos + len(piece)))
                text, pos, start = text + piece, pos + len(piece), k
        return text, spans
    spans: list[tuple[int, int]] = []
    for (a, b), m in zip(offsets, mask):
        if not m or a == b:
            continue
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    return text, spans


def mark(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in spans:
        out += [text[pos:a], OPEN, text[a:b], CLOSE]
        pos = b
    out.append(text[pos:])
    return "".join(out)


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
            tokenizer = load_tokenizer(args.model)
        except FinetunerError as err:
            print(f"Note: no tokenizer, so no token counts or preview. {err}")
    report = check_data(args.file, args.method, tokenizer, dcfg, args.max_length, _progress_printer())
    print(report.text())
    return 0 if report.ok else 1
