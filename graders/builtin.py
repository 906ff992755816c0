"""Built-in graders that need no code: string_check, regex, json_schema, length, overlong.

`string_check` follows OpenAI's fields (`input`, `reference`, `operation`: eq, ne (or neq), like, ilike). The others
are ours: `regex` (search / match / fullmatch, flags, a templated pattern), `json_schema` (the output parses
and validates), and `length` (char / word / token bounds, to stop a policy from winning by length).
text_similarity lives in similarity.py and math in math_grader.py.
"""

from __future__ import annotations

import functools
import json
import os
import re

from graders.base import Grader, GradeResult, GraderFailure, parse_json_text
from graders.spec import SpecReader
from graders.templating import Template, to_text

try:  # `regex` (a transformers dependency) can stop a runaway pattern; `re` cannot
    import regex as _re_engine
    _HAS_TIMEOUT = True
except ImportError:  # pragma: no cover - transformers always brings it
    _re_engine, _HAS_TIMEOUT = re, False

OUTPUT = "{{sample.output_text}}"


def _short(text: str, n: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return repr(text if len(text) <= n else text[: n - 3] + "...")


class StringCheck(Grader):
    type = "string_check"
    FIELDS = {"input", "reference", "operation"}
    OPERATIONS = ("eq", "ne", "like", "ilike")
    ALIASES = {"neq": "ne"}  # how OpenAI's graders guide spells `ne` in its prose

    def __init__(self, name: str, input: Template, reference: Template, operation: str, weight: float = 1.0):
        super().__init__(name, weight)
        self.input, self.reference, self.operation = input, reference, operation

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        op = r.choice("operation", cls.OPERATIONS + tuple(cls.ALIASES))
        return cls(r.name, r.template("input"), r.template("reference"), cls.ALIASES.get(op, op),
                   r.number("weight", 1.0))

    def _grade_one(self, sample, item):
        a, b = self.input.render(sample, item), self.reference.render(sample, item)
        op = self.operation
        hit = (a == b if op == "eq" else a != b if op == "ne" else b in a if op == "like"
               else b.lower() in a.lower())
        return GradeResult(1.0 if hit else 0.0, log=f"{_short(a)} {op} {_short(b)}: {'yes' if hit else 'no'}")


_FLAG_NAMES = {"i": "IGNORECASE", "m": "MULTILINE", "s": "DOTALL", "x": "VERBOSE", "a": "ASCII"}


class Regex(Grader):
    type = "regex"
    FIELDS = {"input", "pattern", "mode", "flags", "negate", "escape_variables", "timeout_s"}
    MODES = ("search", "match", "fullmatch")

    def __init__(self, name, input: Template, pattern: Template, mode="search", flags=0, negate=False,
                 escape_variables=True, timeout_s=1.0, weight=1.0):
        super().__init__(name, weight)
        self.input, self.pattern, self.mode, self.flags = input, pattern, mode, flags
        self.negate, self.escape_variables, self.timeout_s = negate, escape_variables, timeout_s
        self._static = self._compile(pattern.text) if pattern.is_static else None

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        flags = 0
        raw = r.get("flags", [])
        names = list(raw) if isinstance(raw, str) and raw.islower() and len(raw) <= 5 else (
            [raw] if isinstance(raw, str) else raw)
        for flag in names:
            full = _FLAG_NAMES.get(str(flag).lower(), str(flag).upper())
            if full not in _FLAG_NAMES.values():
                raise r.error("flags", f"'{flag}' is not a regex flag.",
                              f" Use any of: {', '.join(_FLAG_NAMES.values())} (or the letters ismxa).")
            flags |= getattr(_re_engine, full)
        pattern = r.template("pattern")
        grader = None
        try:
            grader = cls(r.name, r.template("input", OUTPUT), pattern, r.choice("mode", cls.MODES, "search"),
                         flags, r.boolean("negate", False), r.boolean("escape_variables", True),
                         r.number("timeout_s", 1.0, lo=0.01), r.number("weight", 1.0))
        except (re.error, _re_engine.error) as err:
            raise r.error("pattern", f"is not a valid regular expression: {err}.",
                          " Check brackets and escape special characters with a backslash.") from None
        return grader

    @functools.lru_cache(maxsize=512)  # noqa: B019 - a grader lives as long as its run
    def _compile(self, pattern: str):
        return _re_engine.compile(pattern, self.flags)

    def _grade_one(self, sample, item):
        text = self.input.render(sample, item)
        if self._static is not None:
            compiled = self._static
        else:
            convert = (lambda v: _re_engine.escape(to_text(v))) if self.escape_variables else to_text
            rendered = self.pattern.render(sample, item, convert)
            try:
                compiled = self._compile(rendered)
            except (re.error, _re_engine.error) as err:
                raise GraderFailure("runtime_error", f"pattern {_short(rendered)} is not valid: {err}") from None
        kwargs = {"timeout": self.timeout_s} if _HAS_TIMEOUT else {}
        try:
            match = getattr(compiled, self.mode)(text, **kwargs)
        except TimeoutError:
            raise GraderFailure("timeout", f"the pattern took longer than {self.timeout_s:g} s on this "
                                "output; simplify it (nested repeats like (a+)+ are slow)") from None
        hit = (match is not None) != self.negate
        found = f"matched {_short(match.group(0))}" if match else "no match"
        return GradeResult(1.0 if hit else 0.0, log=found + (" (negated)" if self.negate else ""))


class JsonSchema(Grader):
    type = "json_schema"
    FIELDS = {"input", "schema", "schema_file"}

    def __init__(self, name, input: Template, schema: dict, weight=1.0):
        super().__init__(name, weight)
        import jsonschema

        self.input, self.schema = input, schema
        self.validator = jsonschema.validators.validator_for(schema)(schema)

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        import jsonschema

        if r.has("schema") == r.has("schema_file"):
            raise r.error("schema", "give exactly one of 'schema' (inline) or 'schema_file' (a path).")
        if r.has("schema_file"):
            path = os.path.join(base_dir or "", r.text("schema_file"))
            try:
                with open(path, encoding="utf-8") as fh:
                    schema = _load_structured(fh.read(), path)
            except (OSError, ValueError) as err:
                raise r.error("schema_file", f"cannot be read: {err}.", " Check the path (relative to the "
                              "run's folder) and that it holds a JSON or YAML schema.") from None
        else:
            schema = r.get("schema")
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except ValueError as err:
                    raise r.error("schema", f"is text that is not JSON: {err}.") from None
        if not isinstance(schema, (dict, bool)):
            raise r.error("schema", "must be a JSON schema object, e.g. {type: object, required: [answer]}.")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as err:
            raise r.error("schema", f"is not a valid JSON schema: {err.message}.") from None
        return cls(r.name, r.template("input", OUTPUT), schema, r.number("weight", 1.0))

    def _grade_one(self, sample, item):
        text = self.input.render(sample, item)
        try:
            value = parse_json_text(text)
        except (ValueError, RecursionError) as err:
            return GradeResult(0.0, log=f"output is not JSON: {err}")
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        if errors:
            first = errors[0]
            where = "/".join(map(str, first.path)) or "(top)"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return GradeResult(0.0, log=f"does not match the schema at {where}: {first.message}{more}")
        return GradeResult(1.0, log="valid")


def _load_structured(text: str, path: str):
    if path.endswith((".yaml", ".yml")):
        import yaml
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(str(err)) from None
    return json.loads(text)


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class Length(Grader):
    type = "length"
    FIELDS = {"input", "unit", "min", "max", "penalty", "tolerance", "tokenizer"}
    UNITS = ("chars", "words", "tokens")

    def __init__(self, name, input: Template, unit="chars", min=None, max=None, penalty="hard",
                 tolerance=None, tokenizer=None, weight=1.0):
        super().__init__(name, weight)
        self.input, self.unit, self.min, self.max = input, unit, min, max
        self.penalty, self.tolerance, self.tokenizer = penalty, tolerance, tokenizer

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        lo, hi = r.number("min", None, lo=0), r.number("max", None, lo=0)
        if lo is None and hi is None:
            raise r.error("max", "is missing: give 'min', 'max' or both.")
        if lo is not None and hi is not None and lo > hi:
            raise r.error("min", f"({lo:g}) is larger than max ({hi:g}).")
        unit = r.choice("unit", cls.UNITS, "chars")
        tokenizer = r.text("tokenizer", None)
        if unit == "tokens" and not tokenizer:
            raise r.error("tokenizer", "is needed when unit is 'tokens'.",
                          " Give the model's folder or Hugging Face id (it must be available offline).")
        if tokenizer and base_dir and os.path.exists(os.path.join(base_dir, tokenizer)):
            tokenizer = os.path.join(base_dir, tokenizer)
        return cls(r.name, r.template("input", OUTPUT), unit, lo, hi, r.choice("penalty", ("hard", "linear"),
                   "hard"), r.number("tolerance", None, lo=1), tokenizer, r.number("weight", 1.0))

    def measure(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        try:
            tok = _tokenizer(self.tokenizer)
        except Exception as err:  # noqa: BLE001 - any loading failure is the same story for the user
            raise GraderFailure("runtime_error", f"cannot load tokenizer '{self.tokenizer}': {err}") from None
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def _grade_one(self, sample, item):
        n = self.measure(self.input.render(sample, item))
        over = (self.min - n) if self.min is not None and n < self.min else (
            n - self.max if self.max is not None and n > self.max else 0)
        bounds = f"[{'' if self.min is None else f'{self.min:g}'}, {'' if self.max is None else f'{self.max:g}'}]"
        if over <= 0:
            return GradeResult(1.0, log=f"{n} {self.unit} within {bounds}")
        if self.penalty == "hard":
            score = 0.0
        else:
            tol = self.tolerance or max(1.0, (self.max if n > (self.max or 0) else self.min) or 1.0)
            score = max(0.0, 1.0 - over / tol)
        return GradeResult(score, log=f"{n} {self.unit} outside {bounds} by {over:g}")


class SoftOverlong(Grader):
    """DAPO's soft overlong punishment (arXiv 2503.14476; TRL's `trl.rewards.get_soft_overlong_punishment`):
    0 up to `max_tokens - cache_tokens`, then linear down to -1 at `max_tokens`, -1 beyond. A penalty, not a
    goal: add it next to the graders that score the answer, so length only costs reward near the limit.

    Tokens are counted with `tokenizer` (a model folder or Hub id, as for `length`; give the run's model so the
    count matches `rft.max_completion_length`), or, without one, as whitespace-separated words."""

    type = "overlong"
    FIELDS = {"input", "max_tokens", "cache_tokens", "tokenizer"}
    score_range = (-1.0, 0.0)  # a penalty: the dry run's range and pass share count it as such

    def __init__(self, name, input: Template, max_tokens: int, cache_tokens: int, tokenizer=None, weight=1.0):
        super().__init__(name, weight)
        self.input, self.max_tokens, self.cache_tokens, self.tokenizer = input, max_tokens, cache_tokens, tokenizer

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        hi = r.number("max_tokens", None, lo=1)
        if hi is None:
            raise r.error("max_tokens", "is missing: give the longest completion, in tokens (e.g. the run's "
                          "`rft.max_completion_length`).")
        cache = r.number("cache_tokens", None, lo=1)
        if cache is None or cache > hi:
            raise r.error("cache_tokens", f"must be a number from 1 to max_tokens ({hi:g}): the last tokens before "
                          "the limit over which the penalty grows to -1 (DAPO used 4096 of 20480).")
        tokenizer = r.text("tokenizer", None)
        if tokenizer and base_dir and os.path.exists(os.path.join(base_dir, tokenizer)):
            tokenizer = os.path.join(base_dir, tokenizer)
        return cls(r.name, r.template("input", OUTPUT), int(hi), int(cache), tokenizer, r.number("weight", 1.0))

    def measure(self, text: str) -> int:
        if not self.tokenizer:
            return len(text.split())
        try:
            tok = _tokenizer(self.tokenizer)  # shared with `length`: one load per tokenizer
        except Exception as err:  # noqa: BLE001 - any loading failure is the same story for the user
            raise GraderFailure("runtime_error", f"cannot load tokenizer '{self.tokenizer}': {err}") from None
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def score(self, n: int) -> float:
        start = self.max_tokens - self.cache_tokens
        if n <= start:
            return 0.0
        return (start - n) / self.cache_tokens if n <= self.max_tokens else -1.0

    def _grade_one(self, sample, item):
        n = self.measure(self.input.render(sample, item))
        unit = "tokens" if self.tokenizer else "words"
        return GradeResult(self.score(n), log=f"{n} {unit}; penalty from {self.max_tokens - self.cache_tokens} "
                                              f"to {self.max_tokens}")
