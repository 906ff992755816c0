"""What a grader test (the Graders tab's "Test graders") shows, and what its verdict blocks.

`test_on_data` (tab_graders.py) stores the dry run's summary in `project["dry_run"]` with `graders_key`, the
fingerprint of the graders it tested. `blocking_failure(project)` is the Train tab's question before Launch:
a grader that failed on every test row blocks the launch while that test still describes the current graders.
The rest turns a summary into the tab's Markdown, histogram and per-sample table.
"""

from __future__ import annotations

import hashlib
import json

import gradio as gr


def graders_key(specs: list[dict] | None) -> str:
    """A fingerprint of the grader specs, so a test's verdict is used only while it describes them."""
    return hashlib.sha256(json.dumps(specs or [], sort_keys=True, default=str).encode()).hexdigest()[:16]


def blocking_failure(project: dict | None) -> str:
    """Why Launch must wait, or "": a grader failed on every row of the last test, and the graders have not
    changed since (a stale verdict, or one from before graders were fingerprinted, blocks nothing)."""
    project = project or {}
    dry = project.get("dry_run") or {}
    failed = dry.get("failed_graders") or {}
    if not failed or dry.get("graders_key") != graders_key(project.get("graders")):
        return ""
    return " ".join(f"Grader `{name}` failed on every test row (latest: {str(latest)[:300]}). Fix it on the "
                    f"Graders tab or remove it, then test again." for name, latest in failed.items())


def summary_markdown(summary: dict, base: bool) -> str:
    what = f"{summary['samples_per_row']} base-model samples per prompt" if base else "one text per row"
    lines = [f"**Mean reward {summary['mean']:.3f}** (std {summary['std']:.3f}) over {summary['samples']} samples "
             f"from {summary['rows']} rows ({what}) · **error rate {summary['error_rate']:.0%}**", "",
             "| grader | weight | mean | errors |", "|---|---|---|---|"]
    for name, g in summary["graders"].items():
        mean = "n/a" if g["mean"] is None else f"{g['mean']:.3f}"
        lines.append(f"| `{name}` | {g['weight']:g} | {mean} | {g['error_rate']:.0%} |")
    if summary.get("advice"):  # base-model samples: does RFT have anything to learn?
        lines += ["", f"**Before you launch:** {summary['advice']}"]
    return "\n".join(lines)


def warnings_markdown(summary: dict, blocked: str = ""):
    warnings = summary.get("warnings") or []
    if not warnings and not blocked:
        return gr.update(value="✅ No warnings: the rewards vary and the graders ran cleanly.", visible=True)
    # "too hard: rewards are ..." -> the label in bold, the explanation after it
    lines = [f"⚠️ **{w.split(':', 1)[0]}**:{w.split(':', 1)[1]}" if ":" in w else f"⚠️ {w}" for w in warnings]
    if blocked:
        lines.insert(0, f"⛔ **Launch is blocked until this is fixed.** {blocked}")
    return gr.update(value="\n\n".join(lines), visible=True)


def histogram(summary: dict):
    import plotly.graph_objects as go

    h = summary["histogram"]
    edges, counts = h["edges"], h["counts"]
    width = edges[1] - edges[0]
    fig = go.Figure(go.Bar(x=[(a + b) / 2 for a, b in zip(edges, edges[1:])], y=counts, width=width * 0.92,
                           marker_color="#4c78a8", hovertemplate="reward %{x:.2f}: %{y} samples<extra></extra>"))
    fig.add_vline(x=summary["mean"], line_dash="dash", line_color="#e45756",
                  annotation_text=f"mean {summary['mean']:.2f}", annotation_position="top")
    fig.update_layout(title="Total reward per sample", xaxis_title="total reward (weighted sum)",
                      yaxis_title="samples", height=320, margin=dict(l=50, r=20, t=50, b=45),
                      template="plotly_white", bargap=0.05)
    return fig


def rows_table(report, items: list[dict]) -> list[list]:
    """One row per graded sample: where, the text, the item's fields, each grader's score, total, errors, logs."""
    out = []
    for r in report.results:
        item = items[r.row] if r.row < len(items) else {}
        fields = " · ".join(f"{k}={str(v)[:40]}" for k, v in item.items()
                            if k not in ("prompt", "messages") and v is not None)
        scores = ["ERR" if n in r.errors else round(r.scores[n], 3) for n in report.names]
        errors = "; ".join(f"{n}: [{e['type']}] {e['message']}" for n, e in r.errors.items())
        logs = "; ".join(f"{n}: {v}" for n, v in r.logs.items())
        out.append([r.row + 1, "" if r.sample is None else r.sample + 1, r.text[:300], fields[:200], *scores,
                    round(r.total, 3), errors[:300], logs[:300]])
    return {"headers": ["row", "sample", "output", "item", *report.names, "total", "errors", "logs"], "data": out}
