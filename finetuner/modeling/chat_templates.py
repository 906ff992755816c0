"""Training chat templates: a copy of a model's chat template with `{% generation %}` markers around each
assistant turn, so SFT's `assistant_only_loss` trains every assistant turn of a chat and nothing else.

Most Hub templates have no markers. TRL ships training templates for the families it knows (Qwen2.5, Qwen3,
Llama 3, Gemma, Phi, ...: `trl.chat_template_utils.get_training_chat_template`), matched by the exact template
text; it has none for ChatML as SmolLM2 writes it, so Finetuner adds its own (assets/templates/, the same text
with markers, rendering byte-identically). Matching is by exact template string, never by model name: a template
edited by one character is a different template, and its turns could be masked wrongly.

The training template is used for tokenizing SFT data only; the saved adapter keeps the model's own template.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path

_ASSETS = Path(__file__).resolve().parent / "assets" / "templates"
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")  # trl.chat_template_utils.has_generation_markers' test


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return (_ASSETS / f"{name}.jinja").read_text(encoding="utf-8")


# Our own training templates: {exact inference template: (training template, family shown to people)}.
def _ours() -> dict[str, tuple[str, str]]:
    return {_asset("smollm2"): (_asset("smollm2_training"), "SmolLM2/ChatML")}


@dataclass(frozen=True)
class TrainingTemplate:
    source: str  # own (the model's template has markers) | trl | finetuner | none
    template: str | None = None  # the template to tokenize SFT chats with; None: the model's own, or none known
    family: str = ""

    @property
    def every_turn(self) -> bool:
        return self.source != "none"

    def describe(self) -> str:
        if self.source == "own":
            return "the model's own (it has generation markers): every assistant turn is trained"
        if self.source == "trl":
            return f"TRL's training template for {self.family} (every assistant turn is trained)"
        if self.source == "finetuner":
            return f"Finetuner's training template for {self.family} (every assistant turn is trained)"
        return "none known for this model's template: only the last assistant turn of each chat is trained"


def template_text(tokenizer) -> str | None:
    """The tokenizer's chat template (the `default` one of named variants), or None."""
    if tokenizer is None:
        return None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def training_template(tokenizer) -> TrainingTemplate:
    """Which template SFT tokenizes chats with, for this tokenizer."""
    template = template_text(tokenizer)
    if not template:
        return TrainingTemplate("none")
    if _GENERATION.search(template):
        return TrainingTemplate("own")
    ours = _ours().get(template)
    if ours:
        return TrainingTemplate("finetuner", ours[0], ours[1])
    return _trl_template(tokenizer, template)


def _trl_template(tokenizer, template: str) -> TrainingTemplate:
    # Imported only here: trl.chat_template_utils costs seconds, and most checks never get this far.
    from trl import chat_template_utils as ctu

    cached = _TRL_SEEN.get(template)
    if cached is not None:
        return cached
    try:
        patched = ctu.get_training_chat_template(tokenizer)
    except ValueError:  # TRL's word for "not a template I know"
        found = TrainingTemplate("none")
    else:
        family = next((name[:-len("_training_chat_template")] for name, value in vars(ctu).items()
                       if name.endswith("_training_chat_template") and value == patched), "this model")
        found = TrainingTemplate("trl", patched, family) if patched else TrainingTemplate("own")
    _TRL_SEEN[template] = found
    return found


_TRL_SEEN: dict[str, TrainingTemplate] = {}  # check-data converts chunk by chunk: ask TRL once per template


def sft_tokenizer(tokenizer):
    """The tokenizer SFT trains with: a copy carrying the training template when one replaces the model's, so
    TRL's assistant mask covers every assistant turn; the caller's tokenizer (saved with the adapter) is
    untouched. The tokenizer itself when nothing needs replacing."""
    found = training_template(tokenizer)
    if found.template is None:
        return tokenizer
    patched = copy.deepcopy(tokenizer)
    if isinstance(tokenizer.chat_template, dict):  # named variants (e.g. `tool_use`): replace only the default
        patched.chat_template = {**tokenizer.chat_template, "default": found.template}
    else:
        patched.chat_template = found.template
    return patched
