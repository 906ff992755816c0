"""Turn checked `Records` into the `datasets.Dataset`s that TRL's trainers read, for one tokenizer.

SFT (SFTTrainer):
  - `messages` stay `{"messages": [...]}` when a training template is known for the chat template
    (modeling.chat_templates: the model's own with `{% generation %}`, TRL's for its families, ours for SmolLM2):
    then `assistant_only_loss=True` trains on every assistant turn and nothing else (the trainer tokenizes with
    `chat_templates.sft_tokenizer`). With none known TRL cannot tell the answers apart, so each chat becomes
    prompt (all turns before the last assistant turn) + completion (that turn): only that answer is trained.
  - `model.chat_template_kwargs` (e.g. `enable_thinking`) rides along as a `chat_template_kwargs` column, which
    SFTTrainer passes to the template for each chat row (SFTConfig has no such field).
  - `prompt` + `completion` become chat turns when the tokenizer has a chat template, else plain strings.
  - `text` stays `{"text": ...}`.
RFT (GRPOTrainer): `{"prompt": chat list or string, <every other column>}`. GRPO hands every other column to the
reward functions, except `completion` and `completion_ids`, which it keeps for its own samples: a `completion`
column (a reference answer) is therefore stored as `reference_completion` (REFERENCE_COLUMN), and the graders'
`item` gets it back under its name (`graders.item.build_item`, which also adds the prompt as text). `datasets`
wants one type per column, so mixed columns become text (with a note).
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
from dataclasses import dataclass, field

from graders.item import REFERENCE_COLUMN, grader_item  # noqa: F401 - graders own the renaming back

from finetuner.data.notes import Note
from finetuner.modeling.chat_templates import TrainingTemplate, template_text, training_template
from finetuner.data.rows import Records
from graders.errors import DataError

# GRPOTrainer drops these dataset columns from the reward functions' keyword arguments (trl 1.x).
GRPO_RESERVED = ("prompt", "completion", "completion_ids")

# The same test as trl.chat_template_utils.has_generation_markers, without importing TRL (seconds) here.
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


chat_template = template_text  # the tokenizer's template text, or None


def has_generation_markers(tokenizer) -> bool:
    template = chat_template(tokenizer)
    return bool(template and _GENERATION.search(template))


@dataclass
class Converted:
    rows: list[dict]
    assistant_only_loss: bool = False
    format: str = ""  # what TRL sees: messages | prompt_completion | text | prompt
    notes: list[Note] = field(default_factory=list)  # rendered by data.notes.render


def _no_template(what: str) -> DataError:
    return DataError(f"The model's tokenizer has no chat template, so {what} cannot be rendered. Use a chat "
                     f"(instruct) model, or give the data as plain `text` or `prompt` + `completion` strings.")


def to_sft(records: Records, tokenizer, template_kwargs: dict | None = None) -> Converted:
    """SFT rows for TRL. `tokenizer=None` is read as "a chat template without generation markers"."""
    has_template = tokenizer is None or chat_template(tokenizer) is not None
    if records.format == "text":
        return Converted([{"text": r["text"]} for r in records.rows], False, "text")
    if records.format == "messages":
        if not has_template:
            raise _no_template("chat `messages`")
        found = training_template(tokenizer) if tokenizer is not None else TrainingTemplate("none")
        note = Note("chat_template", detail=found.describe())
        if found.every_turn:
            rows = [{"messages": r["messages"]} for r in records.rows]
            return Converted(_with_kwargs(rows, template_kwargs), True, "messages", [note])
        conv = _messages_to_prompt_completion(records.rows)
        conv.rows, conv.notes = _with_kwargs(conv.rows, template_kwargs), [note] + conv.notes
        return conv
    rows = []
    for r in records.rows:
        prompt, completion = r["prompt"], r["completion"]
        if has_template:
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
        elif not isinstance(prompt, str) or not isinstance(completion, str):
            raise _no_template("prompts or completions given as chat messages")
        rows.append({"prompt": prompt, "completion": completion})
    notes = [] if has_template else [Note("no_chat_template")]
    return Converted(_with_kwargs(rows, template_kwargs) if has_template else rows, False, "prompt_completion",
                     notes)


def _with_kwargs(rows: list[dict], template_kwargs: dict | None) -> list[dict]:
    """Chat rows with the template's extra arguments, as SFTTrainer reads them per row."""
    if not template_kwargs:  # no column at all: `datasets` cannot store an empty mapping
        return rows
    return [{**row, "chat_template_kwargs": dict(template_kwargs)} for row in rows]


def _messages_to_prompt_completion(rows: list[dict]) -> Converted:
    out, trailing, multi = [], 0, 0
    for r in rows:
        msgs = r["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        trailing += last < len(msgs) - 1
        multi += sum(m["role"] == "assistant" for m in msgs) > 1
        out.append({"prompt": msgs[:last], "completion": [msgs[last]]})
    notes = [Note("no_generation_markers")]
    if multi:
        notes.append(Note("several_assistant_turns", count=multi))
    if trailing:
        notes.append(Note("turns_after_answer", count=trailing))
    return Converted(out, False, "prompt_completion", notes)


def to_rft(records: Records, tokenizer) -> Converted:
    """GRPO rows: the prompt as the model will see it, plus every other column for the graders."""
    has_template = tokenizer is None or chat_template(tokenizer) is not None
    rows = []
    for r in records.rows:
        prompt = r["prompt"]
        if isinstance(prompt, str) and has_template:
            prompt = [{"role": "user", "content": prompt}]
        elif not isinstance(prompt, str) and not has_template:
            raise _no_template("chat-message prompts")
        rows.append({**r, "prompt": prompt})
    notes = unify_columns(rows, skip=("prompt",))  # before the renaming below, so notes use the user's names
    extra = [c for c in rows[0] if c != "prompt"] if rows else []
    if "completion" in extra:
        if REFERENCE_COLUMN in extra:
            raise DataError(f"The data has both `completion` and `{REFERENCE_COLUMN}` columns; the second name "
                            f"carries the first during RFT. Rename `{REFERENCE_COLUMN}`.")
        for row in rows:
            row[REFERENCE_COLUMN] = row.pop("completion")
    if extra:
        notes.append(Note("grader_columns", names=dict.fromkeys(extra, 0)))
    else:
        notes.append(Note("only_prompts"))
    return Converted(rows, False, "prompt", notes)


# ---------------------------------------------------------------- one type per column


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "other"


def _as_text(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def unify_columns(rows: list[dict], skip: tuple[str, ...] = ()) -> list[Note]:
    """Give every row every column and each column one type, in place; return notes on what changed.

    `datasets` builds a column from the first row's keys and one Arrow type, so a key missing in the first
    row would vanish and an int column with one string would fail to load.
    """
    import pyarrow as pa

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    notes = []
    for col in columns:
        if col in skip:
            continue
        values = [row.get(col) for row in rows]
        absent = sum(col not in row for row in rows)
        if absent:
            for row in rows:
                row.setdefault(col, None)
            notes.append(Note("column_missing", col, count=absent, of=len(rows)))
        kinds = {_kind(v) for v in values if v is not None}
        reason = ""
        if "other" in kinds:
            reason = "holds values that are not JSON (dates, bytes, ...)"
        elif len(kinds) > 1:
            reason = f"mixes {' and '.join(sorted(kinds))}"
        elif kinds & {"list", "object"}:
            try:
                pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                reason = "holds lists or objects whose inner types differ from row to row"
        if reason:
            for row in rows:
                row[col] = _as_text(row[col])
            notes.append(Note("column_as_text", col, detail=reason))
    return notes


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)
