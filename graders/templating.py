"""`{{sample.output_text}}` / `{{item.column}}` templates, as in OpenAI's graders.

A placeholder is a namespace (`sample` or `item`) followed by keys and list indexes:
`{{item.answers[0]}}`, `{{item.answers.0}}`, `{{sample.output_json.city}}`, `{{item["odd key"]}}`.
Templates are parsed once (`Template(text)`) and rendered per row; a variable the row doesn't have is a
typed `invalid_variable` failure, never a crash. Values that are not strings render as JSON, chat
message lists render as `role: content` lines, and None renders as an empty string.
"""

from __future__ import annotations

import json
import re

from graders.base import GraderFailure
from graders.trajectory import SAMPLE_KEYS

NAMESPACES = ("sample", "item")
_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
_STEP = re.compile(r"""\.\s*([^.\[\]\s]+)|\[\s*(-?\d+)\s*\]|\[\s*(["'])(.*?)\3\s*\]""")


class TemplateSyntaxError(ValueError):
    """A placeholder that can never render (bad namespace or syntax): a config problem, found at build time."""


def parse_path(expr: str) -> tuple[str, tuple]:
    """'item.answers[0]' -> ('item', ('answers', 0)). Raises TemplateSyntaxError."""
    head = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", expr)
    if not head:
        raise TemplateSyntaxError(f"'{{{{{expr}}}}}' is not a variable; write e.g. {{{{item.answer}}}}")
    namespace = head.group(1)
    if namespace not in NAMESPACES:
        raise TemplateSyntaxError(f"'{{{{{expr}}}}}' starts with '{namespace}'; variables start with "
                                  "'sample.' (the model's output) or 'item.' (the dataset row)")
    steps: list = []
    pos = head.end()
    while pos < len(expr):
        match = _STEP.match(expr, pos)
        if not match:
            raise TemplateSyntaxError(f"cannot read '{{{{{expr}}}}}' after '{expr[:pos]}'")
        key, index, _, quoted = match.groups()
        if index is not None:
            steps.append(int(index))
        elif quoted is not None:
            steps.append(quoted)
        else:
            steps.append(int(key) if key.lstrip("-").isdigit() else key)
        pos = match.end()
    if namespace == "sample" and steps and steps[0] not in SAMPLE_KEYS:
        raise TemplateSyntaxError(f"'{{{{{expr}}}}}': the sample has no '{steps[0]}'; it has "
                                  f"{', '.join(SAMPLE_KEYS)} (without tools the calls are empty lists and `messages` is absent)")
    return namespace, tuple(steps)


def lookup(namespace: str, steps: tuple, sample: dict, item: dict, expr: str = ""):
    """The value at a parsed path, or GraderFailure('invalid_variable')."""
    value = sample if namespace == "sample" else item
    walked = namespace
    for step in steps:
        if isinstance(value, dict):
            if step in value:
                value = value[step]
            elif isinstance(step, int) and str(step) in value:
                value = value[str(step)]
            else:
                raise GraderFailure("invalid_variable", _missing(expr or walked, walked, step, value))
        elif isinstance(value, (list, tuple)) and isinstance(step, int):
            if -len(value) <= step < len(value):
                value = value[step]
            else:
                raise GraderFailure("invalid_variable", f"{{{{{expr}}}}}: {walked} has {len(value)} entries, "
                                    f"no index {step}")
        else:
            kind = "nothing" if value is None else type(value).__name__
            raise GraderFailure("invalid_variable", f"{{{{{expr}}}}}: {walked} is {kind}, it has no '{step}'")
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    return value


def _missing(expr: str, walked: str, step, container: dict) -> str:
    if walked == "sample" and step == "output_json":
        return (f"{{{{{expr}}}}}: the model's output is not valid JSON, so sample.output_json is missing")
    keys = ", ".join(sorted(map(str, container))[:12]) or "none"
    what = "the row has no column" if walked == "item" else f"{walked} has no key"
    return f"{{{{{expr}}}}}: {what} '{step}' (it has: {keys})"


def to_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        from graders.base import content_text
        return "\n".join(f"{m['role']}: {content_text(m.get('content'))}" for m in value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class Template:
    """A template parsed once. `render(sample, item)` -> str; `variables` lists its placeholders."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TemplateSyntaxError(f"expected text, got {type(text).__name__}")
        self.text = text
        self.parts: list = []  # str or (expr, namespace, steps)
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            self.parts.append(text[pos:match.start()])
            expr = match.group(1)
            namespace, steps = parse_path(expr)
            self.parts.append((expr, namespace, steps))
            pos = match.end()
        self.parts.append(text[pos:])
        self.parts = [p for p in self.parts if p != ""]
        self.variables = [p[0] for p in self.parts if isinstance(p, tuple)]

    @property
    def is_static(self) -> bool:
        return not self.variables

    def render(self, sample: dict, item: dict, convert=to_text) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                expr, namespace, steps = part
                out.append(convert(lookup(namespace, steps, sample, item, expr)))
        return "".join(out)

    def value(self, sample: dict, item: dict):
        """For a template that is exactly one placeholder, the raw value; otherwise the rendered text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple):
            expr, namespace, steps = self.parts[0]
            return lookup(namespace, steps, sample, item, expr)
        return self.render(sample, item)


def render(text: str, sample: dict, item: dict) -> str:
    """One-off rendering (parse + render); graders keep a `Template` instead."""
    return Template(text).render(sample, item)
