"""Training data for a run: the one call the trainer uses, and the public face of the data modules.

    data = load_stage_data(cfg, "sft", tokenizer)   # -> StageData(train, eval, eval_rows, format, ...)

reads `data.train` (or `data.rft_train` for the RFT stage of `sft+rft`), checks every row, holds out the
evaluation rows and converts both parts into the `datasets.Dataset`s TRL's trainers read. The held-out rows are
chosen by a seeded shuffle of the file's row count alone, so the SFT and RFT stages of one run hold out the same
rows. `check_data` / `main_check_data` (the `check-data` command) report on a file without training.

The work is split by step: `read` / `csv_rows` (files and ids -> a `table.RawTable`), `rows` (format detection
and per-row checks), `to_trl` (rows -> TRL datasets), `notes` (what the steps say, as data), `check` and
`preview` (the report, token lengths, preview rows, CLI).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from finetuner.config import RunConfig
from finetuner.data.check import CheckReport, PreviewRow, TokenStats, check_data, main_check_data
from finetuner.data.notes import render
from finetuner.data.read import DataProblems, RawTable, read_source
from finetuner.data.rows import Records, detect_format, normalise
from finetuner.data.to_trl import REFERENCE_COLUMN, grader_item, has_generation_markers, to_dataset, to_rft, to_sft
from graders.errors import DataError

__all__ = ["StageData", "load_stage_data", "split_indices", "check_data", "main_check_data", "CheckReport",
           "PreviewRow", "TokenStats", "read_source", "detect_format", "DataProblems", "has_generation_markers",
           "grader_item", "REFERENCE_COLUMN", "RawTable"]


@dataclass
class StageData:
    """Everything one training stage needs from the data."""

    train: object  # datasets.Dataset in TRL's format for the stage
    eval: object | None  # datasets.Dataset of the held-out rows, same columns as `train`; None when none
    # The held-out rows as read (all columns) for grading, eval_rows[i] being eval[i]; a chat's final answer is
    # added as `completion` so graders' {{item.completion}} works. Equal for both stages of a run.
    eval_rows: list[dict]
    format: str  # the detected input format: messages | prompt_completion | text | prompt
    assistant_only_loss: bool  # pass to SFTConfig: True for chats whose (training) template has {% generation %}
    notes: list[str] = field(default_factory=list)  # what a person should know (split, skips, conversions)
    dropped_long_prompts: int = 0  # RFT training rows left out for rft.max_prompt_length (data.prompt_limit)


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) row indices, both in file order. At least one eval row when fraction > 0 and n >= 2,
    and always at least one training row. Depends only on (n, fraction, seed), so every stage agrees."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(n * fraction)))
    held = set(random.Random(seed).sample(range(n), k))
    return [i for i in range(n) if i not in held], sorted(held)


def load_stage_data(cfg: RunConfig, stage: str, tokenizer, progress=None, limit_prompts: bool = True) -> StageData:
    """Load, check, split and convert the data of `stage` ("sft" or "rft"). Raises DataError.

    `progress(bytes_read, total)` is called while a JSON Lines file is read.
    """
    if stage not in ("sft", "rft"):
        raise ValueError(f"stage must be 'sft' or 'rft', not {stage!r}")
    d = cfg.data
    notes: list[str] = []
    separate = stage == "rft" and cfg.method == "sft+rft" and bool(d.rft_train)
    table = read_source(cfg.resolve(d.rft_train if separate else d.train), d.split, progress)
    notes += table.notes
    fmt = detect_format(table.columns, stage, d, table.name)
    records = normalise(table, fmt, stage, d)
    rows, raw = list(records.rows), list(table.rows)
    n = len(rows)

    if d.eval:
        eval_table = read_source(cfg.resolve(d.eval), d.split)
        notes += eval_table.notes
        eval_fmt = detect_format(eval_table.columns, stage, d, eval_table.name)
        # RFT turns chats and prompts alike into prompts, but SFT datasets of two formats would not line up.
        if eval_fmt != fmt and stage == "sft":
            raise DataError(f"{eval_table.name} reads as format `{eval_fmt}`, but {table.name} as `{fmt}`. Give "
                            f"the evaluation data the same columns as the training data.")
        eval_records = normalise(eval_table, eval_fmt, stage, d)
        rows += eval_records.rows
        raw += eval_table.rows
        train_idx, eval_idx = list(range(n)), list(range(n, len(rows)))
        notes.append(f"Evaluating on {eval_table.name} ({len(eval_idx)} rows; data.eval).")
    else:
        train_idx, eval_idx = split_indices(n, d.eval_fraction, cfg.seed)
        if eval_idx:
            notes.append(f"Held out {len(eval_idx)} of {n} rows of {table.name} for evaluation (seed {cfg.seed}, "
                         f"data.eval_fraction {d.eval_fraction}); every stage holds out the same rows.")
        elif d.eval_fraction > 0:
            notes.append(f"{table.name} has only {n} row, so nothing is held out for evaluation.")
    if separate:
        notes.append(f"The RFT stage trains on {table.name} (data.rft_train); its held-out rows come from it too.")
    if d.max_rows and len(train_idx) > d.max_rows:
        notes.append(f"Training on the first {d.max_rows} of {len(train_idx)} rows (data.max_rows); "
                     f"{len(train_idx) - d.max_rows} rows are not used.")
        train_idx = train_idx[:d.max_rows]

    if stage == "sft":
        conv = to_sft(Records(fmt, rows), tokenizer, cfg.model.chat_template_kwargs)
        if cfg.tools and tokenizer is not None:
            # Tool-use demonstrations are rendered with the run's tool list, exactly as RFT's prompts are
            # (TRL's SFT reads a `tools` column; JSON text, as `datasets` cannot hold differing schemas).
            import json

            from graders.tools import build_tools

            tools = json.dumps([t.schema() for t in build_tools(cfg.tools, cfg.base_dir)])
            conv.rows = [{**row, "tools": tools} for row in conv.rows]
    else:  # GRPO applies the template itself, with GRPOConfig.chat_template_kwargs
        conv = to_rft(Records(fmt, rows), tokenizer)
    notes += render(records.notes + conv.notes)
    if stage == "sft" and tokenizer is not None:
        notes += _truncation(conv, tokenizer, cfg.model.max_length)
    dropped = 0
    # Training rows only, and only when RFT trains on them (`limit_prompts`: evaluation reads the held-out rows
    # through this stage, and an SFT-only run must not fail over an RFT setting): the held-out rows stay equal
    # for both stages and every variant.
    if stage == "rft" and limit_prompts:
        from finetuner.data.prompt_limit import keep_short_prompts

        kept, note = keep_short_prompts(conv.rows, train_idx, tokenizer, cfg.rft.max_prompt_length, table.name,
                                        cfg.model.chat_template_kwargs)
        dropped, train_idx = len(train_idx) - len(kept), kept
        notes += [note] if note else []
    train = to_dataset([conv.rows[i] for i in train_idx])
    evaluation = to_dataset([conv.rows[i] for i in eval_idx]) if eval_idx else None
    eval_rows = [_with_reference(raw[i], rows[i]) for i in eval_idx]
    return StageData(train, evaluation, eval_rows, fmt, conv.assistant_only_loss, notes, dropped)


def _truncation(conv, tokenizer, max_length: int) -> list[str]:
    """Say how many rows SFT will cut at `model.max_length`. Counted on the rows' text alone, batched: rendering
    every row through the chat template would cost seconds per 10,000 rows before each run, and the template only
    adds tokens, so every row counted here is truly cut (check-data gives the exact count)."""
    texts = ["\n".join(_strings(row)) for row in conv.rows]
    # A token covers at least one byte (byte-level BPE, byte-fallback SentencePiece, character vocabularies), so
    # only rows of more bytes than max_length need the tokenizer.
    long = [t for t in texts if len(t) > max_length // 4 and len(t.encode()) > max_length]
    if not long:
        return []
    lengths = [len(ids) for ids in tokenizer(long, add_special_tokens=False)["input_ids"]]
    over = sum(n > max_length for n in lengths)
    if not over:
        return []
    return [f"{over} of {len(texts)} rows are longer than model.max_length ({max_length} tokens) even before the "
            f"chat template's tokens (the longest: {max(lengths)}): SFT truncates them, so their ends are not "
            f"trained. Raise model.max_length or shorten those rows (check-data counts every row exactly)."]


def _strings(value) -> list[str]:
    """Every text in a converted row (chat turns' contents, prompt, completion, text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        keys = ("content",) if "role" in value else ("messages", "prompt", "completion", "text")
        return [s for k in keys if k in value for s in _strings(value[k])]
    return []


def _with_reference(raw: dict, record: dict) -> dict:
    """A held-out row for grading: as read, plus the answer to compare with as `completion` when the row has
    one under another form (a chat's final assistant turn, or `data.completion_column`). Both stages derive the
    same value, so their `eval_rows` are equal."""
    if "completion" in raw:
        return raw
    answer = record.get("completion")
    messages = record.get("messages")
    if answer is None and messages and messages[-1]["role"] == "assistant":
        answer = messages[-1]["content"]
    if isinstance(answer, list):  # a completion given as chat turns
        answer = answer[-1]["content"] if answer else None
    return raw if answer is None else {**raw, "completion": answer}
