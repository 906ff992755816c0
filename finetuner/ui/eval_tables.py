"""The Evaluate tab's tables (no Gradio here): the per-model summary, the row-by-row comparison of two models'
answers, and one held-out row in full.

    table = comparison_table(samples, "base", "rft")     # samples: evaluate.load_results(run)[1]
    text = row_detail(samples, "base", "rft", row_value=table["data"][0])

Cells are cut to a few lines so the answers and scores stay on the screen next to a long prompt; the detail
holds the whole text. A row is found by its own `row` number, not by its position in a table that a filter
may have redrawn since.
"""

from __future__ import annotations

import re

from graders.reward import grader_item

COMPARE_FILTERS = ("all rows", "B scored higher", "B scored lower", "same score")
CELL_CHARS = {"prompt": 160, "reference": 120, "answer": 200}
ROW_HINT = "*Click a row of the table to read it in full, with every grader's score.*"


def reference_text(sample: dict) -> str:
    """What a held-out row's answers are compared with: its reference answer (`completion`, which the data
    stages may carry as REFERENCE_COLUMN: graders.reward.grader_item names it back), else the row's other
    columns, which is what graders read instead (`{{item.answer}}`)."""
    ref = sample.get("reference")
    item = grader_item(dict(sample.get("item") or {}))
    if ref in (None, "", []):
        ref = item.get("completion")
    if isinstance(ref, list):  # an answer given as chat turns
        ref = ref[-1].get("content") if ref and isinstance(ref[-1], dict) else ref
    if ref not in (None, "", []):
        return str(ref)
    others = {k: v for k, v in item.items() if k not in ("prompt", "messages") and v not in (None, "")}
    return "; ".join(f"{k}: {v}" for k, v in others.items())


def _cell(text, kind: str) -> str:
    text = " ".join(str(text or "").split())
    n = CELL_CHARS[kind]
    return text if len(text) <= n else text[: n - 1] + "…"


def comparison_table(samples: list[dict], a: str, b: str, which: str = COMPARE_FILTERS[0]) -> dict:
    """Per held-out row: prompt, reference, model A's and model B's answers and totals. Long texts are cut
    (a whole e-mail as a prompt pushed the answers off the screen); `row_detail` shows a row in full."""
    headers = ["row", "prompt", "reference", "A answer", "A total", "B answer", "B total"]
    data = []
    for s in samples:
        oa, ob = s["outputs"].get(a), s["outputs"].get(b)
        if oa is None or ob is None:
            continue
        diff = ob["total"] - oa["total"]
        if (which == COMPARE_FILTERS[1] and diff <= 0) or (which == COMPARE_FILTERS[2] and diff >= 0) or \
                (which == COMPARE_FILTERS[3] and diff != 0):
            continue
        data.append([s["row"], _cell(s["prompt"], "prompt"), _cell(reference_text(s), "reference"),
                     _cell(oa["completion"], "answer"), f"{oa['total']:.3g}", _cell(ob["completion"], "answer"),
                     f"{ob['total']:.3g}"])
    return {"headers": headers, "data": data}


_MARKDOWN_MARKS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def _quote(text) -> str:
    """Text shown as it is, wrapped to the page (a code block does not wrap: a long prompt ran off to the right):
    a block quote of the text with Markdown's marks escaped and its line breaks kept."""
    lines = str(text or "").splitlines() or [""]
    return "\n".join("> " + _escape(line) + "  " if line.strip() else ">" for line in lines)


def _escape(text: str) -> str:
    return _MARKDOWN_MARKS.sub(r"\\\1", text)


def row_detail(samples: list[dict], a: str, b: str, row_value=None, index: int | None = None,
               which: str = COMPARE_FILTERS[0], labels: dict | None = None) -> str:
    """One held-out row in full: prompt, reference, and each model's answer with every grader's score. The row is
    found by its own `row` number (the first cell of the clicked row), else by `index` in the table `which` shows.
    `labels`: model key -> the name the tab shows ("After SFT")."""
    wanted = None
    if row_value:
        try:
            wanted = int(row_value[0])
        except (TypeError, ValueError):
            wanted = None
    if wanted is None and index is not None:
        shown = comparison_table(samples, a, b, which)["data"]
        wanted = shown[index][0] if 0 <= index < len(shown) else None
    s = next((s for s in samples if s.get("row") == wanted), None)
    if s is None:
        return ROW_HINT
    lines = [f"#### Held-out row {s['row']}", "**Prompt**", _quote(s.get("prompt")), "",
             "**Reference**", _quote(reference_text(s) or "(none)"), ""]
    for key in dict.fromkeys([a, b]):
        out = s["outputs"].get(key)
        if out is None:
            continue
        scores = ", ".join(f"{g} {v:.3g}" if v is not None else f"{g} error" for g, v in out["scores"].items())
        errors = "; ".join(f"{g}: {e.get('type')}: {e.get('message')}" for g, e in (out.get("errors") or {}).items())
        name = (labels or {}).get(key, key)
        lines += [f"**{'A' if key == a else 'B'}: {name}** · total {out['total']:.3g} · {scores}"
                  + (" · errors: " + _escape(errors) if errors else ""),
                  _quote(out.get("completion")), ""]
    return "\n".join(lines).rstrip()
