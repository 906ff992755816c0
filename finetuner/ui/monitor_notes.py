"""The Monitor's notes beside the charts (no Gradio here): the reward-hacking guardrails' warnings from
status.json (finetuner/training/guardrails.py), why zero-spread groups teach nothing and what to do, the
curriculum chart (`curriculum/*` metrics) and the highest-scored rollouts to review (review.jsonl)."""

from __future__ import annotations

import html

from finetuner.runs import tail_jsonl
from finetuner.ui import figures

ZERO_SPREAD = 0.5  # mean `frac_reward_zero_std` over the last steps from which the explanation shows
ZERO_WINDOW = 5
CURRICULUM_KEYS = ("curriculum/target", "curriculum/difficulty", "curriculum/pass_rate")


def guardrail_md(status: dict) -> str:
    items = [w for w in status.get("warnings") or [] if isinstance(w, dict)]
    if not items:
        return ""
    lines = ["**Reward-hacking guardrails**"]
    for w in items:
        lines.append(f"- ⚠️ {w.get('message', '')} (step {w.get('step', '?')})  \n  **What to do:** "
                     f"{w.get('what_to_do', '')}")
    return "\n".join(lines)


def _groups(samples: list[dict], steps: int = ZERO_WINDOW) -> tuple[int, int, int]:
    """(all-zero groups, all-full-marks groups, other zero-spread groups) over the latest `steps` train steps:
    a group is one prompt's completions at one step."""
    train = [s for s in samples[-4000:] if s.get("split", "train") == "train"]
    recent = sorted({s.get("step") for s in train if s.get("step") is not None})[-steps:]
    groups: dict = {}
    for s in train:
        if s.get("step") in recent:
            groups.setdefault((s.get("step"), s.get("prompt")), []).append(s)
    zero = full = other = 0
    for rows in groups.values():
        totals = {r.get("total") for r in rows}
        if len(rows) < 2 or len(totals) != 1:
            continue
        scores = [v for r in rows for v in (r.get("scores") or {}).values() if isinstance(v, (int, float))]
        if not scores or all(v <= 0 for v in scores):
            zero += 1
        elif all(v >= 0.95 for v in scores):  # built-in graders score at most 1
            full += 1
        else:
            other += 1
    return zero, full, other


def zero_signal_md(columns, samples: list[dict]) -> str:
    """The plain-words explanation when most recent groups had no spread; '' otherwise."""
    last = [v for v in columns.last("frac_reward_zero_std", ZERO_WINDOW)]
    if not last or sum(last) / len(last) < ZERO_SPREAD:
        return ""
    share = sum(last) / len(last)
    zero, full, other = _groups(samples)
    text = [f"**No learning signal:** in {share:.0%} of prompts every completion scored the same, so those prompts "
            f"teach nothing: GRPO learns from the differences between the completions of one prompt."]
    if zero + full + other:
        text.append(f"In the latest rollouts, {zero} such groups scored 0 everywhere, {full} got full marks "
                    f"everywhere and {other} the same partial score.")
    fixes = ["turn on the curriculum (`rft.curriculum: adarft`), which picks prompts the model gets half right",
             "raise `rft.temperature` or `rft.num_generations` so completions differ more"]
    if zero >= full:
        fixes.append("if every completion scores 0, train SFT first (`method: sft+rft`) or give partial credit")
    if full >= zero and (full or not zero):
        fixes.append("if every completion gets full marks, use harder prompts")
    return " ".join(text) + "\n" + "\n".join(f"- {f}" for f in fixes)


def curriculum_figure(columns, smoothing: float = 0.0, revision: str = ""):
    """Target difficulty and batch difficulty (0-100, left) and pass rate (right), or None without them."""
    if not any(columns.get(k) is not None for k in CURRICULUM_KEYS):
        return None
    import plotly.graph_objects as go

    fig = figures._base("Curriculum: target and batch difficulty, pass rate", revision, "difficulty (0-100)")
    for key, label, color in (("curriculum/target", "target difficulty", "#e67700"),
                              ("curriculum/difficulty", "batch difficulty", "#3b5bdb")):
        s = figures.series(columns, key, smoothing)
        if s is not None:
            figures._line(fig, s, label, color, smoothing)
    s = figures.series(columns, "curriculum/pass_rate", smoothing)
    if s is not None:
        fig.add_trace(go.Scatter(x=s[0], y=s[2], mode="lines", name="pass rate", yaxis="y2",
                                 line={"color": "#2f9e44", "width": 2}))
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [-0.02, 1.02], "tickformat": ".0%",
                                  "showgrid": False})
    return figures.mark_stages(fig, columns)


def review_rows(run_path) -> list[dict]:
    """The latest eval's highest-scored rollouts from review.jsonl (the last 256 KiB suffice)."""
    rows = tail_jsonl(f"{run_path}/review.jsonl", 262144)
    if not rows:
        return []
    last = rows[-1].get("eval_step")
    return [r for r in rows if r.get("eval_step") == last]


def review_md(rows: list[dict]) -> str:
    if not rows:
        return ("*No review list yet: it is written at each eval (`rft.eval_steps`) or held-out scoring "
                "(`eval.every_steps`).*")
    r0 = rows[0]
    lines = [f"The {len(rows)} highest-scored {r0.get('source', '')} rollouts at step {r0.get('eval_step')}: "
             f"read them for answers that please the graders without being right.", "",
             "| step | total | scores | prompt | completion |", "|---|---|---|---|---|"]
    for r in rows:
        scores = ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} -"
                           for k, v in (r.get("scores") or {}).items())
        cells = [str(r.get("step")), f"{r.get('total', 0):.3f}", scores, _cell(r.get("prompt")),
                 _cell(r.get("completion"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text, n: int = 200) -> str:
    text = str(text or "")
    text = text if len(text) <= n else text[: n - 1] + "…"
    return html.escape(text).replace("|", "\\|").replace("\n", "<br>")


TOOL_WINDOW = 3  # latest RFT steps the tool notes look at
TOOL_ERRORS = 0.5  # mean share of failed calls above which the note shows
TOOL_UNFINISHED = 0.3  # mean share of rollouts still calling at the limit above which the note shows


def tool_trouble_md(columns) -> str:
    """Plain-words notes when an Agent RFT run's tool use looks wrong over its latest steps; '' otherwise."""
    def recent(key):
        last = columns.last(key, TOOL_WINDOW)
        return sum(last) / len(last) if len(last) == TOOL_WINDOW else None  # too few steps to tell yet

    notes = []
    if recent("tools/call_rate") == 0:
        notes.append(f"**The model never calls its tools** (none of the rollouts of the last {TOOL_WINDOW} steps "
                     "did), so RFT cannot reward calling them: teach it with SFT demonstrations that call the tools "
                     "first (`method: sft+rft`), or use a model whose chat template supports tools.")
    errors = recent("tools/error_rate")
    if errors is not None and errors > TOOL_ERRORS:
        notes.append(f"**Most tool calls fail** ({errors:.0%} over the last {TOOL_WINDOW} steps): open a rollout "
                     "below to see the tool's error (wrong argument names or types are the usual cause).")
    unfinished = recent("tools/unfinished_rate")
    if unfinished is not None and unfinished > TOOL_UNFINISHED:
        notes.append(f"**{unfinished:.0%} of rollouts were still calling tools when stopped**, so they never gave "
                     "a final answer: raise `rft.max_tool_calls` or `rft.max_completion_length`.")
    return "\n\n".join(f"⚠️ {n}" for n in notes)
