"""The HTTP side of LLM judges: chat completions through `openai.AsyncOpenAI`, with our own retries.

Used by judge.py; runs only on the judges' event loop (graders/aio.py). The client is built on first use
with `max_retries=0`: retries (429, 5xx, 408, timeouts, dropped connections) are ours, with exponential
backoff or the server's Retry-After, so that they are counted and reported. Failures come back as
`JudgeCallError` values rather than exceptions, so one bad row cannot sink a batch. A judge bound for OpenAI
(no base_url, no OPENAI_BASE_URL) without a key fails every call at once, before any request, naming the variable.

Structured output: with `structured: auto` (the default) or `on`, every request carries a JSON-schema
`response_format` (unless sampling_params sets its own). OpenAI, vLLM, llama.cpp's server and Ollama
honour it; servers that ignore it (`transformers serve`) answer in prose, which judge_parse reads leniently.
A server that refuses the field (HTTP 400/422 naming response_format or schema) is, under `auto`, asked
again at once without it, and not sent it again once that succeeds; under `on` the refusal is the row's error. We cannot tell servers apart by
address (vLLM and `transformers serve` both default to :8000), so we ask and learn rather than guess.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from graders import aio


class JudgeCallError(Exception):
    def __init__(self, type_: str, message: str):
        super().__init__(message)
        self.type, self.message = type_, message


class HttpBackend:
    """Chat completions over HTTP with `openai.AsyncOpenAI`; only ever used on the judges' loop."""

    def __init__(self, base_url, api_key_env, model, timeout_s, max_retries, backoff_s, concurrency,
                 structured="auto", response_format=None):
        self.base_url, self.api_key_env, self.model = base_url, api_key_env, model
        self.structured, self.response_format = structured, response_format
        self.schema_refused = False  # this server said no to response_format (auto mode stops sending it)
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.concurrency = concurrency
        self._client = None
        self._sem: asyncio.Semaphore | None = None

    def identity(self):
        return ["http", self.base_url, self.model]

    def _ensure(self):
        if self._client is None:
            import openai

            key = os.environ.get(self.api_key_env or "OPENAI_API_KEY")
            if key is None and self.api_key_env:
                raise JudgeCallError("judge_server_error", f"the environment variable {self.api_key_env} (named "
                                     "in api_key_env) is not set; set it to the judge server's API key")
            if not key and not self.api_key_env and not (self.base_url or os.environ.get("OPENAI_BASE_URL")):
                # This judge talks to OpenAI itself, which refuses every request without a key: say so now
                # rather than send a placeholder key and retry (a local server, with base_url, needs none).
                raise JudgeCallError("judge_server_error", "no API key for OpenAI: this judge has no base_url, so "
                                     "it calls api.openai.com, and the environment variable OPENAI_API_KEY is "
                                     "not set. Set OPENAI_API_KEY before starting Finetuner, name the variable "
                                     "that holds the key in api_key_env, or give base_url for your own server "
                                     "(vLLM, Ollama, llama.cpp)")
            # max_retries=0: we retry ourselves, so backoff and counts are ours to report
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key or "not-needed",
                                              timeout=self.timeout_s, max_retries=0)
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._client

    async def complete_many(self, conversations, params, extra, stats) -> list:
        return await asyncio.gather(*(self.complete(m, params, extra, stats) for m in conversations))

    async def complete(self, messages, params, extra, stats):
        """The reply text, or a JudgeCallError (returned, not raised, so one bad row can't sink a batch)."""
        out = await self._complete(messages, params, extra, stats)
        if isinstance(out, JudgeCallError):
            return JudgeCallError(out.type, self._redact(out.message))
        return out

    def _redact(self, text: str) -> str:
        """A server may echo the key in its error text, which goes to samples.jsonl and the log: the key, and
        any 8+ character start of it that a cut-short message ends with, become ***."""
        key = os.environ.get(self.api_key_env or "OPENAI_API_KEY") or ""
        if len(key) < 4:
            return text
        text = text.replace(key, "***")
        for n in range(len(key) - 1, 7, -1):
            at = text.find(key[:n])
            if at >= 0:
                return text[:at] + "***" + text[at + n:]
        return text

    async def _complete(self, messages, params, extra, stats, use_schema=True):
        import openai

        try:
            client = self._ensure()
        except JudgeCallError as err:
            return err
        last = ""
        for attempt in range(self.max_retries + 1):
            delay = None
            send = dict(params)
            schema = (use_schema and self.response_format is not None and "response_format" not in params
                      and not self.schema_refused)
            if schema:
                send["response_format"] = self.response_format
            try:
                async with self._sem:
                    started = time.monotonic()
                    resp = await client.chat.completions.create(
                        model=self.model, messages=messages, extra_body=extra or None, **send)
                    stats.add(calls=1, latency=time.monotonic() - started)
                return self._text(resp, stats)
            except openai.APIStatusError as err:
                status = err.status_code
                last = f"HTTP {status}: {_short(self._redact(err.message))}"
                if (schema and status in (400, 422) and self.structured == "auto"
                        and any(w in str(err.message).lower() for w in ("response_format", "schema"))):
                    # the server may not know response_format: ask again without it (not a retry)
                    retry = await self._complete(messages, params, extra, stats, use_schema=False)
                    if not isinstance(retry, JudgeCallError):  # it was the field: stop sending it
                        self.schema_refused = True
                    return retry
                if status != 429 and status < 500 and status != 408:
                    hint = {401: " (check the API key in the variable named by api_key_env)",
                            404: " (check base_url and model)"}.get(status, "")
                    return JudgeCallError("judge_server_error", last + hint)
                delay = _retry_after(err.response)
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                last = ("timed out" if isinstance(err, openai.APITimeoutError)
                        else f"connection failed: {_short(self._redact(str(err)))}")
            except (openai.APIError, ValueError) as err:  # e.g. a 200 whose body is not a chat completion
                return JudgeCallError("judge_parse_error", f"the judge server sent an unreadable reply: "
                                      f"{type(err).__name__}: {_short(self._redact(str(err)))}")
            except Exception as err:  # noqa: BLE001 - whatever the client raises, the row gets a typed error
                return JudgeCallError("judge_server_error",
                                      f"{type(err).__name__}: {_short(self._redact(str(err)))}")
            if attempt < self.max_retries:
                stats.add(retries=1)
                backoff = self.backoff_s * (2 ** attempt) * random.uniform(0.5, 1.5)
                await asyncio.sleep(min(30.0, delay if delay is not None else backoff))
        return JudgeCallError("judge_server_error", f"gave up after {self.max_retries + 1} tries: {last}")

    @staticmethod
    def _text(resp, stats):
        choices = getattr(resp, "choices", None)
        if not choices:
            return JudgeCallError("judge_parse_error", f"the judge server sent no choices: {_short(str(resp))}")
        usage = getattr(resp, "usage", None)
        if usage is not None:
            stats.add(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
        message = choices[0].message
        if getattr(message, "refusal", None):
            return JudgeCallError("judge_parse_error", f"the judge refused: {_short(message.refusal)}")
        return message.content or ""

    def close(self):
        if self._client is not None:
            client, self._client = self._client, None
            try:
                aio.run(client.close(), timeout=5)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _retry_after(response) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None
    return None


def _short(text: str, n: int = 200) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."
