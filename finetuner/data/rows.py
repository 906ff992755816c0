"""Decide what a table's rows are (chat messages, prompt + completion, plain text, prompts) and check them.

`detect_format` honours `DataConfig.format` and the column overrides (`data.prompt_column`, ...).
`normalise` checks every row and returns `Records`: rows under TRL's canonical names (`messages`, `prompt`,
`completion`, `text`), still independent of any tokenizer; `to_trl.py` turns them into datasets. Every
problem names the row's line; all of them are raised together as `DataProblems`.

Stages: "sft" takes `messages`, `prompt_completion` or `text`; "rft" takes `prompt` (a string or chat
messages) or `messages` whose final assistant turn, if any, becomes the row's `completion` for graders.
For RFT every other column passes through to graders as `{{item.<column>}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from finetuner.config import DataConfig
from finetuner.data.notes import Note
from finetuner.data.read import DataProblems, RawTable, _json_type
from graders.errors import DataError

ROLES = ("system", "developer", "user", "assistant", "tool")
# Other tools' role names, to say what to write instead.
ROLE_HINTS = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
              "chatgpt": "assistant", "prompter": "user", "instruction": "user"}
STAGE_FORMATS = {"sft": ("messages", "prompt_completion", "text"), "rft": ("prompt", "messages")}
# Column names people use for the same things, to suggest a config override when detection finds nothing.
LIKELY = {"messages_column": ("conversations", "conversation", "chat", "dialog", "dialogue", "turns"),
          "prompt_column": ("question", "instruction", "input", "query", "problem", "user", "source"),
          "completion_column": ("answer", "output", "response", "solution", "target", "assistant", "chosen"),
          "text_column": ("content", "document", "body", "sentence")}

MESSAGES_ADVICE = ('Each row needs `messages`: a list such as [{"role": "user", "content": "2+2?"}, '
                   '{"role": "assistant", "content": "4"}] (roles: system, user, assistant).')


@dataclass
class Records:
    """Checked rows under canonical names, one per input row, in input order."""

    format: str  # messages | prompt_completion | text | prompt
    rows: list[dict]
    notes: list[Note] = field(default_factory=list)  # rendered by data.notes.render


def detect_format(columns: list[str], stage: str, dcfg: DataConfig, name: str = "the data") -> str:
    """The format to read `columns` as for `stage`; a DataError that says which field to set when unsure."""
    cols = set(columns)
    m, p, c, t = dcfg.messages_column, dcfg.prompt_column, dcfg.completion_column, dcfg.text_column
    fmt = dcfg.format
    if fmt == "auto":
        if m in cols:
            fmt = "messages"
        elif p in cols and (c in cols or stage == "rft"):
            fmt = "prompt_completion" if stage == "sft" else "prompt"
        elif p in cols:
            raise DataError(f"{name} has a `{p}` column but no `{c}` column, so SFT has no answers to learn. Add "
                            f"a `{c}` column, set `data.completion_column` to the column holding the answers "
                            f"(columns found: {_listing(columns)}), or choose method `rft`.")
        elif t in cols and stage == "sft":
            fmt = "text"
        elif t in cols:
            raise DataError(f"{name} has only plain `{t}`, but RFT needs prompts to answer. Give a `{p}` column "
                            f"(or `{m}`), or set `data.prompt_column` to the column holding the prompts.")
        else:
            raise DataError(_unsure(name, columns, stage))
    if fmt == "prompt_completion" and stage == "rft":
        fmt = "prompt"  # the completion is just another column for graders
    if fmt not in STAGE_FORMATS[stage]:
        why = {"text": "plain text has no prompts to answer", "prompt": "prompts alone have no answers to learn"}
        raise DataError(f"`data.format: {dcfg.format}` cannot be used for the {stage.upper()} stage: "
                        f"{why.get(fmt, 'unsupported')}. Use one of {', '.join(STAGE_FORMATS[stage])}, or `auto`.")
    needed = {"messages": [("messages_column", m)], "text": [("text_column", t)], "prompt": [("prompt_column", p)],
              "prompt_completion": [("prompt_column", p), ("completion_column", c)]}[fmt]
    for field_name, col in needed:
        if col not in cols:
            raise DataError(f"{name} has no `{col}` column, which format `{fmt}` needs. Columns found: "
                            f"{_listing(columns)}. Set `data.{field_name}` to the column to use.")
    return fmt


def _listing(columns: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns) if columns else "none"


def _unsure(name: str, columns: list[str], stage: str) -> str:
    lowered = {c.lower(): c for c in columns}
    hints = [f"`data.{fld}: {lowered[alias]}`" for fld, aliases in LIKELY.items() for alias in aliases
             if alias in lowered and not (stage == "rft" and fld in ("completion_column", "text_column"))]
    hint = f" Perhaps set {' and '.join(hints[:2])}." if hints else ""
    need = ("`messages` (chat), `prompt` + `completion`, or `text`" if stage == "sft"
            else "`prompt` (or chat `messages`)")
    return (f"Cannot tell what {name} holds: no known column. Columns found: {_listing(columns)}. {stage.upper()} "
            f"needs {need}. Rename a column, or set `data.messages_column`, `data.prompt_column` / "
            f"`data.completion_column` or `data.text_column` to the column to use.{hint}")


# ---------------------------------------------------------------- per-row checks


def normalise(table: RawTable, fmt: str, stage: str, dcfg: DataConfig) -> Records:
    """Check every row of `table` as `fmt`; raise DataProblems listing the bad rows."""
    problems: list[str] = []
    out: list[dict] = []
    m, p, c, t = dcfg.messages_column, dcfg.prompt_column, dcfg.completion_column, dcfg.text_column
    ignored: dict[str, int] = {}  # message keys other than role/content -> rows that have them
    moved = kept = 0  # RFT rows whose final assistant turn left the prompt; rows that had a `completion` already
    for i, row in enumerate(table.rows):
        where = table.where(i)
        errs: list[str] = []
        if fmt == "messages":
            extra: set = set()
            msgs = _messages(row.get(m), m, errs, need_assistant=stage == "sft", ignored=extra)
            for key in extra:
                ignored[key] = ignored.get(key, 0) + 1
            if stage == "sft":
                rec = {"messages": msgs}
            else:
                rec = _passthrough(row, skip=(m,))
                last_user = max((k for k, x in enumerate(msgs or []) if x["role"] == "user"), default=-1)
                if msgs and last_user >= 0 and any(x.get("tool_calls") or x["role"] == "tool"
                                                   for x in msgs[last_user + 1:]):
                    # A tool-use demonstration: everything after the last question is the answer to produce
                    # (the calls, the tools' answers, the reply); the prompt is the conversation up to it.
                    msgs = msgs[:last_user + 1] + ([msgs[-1]] if msgs[-1]["role"] == "assistant" else [])
                if msgs and msgs[-1]["role"] == "assistant":
                    if "completion" in rec:
                        kept += 1  # the row's own `completion` column wins; the turn is still not prompted
                    else:
                        rec["completion"] = msgs[-1]["content"]
                    msgs = msgs[:-1]
                    moved += 1
                    if not msgs:
                        errs.append(f"`{m}` holds only an assistant turn; after taking it as the answer no prompt "
                                    f"is left")
                rec["prompt"] = msgs
        elif fmt == "prompt_completion":
            rec = {"prompt": _prompt(row.get(p), p, errs), "completion": _completion(row.get(c), c, errs)}
        elif fmt == "text":
            rec = {"text": _text(row.get(t), t, errs)}
        else:  # prompt (RFT)
            # A prompt column under another name stays too: graders may quote it as {{item.<name>}}.
            rec = _passthrough(row, skip=("prompt",))
            rec["prompt"] = _prompt(row.get(p), p, errs)
        problems.extend(f"{where}: {e}" for e in errs)
        out.append(rec)
    if problems:
        raise DataProblems(table.name, problems, _advice(fmt, stage, dcfg))
    notes = []
    if moved:
        notes.append(Note("final_turn_moved", count=moved, of=len(out)))
    if ignored:
        notes.append(Note("message_keys_ignored", names=ignored))
    if kept:
        notes.append(Note("completion_kept", count=kept))
    return Records(fmt, out, notes)


def _advice(fmt: str, stage: str, dcfg: DataConfig) -> str:
    if fmt == "messages":
        extra = " SFT needs at least one assistant turn per row." if stage == "sft" else ""
        return MESSAGES_ADVICE + extra + " Fix those rows and load the data again."
    if fmt == "prompt_completion":
        return (f"Each row needs `{dcfg.prompt_column}` (text, or a list of chat messages) and "
                f"`{dcfg.completion_column}` (text). Fix those rows and load the data again.")
    if fmt == "text":
        return f"Each row needs non-empty text in `{dcfg.text_column}`. Fix those rows and load the data again."
    return (f"Each row needs `{dcfg.prompt_column}`: text, or a list of chat messages. Fix those rows and load "
            f"the data again.")


def _passthrough(row: dict, skip: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in skip}


def _missing(value) -> bool:
    return value is None


def _maybe_json_list(value):
    """CSV cells (and some Hub datasets) carry chat messages as JSON text; read them as the list they are."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, list) and all(isinstance(x, dict) and "role" in x for x in parsed):
            return parsed
    return value


