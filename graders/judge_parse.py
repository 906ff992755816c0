"""Reading an LLM judge's answer: `{"result": <float>, "steps": [...]}` or a bare number (or label).

Reasoning models wrap answers in <think> blocks and chat models in ``` fences or prose; we accept the JSON
object anywhere in the text (the last one carrying "result" wins) or a reply that is only a number.
When that strict reading fails on a reply that is not JSON (small chat models answer "Score: 7/10" or "The
answer is correct."), a lenient reading takes the answer only where it is unambiguous (`lenient_score`,
`lenient_label`; never on JSON cut off mid-object, whose steps are not the answer); its note carries
LENIENT_MARK so the log and the UI can say the lenient parse was used.
Anything else raises JudgeParseError, which the judge turns into a `judge_parse_error` scoring 0.
"""

from __future__ import annotations

import json
import math
import re

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
# a number in prose: not glued to a word or another number ("gpt4", "1.2.3" are not numbers); a minus only
# when written against the digits, so "2 - 3" reads as 2 and 3
_PROSE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")
LENIENT_MARK = "lenient parse"


class JudgeParseError(ValueError):
    pass


def _clean(text: str) -> str:
    text = _THINK.sub("", text or "")
    if "</think>" in text:  # an opening tag the server already stripped
        text = text.rsplit("</think>", 1)[1]
    return text.strip().strip("`").removeprefix("json").strip()


