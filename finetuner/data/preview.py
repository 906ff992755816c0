"""What the tokenizer sees of a converted row: its length in tokens as TRL tokenizes it, and a preview with the
character spans the loss trains on (from the chat template's own assistant mask)."""

from __future__ import annotations

from dataclasses import dataclass, field

from finetuner.data.read import DataProblems
from finetuner.data.to_trl import Converted, grader_item
from finetuner.modeling.chat_templates import training_template

OPEN, CLOSE = "⟦", "⟧"


@dataclass
class PreviewRow:
    stage: str  # sft | rft
    where: str  # "line 3", "row 3"
    text: str  # the row as the model sees it, through the chat template
    spans: list[tuple[int, int]]  # [start, end) character ranges of `text` that are trained
    marked: str  # `text` with ⟦ ⟧ around each span
    columns: dict = field(default_factory=dict)  # RFT: the other columns graders see as {{item.<column>}}


def _render(tokenizer, messages: list[dict], **kw) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def _chat_kw(row: dict, fmt: str, tokenizer) -> dict:
    """What SFT passes the template for this row: its `chat_template_kwargs`, and for chats the training
    template (modeling.chat_templates) that marks every assistant turn."""
    kw = dict(row.get("chat_template_kwargs") or {})
    if fmt == "messages":
        template = training_template(tokenizer).template
        if template:
            kw["chat_template"] = template
    return kw


def _with_eos(text: str, tokenizer) -> str:
    # TRL appends EOS to plain (non-chat) text and completions so the model learns to stop.
    eos = tokenizer.eos_token or ""
    return text if text.endswith(eos) else text + eos


def _sequence(row: dict, fmt: str, tokenizer) -> tuple[str, bool]:
    """(text, add_special_tokens): the sequence a row becomes, as TRL tokenizes it."""
    if fmt == "messages":
        return _render(tokenizer, row["messages"], **_chat_kw(row, fmt, tokenizer)), False
    if fmt == "text":
        return _with_eos(row["text"], tokenizer), True
    prompt = row["prompt"]
    if fmt == "prompt":
        if isinstance(prompt, list):
            return _render(tokenizer, prompt, add_generation_prompt=True), False
        return prompt, True
    if isinstance(prompt, list):
        return _render(tokenizer, prompt + row["completion"], **_chat_kw(row, fmt, tokenizer)), False
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


def preview_row(row: dict, fmt: str, tokenizer, stage: str, where: str) -> PreviewRow:
    """One converted row as the model sees it, with the character spans the loss trains on."""
    columns = {k: v for k, v in grader_item(row).items() if k != "prompt"} if fmt == "prompt" else {}
    if fmt == "messages":
        text, spans = _assistant_spans(row["messages"], tokenizer, _chat_kw(row, fmt, tokenizer))
    elif fmt == "text":
        text = _with_eos(row["text"], tokenizer)
        spans = [(0, len(text))]
    elif fmt == "prompt":
        text, spans = _sequence(row, fmt, tokenizer)[0], []  # RFT trains on the model's own answers
    elif isinstance(row["prompt"], list):
        kw = _chat_kw(row, fmt, tokenizer)
        text = _render(tokenizer, row["prompt"] + row["completion"], **kw)
        prefix = _render(tokenizer, row["prompt"], add_generation_prompt=True, **kw)
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


def _assistant_spans(messages: list[dict], tokenizer, kw: dict) -> tuple[str, list[tuple[int, int]]]:
    """Character spans of the tokens TRL's assistant_only_loss trains, from the (training) template's mask."""
    text = _render(tokenizer, messages, **kw)
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True, **kw)
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
