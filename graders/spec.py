"""Reading one grader spec (a dict from a run's YAML `graders:` list) with messages a person can act on.

`SpecReader` checks field names (with did-you-mean), types and ranges, and raises `GraderConfigError`
naming the grader, the field and what to do. Grader classes use it in their `from_spec` constructors.
"""

from __future__ import annotations

import difflib
import math

from graders.base import GraderConfigError
from graders.templating import Template, TemplateSyntaxError

MISSING = object()
COMMON_FIELDS = {"name", "type", "weight"}


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class SpecReader:
    def __init__(self, spec: dict, known: set[str], ignored: set[str] = frozenset()):
        self.spec = spec
        self.name = str(spec.get("name", "?"))
        self.type = str(spec.get("type", "?"))
        allowed = COMMON_FIELDS | set(known) | set(ignored)
        for key in spec:
            if key not in allowed:
                raise self.error(key, "is not a field of this grader type.",
                                 did_you_mean(key, sorted(allowed)) or
                                 f" Its fields are: {', '.join(sorted(known))}.")

    def error(self, field: str | None, problem: str, fix: str = "") -> GraderConfigError:
        where = f"grader '{self.name}' ({self.type})"
        if field:
            where += f", field '{field}'"
        return GraderConfigError(f"{where}: {problem}{fix}")

    def has(self, field: str) -> bool:
        return self.spec.get(field) is not None

    def get(self, field: str, default=MISSING):
        value = self.spec.get(field)
        if value is None:
            if default is MISSING:
                raise self.error(field, "is missing.", " Add it to the grader.")
            return default
        return value

    def text(self, field: str, default=MISSING) -> str:
        value = self.get(field, default)
        if value is not default or isinstance(value, str):
            if not isinstance(value, str):
                raise self.error(field, f"must be text, not {type(value).__name__}.")
        return value

    def template(self, field: str, default=MISSING) -> Template:
        value = self.get(field, default)
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            else:
                raise self.error(field, f"must be text (a template), not {type(value).__name__}.")
        try:
            return Template(value)
        except TemplateSyntaxError as err:
            raise self.error(field, f"{err}.") from None

    def number(self, field: str, default=MISSING, lo: float | None = None, hi: float | None = None,
               integer: bool = False):
        value = self.get(field, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise self.error(field, f"must be a number, not {value!r}.") from None
        if not math.isfinite(value):
            raise self.error(field, f"must be a finite number, not {value!r}.")
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = f"at least {lo:g}" if hi is None else f"between {lo:g} and {hi:g}" if lo is not None \
                else f"at most {hi:g}"
            raise self.error(field, f"is {value:g}; it must be {bounds}.")
        if integer:
            if value != int(value):
                raise self.error(field, f"must be a whole number, not {value:g}.")
            return int(value)
        return float(value)

    def choice(self, field: str, options, default=MISSING) -> str:
        value = self.get(field, default)
        if value not in options:
            raise self.error(field, f"is '{value}'; it must be one of: {', '.join(map(str, options))}.",
                             did_you_mean(value, options))
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self.get(field, default)
        if not isinstance(value, bool):
            raise self.error(field, f"must be true or false, not {value!r}.")
        return value

    def mapping(self, field: str, default=MISSING) -> dict:
        value = self.get(field, default)
        if not isinstance(value, dict):
            raise self.error(field, f"must be a mapping (key: value), not {type(value).__name__}.")
        return value