def extract(text: str):
    """(result, steps) from a judge reply; result is whatever the judge put there (number or text)."""
    cleaned = _clean(text)
    try:
        value = json.loads(cleaned)
    except ValueError:
        value = None
    if isinstance(value, dict) and "result" in value:
        return value["result"], value.get("steps")
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value, None
    decoder = json.JSONDecoder()
    found = None
    for start in [m.start() for m in re.finditer(r"\{", cleaned)]:
        try:
            obj, _ = decoder.raw_decode(cleaned, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and "result" in obj:
            found = obj
    if found is not None:
        return found["result"], found.get("steps")
    if _NUMBER.match(cleaned):
        return cleaned, None
    raise JudgeParseError(f"the judge answered {_show(text)}; expected JSON "
                          '{"result": <number>, "steps": [...]} or just a number')


def _show(text: str) -> str:
    text = (text or "").strip().replace("\n", " ")
    return repr(text if len(text) <= 120 else text[:117] + "...") if text else "nothing"


def parse_score(text: str, lo: float, hi: float) -> tuple[float, str]:
    """(score clipped to [lo, hi], a short explanation for the log). JSON (or a bare number) is read strictly;
    a reply without either is read by `lenient_score`."""
    try:
        result, steps = extract(text)
    except JudgeParseError as err:
        if _json_like(text):  # cut-off JSON: its steps hold numbers and words that are not the answer
            raise JudgeParseError(f"{err}; it looks like JSON without a complete result (cut off?), so it is "
                                  "not read leniently") from None
        return lenient_score(text, lo, hi, err)
    try:
        score = float(result)
    except (TypeError, ValueError):
        raise JudgeParseError(f"the judge's result {result!r} is not a number") from None
    if not math.isfinite(score):
        raise JudgeParseError(f"the judge's result {result!r} is not a finite number")
    clipped = min(hi, max(lo, score))
    note = f"judge said {score:g}" + (f", clipped to {clipped:g}" if clipped != score else "")
    return clipped, note + _steps(steps)


def parse_label(text: str, labels: list[str]) -> tuple[str, str]:
    try:
        result, steps = extract(text)
    except JudgeParseError:
        result, steps = None, None
    wanted = str(_clean(text) if result is None else result).strip().strip("\"'.").lower()
    for label in labels:  # a label judge may just answer with the label
        if label.lower() == wanted:
            return label, f"judge said {label!r}" + _steps(steps)
    if result is None and _json_like(text):  # cut-off JSON: a label in its steps is not the answer
        raise JudgeParseError(f"the judge answered {_show(text)}, which looks like JSON without a complete "
                              f"result (cut off?); expected one of the labels {', '.join(labels)}")
    if result is None:  # prose, not JSON: the label only if exactly one is named in it
        return lenient_label(text, labels)
    raise JudgeParseError(f"the judge answered {_show(str(result))}, which is not one of the labels "
                          f"{', '.join(labels)}")


def _json_like(text: str) -> bool:
    cleaned = _clean(text)
    return cleaned.startswith(("{", "[")) or '"result"' in cleaned


def _value(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


def lenient_score(text: str, lo: float, hi: float, strict_error: Exception | None = None) -> tuple[float, str]:
    """The score in a prose reply, where only one reading is possible.

    1. A number written against the range's top as "X/MAX" or "X out of MAX" is the judge's score: the MAX
       is the scale, not a second candidate ("Score: 7/10" with range 0..10 is 7).
    2. Otherwise every number in the reply is a candidate, and those in [lo, hi] count; list numbering (a
       whole number opening a line, then "." or ")") is not a candidate.
    Exactly one distinct value in range is the score; none, or several different ones ("2 + 3 = 5" with
    range 0..10), is a parse failure naming them."""
    cleaned = _clean(text)
    explicit, scale_at, numbers = [], set(), []
    for m in _PROSE_NUMBER.finditer(cleaned):
        if m.start() in scale_at or _list_number(cleaned, m):
            continue
        numbers.append(_value(m.group()))
        scale = re.match(r"\s*(?:/|out\s+of)\s*(-?\d+(?:\.\d+)?)", cleaned[m.end():], re.I)
        if scale and float(scale.group(1)) == hi:
            explicit.append(numbers[-1])
            scale_at.add(m.end() + scale.start(1))  # the "/MAX" is not a number of its own
    pool, how = (explicit, f"written as X/{hi:g}") if explicit else (numbers, "the only number in range")
    found = sorted({v for v in pool if lo <= v <= hi})
    if len(found) == 1:
        return float(found[0]), f"judge said {found[0]:g} ({LENIENT_MARK}: {how} in {_show(text)})"
    why = (f"it names several numbers in {lo:g}..{hi:g} ({', '.join(f'{v:g}' for v in found)}), so the score is "
           "ambiguous") if found else f"it has no number in {lo:g}..{hi:g}"
    prefix = f"{strict_error}; " if strict_error else f"the judge answered {_show(text)}; "
    raise JudgeParseError(f"{prefix}read leniently, {why}")


def _list_number(text: str, m: re.Match) -> bool:
    """A whole number opening a line and followed by "." or ")" numbers a list item ("1. The reply is ...")."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    return (m.group().isdigit() and not text[line_start:m.start()].strip()
            and text[m.end():m.end() + 1] in (".", ")"))


def lenient_label(text: str, labels: list[str]) -> tuple[str, str]:
    """The label in a prose reply when exactly one allowed label appears as a whole word (case-insensitive).
    A label found only inside a longer one ("relevant" in "not relevant") does not count; none, or several
    different labels, is a parse failure naming them."""
    cleaned = _clean(text)
    spans = []
    for label in labels:
        for m in re.finditer(rf"(?<!\w){re.escape(label)}(?!\w)", cleaned, re.I):
            spans.append((m.start(), m.end(), label))
    kept = {lab for s, e, lab in spans if not any(s2 <= s and e <= e2 and (s2, e2) != (s, e) for s2, e2, _ in spans)}
    if len(kept) == 1:
        [label] = kept
        return label, f"judge said {label!r} ({LENIENT_MARK}: the only label named in {_show(text)})"
    found = [lab for lab in labels if lab in kept]
    why = (f"it names several labels ({', '.join(found)})" if found else "it names none of them")
    raise JudgeParseError(f"the judge answered {_show(text)}, which is not one of the labels {', '.join(labels)}; "
                          f"read leniently, {why}")


def _steps(steps) -> str:
    if not steps:
        return ""
    if isinstance(steps, list):
        lines = []
        for step in steps[:10]:
            if isinstance(step, dict):
                lines.append(" - ".join(str(v) for v in step.values()))
            else:
                lines.append(str(step))
        return "\n" + "\n".join(f"  {line}" for line in lines)
    return "\n  " + str(steps)
