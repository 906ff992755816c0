"""The rollout browser's logic (no Gradio here): filter samples.jsonl rows, lay them out as a table, and
describe one rollout in full with the rest of its group.

    keys = filter_rollouts(watch.samples, RolloutFilter(step_min=10, grader_error="any", search="Answer"))
    table = rollout_table(watch.samples, keys, grader_names(watch.samples))
    text = rollout_detail(watch.samples, keys[0])

Rows are referred to by their index in the run's sample list ("keys"), so a table row can be mapped back
to the full rollout even though the table shows only shortened text. Newest first. A click is mapped back by
the clicked row's own cells (`find_row`): the table refreshes on a timer, so a position may name a newer row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from graders.trajectory import ERROR_PREFIXES

ANY_ERROR = "any grader failed"
NO_ERROR = "no grader failed"
ALL = "all rollouts"
# The tool-use filter (Agent RFT runs): its choices, each a test on a row.
TOOL_FLAGS = {ALL: None,
              "called a tool": lambda r: bool((r.get("tools") or {}).get("calls")),
              "no tool call": lambda r: not (r.get("tools") or {}).get("calls"),
              "a tool call failed": lambda r: bool((r.get("tools") or {}).get("errors")),
              "unfinished (still calling at the limit)": lambda r: bool((r.get("tools") or {}).get("unfinished")),
              "truncated (hit the length limit)": lambda r: bool(r.get("truncated"))}
TEXT_CELL = 160  # characters of prompt/completion shown in the table; the detail view has all of it


@dataclass
class RolloutFilter:
    step_min: float | None = None
    step_max: float | None = None
    split: str = "all"  # all | train | eval
    grader_error: str = ALL  # ALL | ANY_ERROR | NO_ERROR | a grader's name
    score_of: str = "total"  # "total" or a grader's name
    score_min: float | None = None
    score_max: float | None = None
    search: str = ""  # case-insensitive, in prompt or completion
    stage: str = "all"
    tool_flag: str = ALL  # a TOOL_FLAGS key

    # The Monitor's filter widgets, in the order its handlers receive their values.
    INPUTS = ("step_min", "step_max", "split", "grader_error", "score_of", "score_min", "score_max", "search",
              "tool_flag")

    @classmethod
    def from_inputs(cls, *values) -> "RolloutFilter":
        """The filter from the Monitor's widget values (`INPUTS` order); none given: no filter."""
        return cls(**dict(zip(cls.INPUTS, values)))


def _num(v) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def grader_names(samples: list[dict], scan: int = 200) -> list[str]:
    """Grader names in the order the newest rows list them."""
    names: list[str] = []
    for row in samples[-scan:]:
        for name in (row.get("scores") or {}):
            if name not in names:
                names.append(name)
    return names


def score_value(row: dict, score_of: str) -> float | None:
    if score_of == "total":
        return row.get("total")
    return (row.get("scores") or {}).get(score_of)


def filter_rollouts(samples: list[dict], f: RolloutFilter, limit: int | None = None) -> list[int]:
    """Indices of the rows that pass `f`, newest first (at most `limit`)."""
    lo, hi = _num(f.step_min), _num(f.step_max)
    smin, smax = _num(f.score_min), _num(f.score_max)
    needle = (f.search or "").strip().lower()
    flag = TOOL_FLAGS.get(f.tool_flag or ALL)
    out: list[int] = []
    for i in range(len(samples) - 1, -1, -1):
        row = samples[i]
        step = row.get("step") or 0
        if (lo is not None and step < lo) or (hi is not None and step > hi):
            continue
        if f.split not in ("all", "", None) and row.get("split", "train") != f.split:
            continue
        if f.stage not in ("all", "", None) and row.get("stage") != f.stage:
            continue
        errors = row.get("errors") or {}
        if f.grader_error == ANY_ERROR and not errors:
            continue
        if f.grader_error == NO_ERROR and errors:
            continue
        if f.grader_error not in (ALL, ANY_ERROR, NO_ERROR, "", None) and f.grader_error not in errors:
            continue
        if smin is not None or smax is not None:
            v = score_value(row, f.score_of or "total")
            if v is None or (smin is not None and v < smin) or (smax is not None and v > smax):
                continue
        if needle and needle not in str(row.get("prompt", "")).lower() and \
                needle not in str(row.get("completion", "")).lower():
            continue
        if flag is not None and not flag(row):
            continue
        out.append(i)
        if limit and len(out) >= limit:
            break
    return out


def _short(text, n: int = TEXT_CELL) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt(v) -> str:
    return "error" if v is None else f"{v:.3g}"


