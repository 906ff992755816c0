"""Notes on what the row checks and the TRL conversion changed, kept as data until they are shown.

A large file is checked a chunk at a time, so the same note comes once per chunk ("3 of 2048 rows ...", then
"1 of 1200 rows ..."). Each note is a `Note` with its counts as numbers: `merge_notes` adds up the notes that
share a `key` and `render` turns them into English once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable


@dataclass
class Note:
    kind: str  # which sentence: a key of _SENTENCES
    column: str = ""  # the column the note is about, if any
    count: int = 0  # rows (or chats) it concerns
    of: int = 0  # rows looked at
    detail: str = ""  # a fixed part of the sentence: why a column was turned into text
    names: dict[str, int] = field(default_factory=dict)  # message keys ignored -> rows; columns graders see -> 0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.column, self.detail

    def plus(self, other: Note) -> Note:
        names = dict(self.names)
        for name, n in other.names.items():
            names[name] = names.get(name, 0) + n
        return Note(self.kind, self.column, self.count + other.count, self.of + other.of, self.detail, names)

    def text(self) -> str:
        return _SENTENCES[self.kind](self)

    __str__ = text


def merge_notes(notes: Iterable[Note]) -> list[Note]:
    """One note per key, in first-seen order, with the counts of every chunk's note added up."""
    merged: dict[tuple, Note] = {}
    for note in notes:
        merged[note.key] = merged[note.key].plus(note) if note.key in merged else note
    return list(merged.values())


def render(notes: Iterable[Note]) -> list[str]:
    return [note.text() for note in notes]


def _chats(n: int) -> str:
    return "1 chat has" if n == 1 else f"{n} chats have"


def _ticked(names: dict[str, int], counted: bool = False) -> str:
    if counted:
        return ", ".join(f"`{k}` ({n} rows)" for k, n in sorted(names.items()))
    return ", ".join(f"`{k}`" for k in names)


_SENTENCES: dict[str, Callable[[Note], str]] = {
    # data.rows.normalise
    "final_turn_moved": lambda n: (
        f"{n.count} of {n.of} rows end with an assistant turn: for RFT it was removed from the prompt and kept as "
        f"column `completion`, so graders can use {{{{item.completion}}}}."),
    "message_keys_ignored": lambda n: (
        f"Message keys other than `role` and `content` are ignored: {_ticked(n.names, True)}. Every assistant turn "
        f"is used as written."),
    "completion_kept": lambda n: (
        f"{n.count} of those rows already had a `completion` column; it was kept, and the final assistant turn "
        f"dropped."),
    # data.to_trl
    "no_chat_template": lambda n: (
        "The tokenizer has no chat template: prompt and completion are joined as plain text, and only the "
        "completion is trained."),
    "chat_template": lambda n: f"Chat template: {n.detail}.",
    "no_generation_markers": lambda n: (
        "The chat template has no {% generation %} markers and no known training template, so TRL cannot train "
        "on assistant turns only: each "
        "chat was split into prompt (the turns before the last assistant turn) and completion (that turn), and "
        "only the completion is trained."),
    "several_assistant_turns": lambda n: (
        f"{_chats(n.count)} several assistant turns; only the last one of each is trained (earlier ones are "
        f"context). A model whose chat template has {{% generation %}}, or one Finetuner or TRL knows a training "
        f"template for (Qwen, Llama 3, Gemma, Phi, SmolLM2, ...), trains them all."),
    "turns_after_answer": lambda n: (
        f"{_chats(n.count)} turns after their last assistant turn; those turns were dropped, since nothing after "
        f"the trained answer is learned."),
    "column_missing": lambda n: (
        f"Column `{n.column}` is missing in {n.count} of {n.of} rows; they get an empty value."),
    "column_as_text": lambda n: (
        f"Column `{n.column}` {n.detail}: all its values were turned into text so it loads as one column (graders "
        f"see strings)."),
    "grader_columns": lambda n: f"Graders can use these columns as {{{{item.<column>}}}}: {_ticked(n.names)}.",
    # data.prompt_limit (detail: the limit in tokens)
    "prompts_too_long": lambda n: (
        f"{n.count} of {n.of} RFT prompts are longer than rft.max_prompt_length ({n.detail} tokens, counted with "
        f"the chat template) and are left out of training (cutting them would change the task). Raise "
        f"rft.max_prompt_length (0: no limit) or shorten those prompts."),
    "only_prompts": lambda n: (
        "The rows hold only prompts: graders can judge only the answer itself ({{sample.output_text}})."),
}
