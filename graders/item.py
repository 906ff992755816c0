"""The `item` a grader sees: one function for training, dry runs, evaluation and the Graders tab.

    item = build_item(row, prompt)   # row: the data row's columns; prompt: what the model was given

`item` is the row with every column (`{{item.<column>}}`), plus:
  - `prompt`: the prompt as the user's text. A prompt of a single user turn is that turn's text; a chat of
    several turns (a system message, earlier turns) is those turns as `role: content` lines, so a judge sees
    everything the model saw, as text rather than a list of message dicts;
  - `messages`: the same prompt as chat turns (`[{"role": "user", "content": ...}]` for a plain string), for
    Python graders that want the turns themselves;
  - `completion`: the reference answer, back under its own name (the engine stores it as
    `reference_completion`, since GRPOTrainer keeps `completion` for its own samples).
Every path builds `item` with `build_item`, so `{{item.prompt}}` renders the same text in a dry run as in
training.
"""

from __future__ import annotations

from graders.base import content_text
from graders.templating import to_text

# GRPOTrainer keeps a dataset column named `completion` for itself, so the engine stores a reference answer as
# `reference_completion` (finetuner/data/to_trl.py); graders see it under its real name, {{item.completion}}.
REFERENCE_COLUMN = "reference_completion"


def grader_item(row: dict) -> dict:
    """The row's columns as graders see them: the reference answer back under `completion` (nothing else)."""
    if REFERENCE_COLUMN not in row:
        return row
    item = {k: v for k, v in row.items() if k != REFERENCE_COLUMN}
    item["completion"] = row[REFERENCE_COLUMN]
    return item


def as_messages(prompt) -> list[dict] | None:
    """The prompt as chat turns, or None when it is neither text nor turns."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict) and "role" in prompt:
        prompt = [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) and "role" in m for m in prompt):
        return [dict(m) for m in prompt]
    return None


def prompt_text(prompt) -> str:
    """A prompt as text: a string as it is; one user turn as its text; several turns as `role: content` lines."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    turns = as_messages(prompt)
    if turns is None:
        return to_text(prompt)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return content_text(turns[0].get("content"))
    return "\n".join(f"{m['role']}: {content_text(m.get('content'))}" for m in turns)


_NO_PROMPT = object()


def build_item(row: dict, prompt=_NO_PROMPT) -> dict:
    """The `item` for one row and the prompt the model was given (a string or chat turns).

    Without `prompt`, the row's own `prompt` value is taken as the prompt (a file read as it is)."""
    item = dict(grader_item(row or {}))
    if prompt is _NO_PROMPT:
        prompt = item.get("prompt")
    if prompt is None:
        item.pop("prompt", None)
        return item
    item["prompt"] = prompt_text(prompt)
    turns = as_messages(prompt)
    if turns is not None:
        item["messages"] = turns
    return item