def tool_cell(row: dict) -> str:
    """The table's short tool-use summary of a row: '2 calls, 1 failed, unfinished'; '' for a plain rollout."""
    info = row.get("tools")
    parts = []
    if isinstance(info, dict):
        calls, errors = int(info.get("calls") or 0), int(info.get("errors") or 0)
        parts.append(f"{calls} call{'s' * (calls != 1)}" if calls else "no call")
        if errors:
            parts.append(f"⚠ {errors} failed")
        if info.get("unfinished"):
            parts.append("⚠ unfinished")
    if row.get("truncated"):
        parts.append("✂ truncated")
    return ", ".join(parts)


def _has_tools(samples: list[dict], keys) -> bool:
    return any("tools" in samples[i] or samples[i].get("truncated") for i in keys)


def has_tool_rows(samples: list[dict], scan: int = 200) -> bool:
    """Whether the newest rows are of a tool run (or were truncated): the tool-use filter is shown then."""
    return _has_tools(samples, range(max(0, len(samples) - scan), len(samples)))


def _table_row(row: dict, graders: list[str], tools: bool = False) -> list:
    scores = row.get("scores") or {}
    errors = row.get("errors") or {}
    # The tools column sits among the grader columns, which find_row's `_fixed_cells` skips.
    return [str(row.get("stage", "")).upper(), row.get("step"), row.get("split", "train"), _fmt(row.get("total")),
            *[_fmt(scores.get(g)) if g in scores else "" for g in graders], *([tool_cell(row)] if tools else []),
            ", ".join(f"{g}: {e.get('type')}" for g, e in errors.items()),
            _short(row.get("completion")), _short(row.get("prompt"), 80)]


def rollout_table(samples: list[dict], keys: list[int], graders: list[str]) -> dict:
    """{"headers", "data"} for a gr.Dataframe: step, split, total, one column per grader, errors, texts."""
    tools = _has_tools(samples, keys)  # a tool run, or truncated rollouts: one more column
    headers = ["stage", "step", "split", "total", *graders, *(["tool use"] if tools else []), "errors",
               "completion", "prompt"]
    return {"headers": headers, "data": [_table_row(samples[i], graders, tools) for i in keys]}


def _norm(value) -> str:
    # A table cell as the browser sends it back: numbers may come back as 23 or 23.0, an empty cell as null.
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _fixed_cells(cells: list) -> list[str]:
    """The cells that do not depend on which graders the table had columns for: stage, step, split, total,
    errors, completion, prompt."""
    return [_norm(c) for c in (*cells[:4], *cells[-3:])]


def find_row(samples: list[dict], keys: list[int], index: int | None, row_value=None) -> int | None:
    """The sample key of a clicked table row. `row_value` (the row's cells as the page showed them) decides;
    `keys[index]` is only the first guess, since the table on the page may be older than `keys`: rows are
    prepended as steps arrive, so the clicked row is at `index` or further down. Without `row_value`: `keys[index]`.
    None when no rollout has those cells (the rows were dropped from the file since)."""
    if not row_value:
        return keys[index] if index is not None and 0 <= index < len(keys) else None
    want = _fixed_cells(list(row_value))

    def same(key: int) -> bool:
        return 0 <= key < len(samples) and _fixed_cells(_table_row(samples[key], [])) == want

    index = index if index is not None else 0
    if 0 <= index < len(keys) and same(keys[index]):
        return keys[index]
    # Identical rows (a GRPO group whose completions are all alike) are told apart by position: the nearest one at
    # or below the clicked place.
    hits = sorted((j for j, key in enumerate(keys) if same(key)), key=lambda j: (j < index, abs(j - index)))
    if hits:
        return keys[hits[0]]
    return next((i for i in range(len(samples) - 1, -1, -1) if same(i)), None)


def _fence(text, lang: str = "text") -> str:
    text = str(text or "")
    # Longer than any run of backticks in the text, so the text cannot close the block (and is shown as is).
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}{lang}\n{text}\n{fence}"


def group_of(samples: list[dict], key: int, radius: int = 512) -> list[int]:
    """The other completions of the same prompt at the same step (a GRPO group), nearby in the file."""
    row = samples[key]
    lo, hi = max(0, key - radius), min(len(samples), key + radius)
    return [i for i in range(lo, hi) if samples[i].get("step") == row.get("step")
            and samples[i].get("prompt") == row.get("prompt") and samples[i].get("split") == row.get("split")]


