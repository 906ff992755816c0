"""The Monitor's tool-use charts for Agent RFT runs (`tools:` in the run config; no Gradio here).

    figs = tool_figures(watch.columns, smoothing=0.6, revision=run_id)   # None: the run logged no tool metrics
    figs["tools"], figs["tools_reward"]

"tools": per step, shares of rollouts (left axis, 0-100 %): calling any tool, calling each tool, cut off
unfinished (still calling at rft.max_tool_calls) or truncated (rft.max_completion_length), and the share of
calls that failed; counts per rollout (right axis): tool calls and assistant turns.
"tools_reward": the mean reward of rollouts that called a tool against those that did not, which says
whether calling pays (each is missing in a step without such rollouts, so the curves may have gaps).
Metric names are finetuner/training/agent.py's `rollout_stats`.
"""

from __future__ import annotations

from finetuner.ui import figures

# (metric, legend label a non-coder reads, color); shares of rollouts or of calls, on the left axis.
SHARES = (("tools/call_rate", "rollouts that called a tool", "#3b5bdb"),
          ("tools/error_rate", "tool calls that failed (share of calls)", "#e03131"),
          ("tools/unfinished_rate", "rollouts stopped while still calling (unfinished)", "#e67700"),
          ("tools/truncated_rate", "rollouts cut off at the length limit", "#ab63fa"))
# Counts per rollout, on the right axis.
COUNTS = (("tools/calls_per_rollout", "tool calls per rollout (right axis)", "#2f9e44"),
          ("tools/turns", "model turns per rollout (right axis)", "#868e96"))
REWARDS = (("tools/reward_with_call", "rollouts that called a tool", "#3b5bdb"),
           ("tools/reward_without_call", "rollouts that answered without a tool", "#e8590c"))
TALL = figures.HEIGHT + 130  # room for a legend of up to 8 entries below the plot; the pair stays level
# Keys under tools/ that are not a tool's name (tools/<name>/call_rate is).
OWN_KEYS = {k for k, _l, _c in (*SHARES, *COUNTS, *REWARDS)} | {"tools/call_frequency", "tools/failure_frequency"}


def has_tool_metrics(columns) -> bool:
    """Whether the run logged our tool-use metrics (an Agent RFT run that reached its RFT stage)."""
    return columns.get("tools/call_rate") is not None or columns.get("tools/calls_per_rollout") is not None


def tool_names(columns) -> list[str]:
    """The tools that have a `tools/<name>/call_rate` curve, sorted."""
    return sorted(k.split("/")[1] for k in columns.keys("tools/") if k.count("/") == 2 and k.endswith("/call_rate"))


def tool_use_figure(columns, smoothing: float = 0.0, revision: str = "", max_points: int = figures.MAX_POINTS):
    fig = figures._base("Tool use per step: who calls, what fails, how many calls", revision,
                        "share of rollouts", height=TALL)
    names = tool_names(columns)
    for key, label, color in SHARES:
        s = figures.series(columns, key, smoothing, max_points)
        if s is not None:
            one = f" ({names[0]})" if key == "tools/call_rate" and len(names) == 1 else ""
            figures._line(fig, s, label + one, color, smoothing)
    if len(names) > 1:  # with one tool its curve is the "called a tool" curve again
        for i, name in enumerate(names):
            s = figures.series(columns, f"tools/{name}/call_rate", smoothing, max_points)
            figures._line(fig, s, f"rollouts that called {name}", figures.PALETTE[(i + 4) % len(figures.PALETTE)],
                          smoothing, width=1.5, raw_ghost=False)
            fig.data[-1].line.dash = "dot"
    for key, label, color in COUNTS:
        s = figures.series(columns, key, smoothing, max_points)
        if s is not None:
            figures._line(fig, s, label, color, smoothing, width=1.5, yaxis="y2")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02])
    fig.update_layout(yaxis2={"title": {"text": "count per rollout", "standoff": 2}, "overlaying": "y",
                              "side": "right", "showgrid": False, "rangemode": "tozero"},
                      margin={"r": 80})
    return figures.mark_stages(fig, columns)


def tool_reward_figure(columns, smoothing: float = 0.0, revision: str = "", max_points: int = figures.MAX_POINTS):
    fig = figures._base("Does calling a tool pay? Mean reward with and without a call", revision, "mean reward",
                        height=TALL)
    got = False
    for key, label, color in REWARDS:
        s = figures.series(columns, key, smoothing, max_points)
        if s is not None:
            got = True
            figures._line(fig, s, label, color, smoothing)
    if not got:
        return figures.mark_stages(figures._empty(fig, "No rewards by tool use yet."), columns)
    return figures.mark_stages(fig, columns)


def tool_figures(columns, smoothing: float = 0.0, revision: str = "", max_points: int = figures.MAX_POINTS):
    """{"tools", "tools_reward"} figures, or None when the run logged no tool metrics (the charts stay hidden)."""
    if not has_tool_metrics(columns):
        return None
    sm = min(max(float(smoothing or 0.0), 0.0), 0.999)
    return {"tools": tool_use_figure(columns, sm, revision, max_points),
            "tools_reward": tool_reward_figure(columns, sm, revision, max_points)}
