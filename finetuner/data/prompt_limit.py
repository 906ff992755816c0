"""`rft.max_prompt_length`: RFT rows whose prompt is longer than the limit are dropped, not cut.

TRL 1.16's GRPOConfig has no `max_prompt_length` any more, so nothing downstream bounds a prompt: one long row
would make every rollout of its group slow and can exhaust memory. Cutting a chat prompt would silently change
the task (the question is usually at the end), so those rows are left out and counted instead.

Prompts are measured as the model will see them: conversational prompts rendered with the chat template and
`add_generation_prompt=True` (as GRPO renders them), plain-text prompts with the tokenizer's special tokens.
"""

from __future__ import annotations

from finetuner.data.notes import Note
from graders.errors import DataError


def prompt_lengths(rows: list[dict], tokenizer, template_kwargs: dict | None = None) -> list[int]:
    """Tokens of each row's `prompt` as the model sees it (batched tokenization; the per-row cost is the chat
    template's rendering, which an exact count needs anyway)."""
    chats = [i for i, r in enumerate(rows) if isinstance(r["prompt"], list)]
    texts = [r["prompt"] for r in rows if isinstance(r["prompt"], str)]
    lengths = [0] * len(rows)
    if chats:
        rendered = [tokenizer.apply_chat_template(rows[i]["prompt"], tokenize=False, add_generation_prompt=True,
                                                  **(template_kwargs or {})) for i in chats]
        # The rendered text already holds the template's special tokens (bos, role markers).
        for i, ids in zip(chats, tokenizer(rendered, add_special_tokens=False)["input_ids"]):
            lengths[i] = len(ids)
    if texts:
        plain = [i for i, r in enumerate(rows) if isinstance(r["prompt"], str)]
        for i, ids in zip(plain, tokenizer(texts, add_special_tokens=True)["input_ids"]):
            lengths[i] = len(ids)
    return lengths


def over_limit(rows: list[dict], tokenizer, limit: int, template_kwargs: dict | None = None) -> list[int]:
    """Indices of the rows whose prompt is longer than `limit` tokens (none when the limit is 0 or there is no
    tokenizer to count with)."""
    if not limit or tokenizer is None or not rows:
        return []
    return [i for i, n in enumerate(prompt_lengths(rows, tokenizer, template_kwargs)) if n > limit]


def keep_short_prompts(rows: list[dict], indices: list[int], tokenizer, limit: int, name: str,
                       template_kwargs: dict | None = None) -> tuple[list[int], str]:
    """(the indices whose prompt fits, a note saying how many were dropped or ""). DataError when none fits.
    `template_kwargs`: model.chat_template_kwargs, which GRPO renders with (Qwen3's thinking changes lengths)."""
    long = set(over_limit([rows[i] for i in indices], tokenizer, limit, template_kwargs))
    if not long:
        return indices, ""
    kept = [i for k, i in enumerate(indices) if k not in long]
    if not kept:
        raise all_too_long(len(indices), name, limit)
    return kept, too_long_sentence(len(long), len(indices), limit)


def all_too_long(count: int, name: str, limit: int) -> DataError:
    """The one message for "no RFT prompt fits", for training and check-data alike."""
    return DataError(f"Every one of the {count} RFT prompts in {name} is longer than rft.max_prompt_length "
                     f"({limit} tokens, counted with the chat template), so nothing is left to train on. Raise "
                     f"rft.max_prompt_length (0: no limit) or shorten the prompts.")


def too_long_sentence(count: int, of: int, limit: int) -> str:
    return Note("prompts_too_long", count=count, of=of, detail=str(limit)).text()