def rollout_detail(samples: list[dict], key: int | None) -> str:
    """Markdown with everything about one rollout: prompt, completion, scores, errors, grader logs, group."""
    if not samples:
        return ("*No rollouts yet. They appear once the RFT stage starts: SFT learns from your labelled answers "
                "and samples nothing.*")
    if key is None or not (0 <= key < len(samples)):
        return "*Click a row of the table to see the whole rollout, its scores, errors and grader logs.*"
    row = samples[key]
    scores, errors, logs = row.get("scores") or {}, row.get("errors") or {}, row.get("logs") or {}
    lines = [f"#### {str(row.get('stage', '')).upper()} step {row.get('step')} · {row.get('split', 'train')} · "
             f"total reward {_fmt(row.get('total'))}", *_marks(row), "**Prompt**", _fence(row.get("prompt")),
             *(trajectory_md(row) if isinstance(row.get("trajectory"), list) else
               ["**Completion**", _fence(row.get("completion"))]),
             "| grader | score | error | log |", "| --- | --- | --- | --- |"]
    for name in sorted(set(scores) | set(errors) | set(logs)):
        err = errors.get(name)
        err_text = f"`{err.get('type')}`: {err.get('message')}" if err else ""
        lines.append(f"| {name} | {_fmt(scores.get(name)) if name in scores else ''} | {_cell(err_text)} | "
                     f"{_cell(logs.get(name, ''))} |")
    group = group_of(samples, key)
    if len(group) > 1:
        totals = [samples[i].get("total") for i in group]
        spread = "all equal: this group taught nothing" if len(set(totals)) == 1 else "they differ, so it taught"
        lines += ["", f"**Its group** ({len(group)} completions of this prompt at this step; {spread}):", ""]
        for i in group:
            mark = " ← this one" if i == key else ""
            text = _short(samples[i].get("completion"), 100).replace("`", "'")
            lines.append(f"- {_fmt(samples[i].get('total'))}: `{text}`{mark}")
    return "\n".join(lines)


def _marks(row: dict) -> list[str]:
    """A warning line for an unfinished / truncated rollout or one whose tool calls failed; none otherwise.
    Plain symbols (⚠ ✂ → ←), not emoji: those drew as empty boxes in a browser without an emoji font."""
    info = row.get("tools") if isinstance(row.get("tools"), dict) else {}
    marks = []
    if info.get("unfinished"):
        marks.append("⚠ **unfinished**: still calling tools when the call limit (`rft.max_tool_calls`) stopped it")
    if row.get("truncated"):
        marks.append("✂ **truncated**: cut off at `rft.max_completion_length` tokens")
    if info.get("errors"):
        marks.append(f"⚠ **{info['errors']} of {info.get('calls', '?')} tool calls failed**")
    return [" · ".join(marks), ""] if marks else []


def _code(name) -> str:
    # Inline code shows its text as is (no HTML, no Markdown); only a backtick could end it.
    return "`" + (" ".join(str(name or "?").split()).replace("`", "'") or "?") + "`"


def _text(content) -> str:
    from graders.base import content_text

    return content_text(content)


def _arguments(args) -> str:
    if isinstance(args, str):  # OpenAI's shape: JSON text
        try:
            args = json.loads(args)
        except ValueError:
            return args
    if not isinstance(args, (dict, list)):
        return str(args)
    text = json.dumps(args, ensure_ascii=False)
    return text if len(text) <= 100 else json.dumps(args, ensure_ascii=False, indent=2)


def trajectory_md(row: dict) -> list[str]:
    """Markdown lines of a tool-use rollout, turn by turn: each model turn's text and tool calls (name and
    arguments), each tool's answer (failed ones marked), then the final answer (`completion`)."""
    messages = [m for m in row["trajectory"] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    final = last.get("role") == "assistant" and not last.get("tool_calls")
    info = row.get("tools") if isinstance(row.get("tools"), dict) else {}
    turns, calls = info.get("turns", "?"), info.get("calls", 0)
    lines = ["", f"**Trajectory** ({turns} model turn{'' if turns == 1 else 's'}, "
                 f"{calls} tool call{'' if calls == 1 else 's'})"]
    turn = 0
    for m in messages[:-1] if final else messages:
        if m.get("role") == "tool":
            text = _text(m.get("content"))
            failed = text.lstrip().startswith(ERROR_PREFIXES)
            name = _code(m.get("name"))
            head = f"⚠ **error** from tool {name}:" if failed else f"← tool {name} answered:"
            lines += ["", f"> {head}", "", _fence(text)]
            continue
        turn += 1
        lines += ["", f"**Model, turn {turn}**", ""]
        if _text(m.get("content")).strip():
            lines.append(_fence(_text(m.get("content"))))
        for call in m.get("tool_calls") or []:
            fn = (call.get("function") or call) if isinstance(call, dict) else {}
            args = _fence(_arguments(fn.get("arguments")), "json")
            lines += ["", f"→ calls {_code(fn.get('name'))} with:", "", args]
    lines += ["", "**Final answer**", ""]
    if final or not info.get("unfinished"):
        lines.append(_fence(row.get("completion")))
    else:
        lines.append("*None: the model was still calling tools when it was stopped.*")
    return [*lines, ""]


def _cell(text) -> str:
    return _short(text, 400).replace("|", "\\|")


def error_choices(samples: list[dict]) -> list[str]:
    """Choices for the error filter: all, any, none, then each grader by name."""
    return [ALL, ANY_ERROR, NO_ERROR, *grader_names(samples)]