def _tool_calls(value, at: str, errs: list[str]) -> list[dict] | None:
    """An assistant turn's `tool_calls` in the shape chat templates read: [{"type": "function", "function":
    {"name", "arguments": {...}}}]; OpenAI's JSON-text arguments and a bare {"name", "arguments"} are accepted."""
    if not isinstance(value, list):
        errs.append(f"{at} `tool_calls` is a {_json_type(value)}; it must be a list of calls")
        return None
    calls = []
    for k, call in enumerate(value):
        function = call.get("function", call) if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments", {}) if isinstance(function, dict) else None
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            errs.append(f"{at} `tool_calls[{k}]` must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                        f"\"arguments\": {{...}}}}}}")
            return None
        calls.append({"type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def _messages(value, col: str, errs: list[str], need_assistant: bool, ignored: set | None = None
              ) -> list[dict] | None:
    """Chat turns as [{role, content}]; other keys of a turn go into `ignored`, for a note."""
    label = f"`{col}`"
    if _missing(value):
        errs.append(f"no {label}")
        return None
    if isinstance(value, str):
        parsed = _maybe_json_list(value)
        if parsed is value:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                errs.append(f"{label} is text, not a list of {{role, content}} messages")
                return None
        value = parsed
    if not isinstance(value, list):
        errs.append(f"{label} is a {_json_type(value)}; it must be a list of {{role, content}} messages")
        return None
    if not value:
        errs.append(f"{label} is an empty list")
        return None
    out = []
    bad = False
    for j, msg in enumerate(value):
        at = f"{label}[{j}]"
        if not isinstance(msg, dict):
            errs.append(f"{at} is a {_json_type(msg)}; each message must be an object "
                        f"{{\"role\": ..., \"content\": ...}}")
            bad = True
            continue
        role, content = msg.get("role"), msg.get("content")
        if role is None and ("from" in msg or "value" in msg):
            errs.append(f"{at} uses ShareGPT keys `from`/`value`; write `role`/`content` (human -> user, gpt -> "
                        f"assistant)")
            bad = True
            continue
        if not isinstance(role, str) or role not in ROLES:
            known = isinstance(role, str) and role.lower() in ROLE_HINTS
            hint = f" (write `{ROLE_HINTS[role.lower()]}`)" if known else ""
            shown = f"`{role}`" if isinstance(role, str) else "missing" if role is None else repr(role)
            errs.append(f"{at} has role {shown}; use one of {', '.join(ROLES[:4])}{hint}")
            bad = True
            continue
        calls = None
        if role == "assistant" and msg.get("tool_calls"):  # a tool-use demonstration (Agent RFT's SFT data)
            calls = _tool_calls(msg["tool_calls"], at, errs)
            if calls is None:
                bad = True
                continue
        if content is None and not calls:
            errs.append(f"{at} ({role}) has no `content`")
            bad = True
        elif content is not None and not isinstance(content, str):
            errs.append(f"{at} ({role}) content is a {_json_type(content)}; it must be text")
            bad = True
        elif not (content or "").strip() and not calls:
            errs.append(f"{at} ({role}) has empty content")
            bad = True
        else:
            turn = {"role": role, "content": content or ""}
            if calls:
                turn["tool_calls"] = calls
            if role == "tool" and isinstance(msg.get("name"), str):
                turn["name"] = msg["name"]
            out.append(turn)
            if ignored is not None and len(msg) > len(turn):
                ignored.update(k for k in msg if k not in turn)
    if bad:
        return None
    if need_assistant and not any(x["role"] == "assistant" for x in out):
        errs.append(f"{label} has no assistant turn, so there is nothing to learn; add the answer as "
                    f"{{\"role\": \"assistant\", \"content\": ...}}")
        return None
    return out


def _prompt(value, col: str, errs: list[str]):
    value = _maybe_json_list(value)
    if isinstance(value, list):
        return _messages(value, col, errs, need_assistant=False)
    return _text(value, col, errs, allow="text or a list of chat messages")


def _completion(value, col: str, errs: list[str]):
    value = _maybe_json_list(value)
    if isinstance(value, list):
        return _messages(value, col, errs, need_assistant=True)
    return _text(value, col, errs)


def _text(value, col: str, errs: list[str], allow: str = "text"):
    if _missing(value):
        errs.append(f"no `{col}`")
        return None
    if not isinstance(value, str):
        try:
            shown = json.dumps(value, ensure_ascii=False)[:40]
        except TypeError:  # not JSON (a date from Parquet, ...)
            shown = repr(value)[:40]
        errs.append(f"`{col}` is a {_json_type(value)} ({shown}); it must be {allow}")
        return None
    if not value.strip():
        errs.append(f"`{col}` is empty")
        return None
    return value
