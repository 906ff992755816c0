"""LLM judges: `score_model` and `label_model`, with OpenAI's fields plus `base_url`, `api_key_env`, `provider`.

The judge renders its `input` messages per row, asks an OpenAI-compatible server (any: vLLM, llama.cpp,
Ollama, OpenAI) through `openai.AsyncOpenAI`, and parses `{"result": ..., "steps": [...]}` or a bare
number/label. Requests run concurrently (`concurrency`), retry with exponential backoff on 429/5xx,
timeouts and dropped connections, and are cached by rendered prompt (GRPO groups repeat completions).
`provider: local` (or `base_url: local`) runs a Hugging Face model in-process instead (judge_local.py).
The API key is never in the config: `api_key_env` names the environment variable that holds it.
`structured` (auto | on | off) constrains the answer: over HTTP a JSON-schema `response_format` (servers
that ignore it answer in prose, read leniently by judge_parse); for `provider: local` the model's own
likelihood of each allowed answer (each label, each whole score in range), so nothing is parsed at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from collections import OrderedDict

from graders.secrets import is_variable_name
from graders import aio
from graders.base import Grader, GradeResult, GraderFailure, make_sample
from graders.judge_http import HttpBackend, JudgeCallError
from graders.judge_parse import JudgeParseError, parse_label, parse_score
from graders.spec import SpecReader
from graders.templating import Template

ROLES = ("system", "developer", "user", "assistant")
TEXT_PARTS = ("input_text", "text", "output_text")
SAMPLING_KEYS = {"temperature", "top_p", "seed", "max_tokens", "max_completion_tokens", "max_completions_tokens",
                 "reasoning_effort", "stop", "response_format", "presence_penalty", "frequency_penalty"}


def parse_messages(r: SpecReader, raw) -> list[tuple[str, Template]]:
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise r.error("input", "must be a list of messages, each with a role and a content.")
    out = []
    for k, msg in enumerate(raw):
        if not isinstance(msg, dict) or "content" not in msg:
            raise r.error("input", f"message {k + 1} must have 'role' and 'content'.")
        role = msg.get("role", "user")
        if role not in ROLES:
            raise r.error("input", f"message {k + 1} has role '{role}'; use one of {', '.join(ROLES)}.")
        content = msg["content"]
        if isinstance(content, dict):
            content = [content]
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in TEXT_PARTS:
                    texts.append(part.get("text", ""))
                elif isinstance(part, str):
                    texts.append(part)
                else:
                    raise r.error("input", f"message {k + 1} has a '{kind}' part; only text inputs run here "
                                  "(image and audio inputs are not supported by local judges).")
            content = "".join(texts)
        if not isinstance(content, str):
            raise r.error("input", f"message {k + 1}'s content must be text.")
        msg_reader = SpecReader({"name": r.name, "type": r.type, "input": content}, {"input"})
        out.append(("system" if role == "developer" else role, msg_reader.template("input")))
    return out


def sampling_from_spec(r: SpecReader) -> tuple[dict, dict]:
    """(known chat-completion parameters, anything else for the server's extra_body)."""
    raw = r.mapping("sampling_params", {})
    params, extra = {}, {}
    for key, value in raw.items():
        if key == "max_completions_tokens":  # OpenAI's grader field has this spelling
            params["max_completion_tokens"] = value
        elif key in SAMPLING_KEYS:
            params[key] = value
        else:
            extra[key] = value
    return params, extra


def key_variable(r: SpecReader) -> str | None:
    """`api_key_env`: the name of an environment variable. A key pasted there is refused without being echoed,
    since the spec (and so this message) ends up in run files and logs."""
    name = r.text("api_key_env", None)
    if name is not None and not is_variable_name(name):
        raise r.error("api_key_env", "must be the NAME of an environment variable that holds the key (e.g. "
                      "JUDGE_API_KEY), not the key itself.", " Set the variable before starting Finetuner; keys "
                      "are never written to run files.")
    return name


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.totals = {"calls": 0, "retries": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._reset()

    def _reset(self):
        self.window = dict.fromkeys(self.totals, 0)
        self.latency = 0.0

    def add(self, **values):
        with self.lock:
            for key, value in values.items():
                if key == "latency":
                    self.latency += value
                else:
                    self.totals[key] += value
                    self.window[key] += value

    def drain(self) -> dict:
        with self.lock:
            out = {f"judge_{k}": v for k, v in self.window.items()}
            if self.window["calls"]:
                out["judge_latency_s"] = self.latency / self.window["calls"]
            self._reset()
        return out


class JudgeGrader(Grader):
    """Shared machinery; subclasses say how to instruct the judge and read its answer."""

    is_async = True
    FIELDS = {"input", "model", "sampling_params", "base_url", "api_key_env", "provider", "timeout_s",
              "max_retries", "retry_backoff_s", "concurrency", "cache", "output_instructions", "rubric",
              "structured"}
    IGNORED = {"pass_threshold"}

    def __init__(self, name: str, messages, model: str, *, params=None, extra=None, base_url=None,
                 api_key_env=None, provider="openai", timeout_s=60.0, max_retries=3, retry_backoff_s=0.5,
                 concurrency=8, cache=True, output_instructions=True, structured="auto", weight=1.0):
        super().__init__(name, weight)
        self.structured = structured
        # local + structured: rank the allowed answers by likelihood, when they can be listed (see candidates)
        self.likelihood = provider == "local" and structured != "off" and self.candidates() is not None
        self.messages, self.model = messages, model
        self.params, self.extra = params or {}, extra or {}
        self.cache_enabled, self.output_instructions = cache, output_instructions
        self.stats = _Stats()
        self._cache: OrderedDict[str, GradeResult] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}
        if provider == "local":
            from graders.judge_local import LocalBackend
            self.backend = LocalBackend(model)
        else:
            self.backend = HttpBackend(base_url, api_key_env, model, timeout_s, max_retries, retry_backoff_s,
                                       concurrency, structured=structured,
                                       response_format=None if structured == "off" else self.response_format())

    @classmethod
    def _common(cls, r: SpecReader) -> dict:
        raw_input = r.get("input", None)
        if raw_input is None and r.has("rubric"):
            from graders.rubrics import RUBRICS
            key = r.choice("rubric", list(RUBRICS))
            raw_input = RUBRICS[key]["input"]
        if raw_input is None:
            raise r.error("input", "is missing: give the judge's messages, or pick a rubric "
                          "(rubric: correctness | instruction_following | tone_style | faithfulness).")
        base_url = r.text("base_url", None)
        provider = r.choice("provider", ("openai", "local"), "local" if base_url == "local" else "openai")
        params, extra = sampling_from_spec(r)
        return dict(
            messages=parse_messages(r, raw_input), model=r.text("model"), params=params, extra=extra,
            base_url=None if base_url == "local" else base_url, api_key_env=key_variable(r),
            provider=provider, timeout_s=r.number("timeout_s", 60.0, lo=0.1),
            max_retries=r.number("max_retries", 3, lo=0, hi=20, integer=True),
            retry_backoff_s=r.number("retry_backoff_s", 0.5, lo=0),
            concurrency=r.number("concurrency", 8, lo=1, hi=1024, integer=True),
            cache=r.boolean("cache", True), output_instructions=r.boolean("output_instructions", True),
            structured=r.choice("structured", ("auto", "on", "off"), "auto"), weight=r.number("weight", 1.0))

    # -- subclasses
    def instructions(self) -> str:
        raise NotImplementedError

    def interpret(self, text: str) -> GradeResult:
        raise NotImplementedError

    def schema(self) -> dict:
        """The JSON schema of the answer's `result`."""
        raise NotImplementedError

    def candidates(self) -> list[str] | None:
        """Every allowed answer, for the local likelihood judge; None when they cannot be listed."""
        raise NotImplementedError

    def interpret_choice(self, probs: dict[str, float]) -> GradeResult:
        raise NotImplementedError

    def response_format(self) -> dict:
        """OpenAI's structured-output request for {"steps": [...], "result": ...}; strict mode wants every
        property required and no others."""
        step = {"type": "object", "properties": {"description": {"type": "string"},
                                                 "conclusion": {"type": "string"}},
                "required": ["description", "conclusion"], "additionalProperties": False}
        schema = {"type": "object", "properties": {"steps": {"type": "array", "items": step},
                                                   "result": self.schema()},
                  "required": ["steps", "result"], "additionalProperties": False}
        return {"type": "json_schema", "json_schema": {"name": f"{self.type}_grade", "strict": True,
                                                       "schema": schema}}

    # -- rendering
    def render(self, sample: dict, item: dict) -> list[dict]:
        msgs = [{"role": role, "content": tmpl.render(sample, item)} for role, tmpl in self.messages]
        if self.output_instructions:
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": msgs[0]["content"] + "\n\n" + self.instructions()}
            else:
                msgs.insert(0, {"role": "system", "content": self.instructions()})
        return msgs

    def _key(self, messages: list[dict]) -> str:
        blob = json.dumps([self.backend.identity(), self.likelihood, messages, self.params, self.extra],
                          sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    # -- grading
    def _prepare(self, samples, items):
        prepared = []
        for s, item in zip(samples, items, strict=True):
            try:
                prepared.append(self.render(make_sample(s), item if isinstance(item, dict) else {}))
            except GraderFailure as failure:
                prepared.append(failure.result())
        return prepared

    def grade_batch(self, samples, items):
        return aio.run(self._grade_prepared(self._prepare(samples, items)))

    async def agrade_batch(self, samples, items):
        return await aio.run_async(self._grade_prepared(self._prepare(samples, items)))

    async def _grade_prepared(self, prepared: list) -> list[GradeResult]:
        keys = {}
        for entry in prepared:
            if isinstance(entry, list):
                keys.setdefault(self._key(entry), entry)
        answers: dict[str, GradeResult] = {}
        todo, waiting = {}, {}
        for key, msgs in keys.items():
            if self.cache_enabled and key in self._cache:
                self._cache.move_to_end(key)
                answers[key] = self._cache[key]
                self.stats.add(cache_hits=1)
            elif key in self._inflight:
                waiting[key] = self._inflight[key]
                self.stats.add(cache_hits=1)
            else:
                todo[key] = msgs
                self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            if todo:
                if self.likelihood:
                    outs = await self.backend.choose_many(list(todo.values()), self.candidates(), self.stats)
                else:
                    outs = await self.backend.complete_many(list(todo.values()), self.params, self.extra,
                                                            self.stats)
                for key, out in zip(todo, outs, strict=True):
                    result = self._to_result(out)
                    answers[key] = result
                    if result.ok and self.cache_enabled:
                        self._cache[key] = result
                        if len(self._cache) > 10000:
                            self._cache.popitem(last=False)
        finally:
            for key in todo:
                future = self._inflight.pop(key)
                if not future.done():
                    future.set_result(answers.get(key) or GradeResult.fail("judge_server_error", "cancelled"))
        for key, future in waiting.items():
            answers[key] = await future
        return [answers[self._key(e)] if isinstance(e, list) else e for e in prepared]

    def _to_result(self, out) -> GradeResult:
        if isinstance(out, JudgeCallError):
            return GradeResult.fail(out.type, out.message)
        if isinstance(out, dict):  # the local likelihood judge: answer -> probability
            return self.interpret_choice(out)
        try:
            return self.interpret(out)
        except JudgeParseError as err:
            return GradeResult.fail("judge_parse_error", str(err), out[:2000] if isinstance(out, str) else "")

    def drain_stats(self) -> dict:
        return self.stats.drain()

    def close(self) -> None:
        self.backend.close()


class ScoreModelGrader(JudgeGrader):
    type = "score_model"
    FIELDS = JudgeGrader.FIELDS | {"range"}

    MAX_CANDIDATES = 101  # a 0..100 scale still ranks in a few batches; finer scales generate and parse

    def __init__(self, name, messages, model, score_range=(0.0, 1.0), **kwargs):
        self.score_range = tuple(score_range)  # before the base class, which asks candidates()
        super().__init__(name, messages, model, **kwargs)

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        rng = r.get("range", [0, 1])
        if (not isinstance(rng, (list, tuple)) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
                or rng[0] >= rng[1]):
            raise r.error("range", f"is {rng!r}; give two numbers, low then high, e.g. [0, 1].")
        grader = cls(r.name, score_range=(float(rng[0]), float(rng[1])), **cls._common(r))
        if grader.structured == "on" and grader.backend.identity()[0] == "local" and not grader.likelihood:
            raise r.error("structured", f"is on, but range {rng!r} does not hold 1 to {cls.MAX_CANDIDATES} whole "
                          "numbers for the local judge to rank.", " Use a range such as [0, 10], or "
                          "structured: auto to let the model write its score.")
        return grader

    def candidates(self):
        lo, hi = self.score_range
        values = range(math.ceil(lo), math.floor(hi) + 1)
        return [str(v) for v in values] if 1 <= len(values) <= self.MAX_CANDIDATES else None

    def schema(self):
        lo, hi = self.score_range
        return {"type": "number", "minimum": lo, "maximum": hi}

    def interpret_choice(self, probs):
        expected = sum(float(value) * p for value, p in probs.items())
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        return GradeResult(expected, None, f"judge's expected score {expected:.3g} (likelihood of each score; "
                           "most likely " + ", ".join(f"{v}: {p:.2f}" for v, p in top) + ")")

    def instructions(self) -> str:
        lo, hi = self.score_range
        if self.likelihood:
            return f"Reply with only a whole number from {math.ceil(lo)} to {math.floor(hi)}."
        return ('Reply with JSON only, in this form: {"steps": [{"description": "...", "conclusion": "..."}], '
                f'"result": <a number from {lo:g} to {hi:g}>}}')

    def interpret(self, text: str) -> GradeResult:
        score, note = parse_score(text, *self.score_range)
        return GradeResult(score, None, note)


class LabelModelGrader(JudgeGrader):
    type = "label_model"
    FIELDS = JudgeGrader.FIELDS | {"labels", "passing_labels"}

    def __init__(self, name, messages, model, labels, passing_labels, **kwargs):
        self.labels, self.passing_labels = labels, passing_labels  # before the base class asks candidates()
        super().__init__(name, messages, model, **kwargs)

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        labels = r.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise r.error("labels", "must be a list of label names, e.g. [positive, neutral, negative].")
        passing = r.get("passing_labels")
        if not isinstance(passing, list) or not passing:
            raise r.error("passing_labels", "must be a non-empty list of labels that score 1.")
        for label in passing:
            if label not in labels:
                from graders.spec import did_you_mean
                raise r.error("passing_labels", f"'{label}' is not in labels.", did_you_mean(label, labels))
        return cls(r.name, labels=labels, passing_labels=passing, **cls._common(r))

    def candidates(self):
        return list(self.labels)

    def schema(self):
        return {"type": "string", "enum": list(self.labels)}

    def interpret_choice(self, probs):
        label = max(probs, key=probs.get)
        return GradeResult(1.0 if label in self.passing_labels else 0.0, None,
                           f"judge chose {label!r} by likelihood (" +
                           ", ".join(f"{k}: {p:.2f}" for k, p in probs.items()) + ")")

    def instructions(self) -> str:
        if self.likelihood:
            return f"Reply with only one of these labels: {', '.join(self.labels)}."
        return ('Reply with JSON only, in this form: {"steps": [{"description": "...", "conclusion": "..."}], '
                f'"result": "<one of: {", ".join(self.labels)}>"}}')

    def interpret(self, text: str) -> GradeResult:
        label, note = parse_label(text, self.labels)
        return GradeResult(1.0 if label in self.passing_labels else 0.0, None, note)
