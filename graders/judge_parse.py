"""Reading an LLM judge's answer: `{"result": <float>, "steps": [...]}` or a bare number (or label).

Reasoning models wrap answers in <think> blocks and chat models in ``` fences or prose; we accept the JSON
object anywhere in the text (the last one carrying "result" wins) or a reply that is only a number.
Anything else raises JudgeParseError, which the judge turns into a `judge_parse_error` scoring 0.
"""

from __future__ import annotations

import json
import math
import re

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


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
    """(score clipped to [lo, hi], a short explanation for the log)."""
    result, steps = extract(text)
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
        result, steps = _clean(text), None  # a label judge may just answer with the label
    wanted = str(result).strip().strip("\"'.").lower()
    for label in labels:
        if label.lower() == wanted:
            return label, f"judge said {label!r}" + _steps(steps)
    raise JudgeParseError(f"the judge answered {_show(str(result))}, which is not one of the labels "
                          f"{', '.join(labels)}")


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
