"""Plotly figures from a run's metrics, for the Monitor, Runs and Evaluate tabs (no Gradio here).

    figs = monitor_figures(watch.columns, smoothing=0.6, log_y=False, revision=run_id)
    figs["reward"]        # one go.Figure per panel: loss, reward, kl, length, signal, time, memory

`columns` is anything with `get(key) -> (x, y) | None`, `keys(prefix)`, `stage_starts` and `stages` (see
run_watch.MetricColumns). Every curve is cut to at most `max_points` points by averaging buckets, and
smoothing (TensorBoard's EMA weight, 0 = off) is applied after that with the weight raised to the bucket
size, so a long run costs the same to draw as a short one and looks the same as if smoothed point by point.
Buckets and smoothing never cross a stage boundary: each stage's curve is computed from its own points and
its smoothing restarts at its first point (an EMA carried from SFT's loss into RFT's drew a decay that was
not in the data).
The stage change (SFT -> RFT) is a dashed vertical line with a label on every timeline figure.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

MAX_POINTS = 2000
HEIGHT = 330
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880"]
BLUE, GREY = "#3b5bdb", "#868e96"
# A small template of our own: plotly's named templates are deep-copied into every figure, which made a
# Monitor refresh several times slower than drawing the data itself.
_GRID = {"gridcolor": "#eceff1", "zerolinecolor": "#dee2e6", "linecolor": "#ced4da"}
TEMPLATE = go.layout.Template(layout={"paper_bgcolor": "white", "plot_bgcolor": "white", "colorway": PALETTE,
                                      "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#343a40"},
                                      "xaxis": _GRID, "yaxis": _GRID})


def downsample(x, y, max_points: int = MAX_POINTS):
    """(x, y, bucket) with at most `max_points` points: means of equal buckets of consecutive points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points:
        return x, y, 1
    bucket = math.ceil(n / max_points)
    starts = np.arange(0, n, bucket)
    counts = np.diff(np.append(starts, n))
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts, bucket


def ema(y, weight: float) -> np.ndarray:
    """TensorBoard-style smoothing: s[i] = w * s[i-1] + (1 - w) * y[i], started at y[0]."""
    y = np.asarray(y, dtype=float)
    if weight <= 0 or len(y) < 2:
        return y
    out = np.empty_like(y)
    last = y[0]
    for i, v in enumerate(y.tolist()):
        last = weight * last + (1 - weight) * v
        out[i] = last
    return out


def stage_spans(columns) -> list[tuple[float, float, str]]:
    """(from, to, stage) of each stage's stretch of the timeline, in order; one open span without stages."""
    stages = list(getattr(columns, "stages", []) or [])
    starts = [(-math.inf, stages[0] if stages else ""), *getattr(columns, "stage_starts", [])]
    ends = [x for x, _ in starts[1:]] + [math.inf]
    return [(lo, hi, stage) for (lo, stage), hi in zip(starts, ends, strict=True)]


def stage_series(columns, key: str, smoothing: float = 0.0, max_points: int = MAX_POINTS):
    """[(stage, (x, y_raw, y_smoothed))] for each stage that logged `key`, each bucketed and smoothed on its
    own points only, or None when the metric was never logged. The point budget is shared by the stages in
    proportion to their points."""
    got = columns.get(key)
    if got is None:
        return None
    x, y = np.asarray(got[0], dtype=float), np.asarray(got[1], dtype=float)
    masks = [(stage, (x >= lo) & (x < hi)) for lo, hi, stage in stage_spans(columns)]
    masks = [(stage, m) for stage, m in masks if m.any()]
    out = []
    for stage, m in masks:
        share = max_points if len(x) <= max_points else max(1, int(max_points * m.sum() / len(x)))
        sx, sy, bucket = downsample(x[m], y[m], share)
        out.append((stage, (sx, sy, ema(sy, smoothing ** bucket if smoothing > 0 else 0.0))))
    return out or None


def series(columns, key: str, smoothing: float = 0.0, max_points: int = MAX_POINTS):
    """(x, y_raw, y_smoothed) ready to plot, or None when the metric was never logged; the stages' curves
    (see stage_series) one after another."""
    parts = stage_series(columns, key, smoothing, max_points)
    if parts is None:
        return None
    if len(parts) == 1:
        return parts[0][1]
    return tuple(np.concatenate([p[1][i] for p in parts]) for i in range(3))


def _base(title: str, revision: str, y_title: str = "", height: int = HEIGHT) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}}, template=TEMPLATE, height=height,
        margin={"l": 55, "r": 60, "t": 40, "b": 50}, hovermode="x unified",
        # Below the axis: a legend above the plot collides with the title once a run has several graders.
        # The x axis has no title (it would collide with a two-line legend): it is the step, said once above.
        legend={"orientation": "h", "y": -0.1, "yanchor": "top", "x": 0, "font": {"size": 11}},
        # Same uirevision across refreshes: a person's zoom and hidden legend entries survive a redraw.
        uirevision=revision or "run", yaxis_title=y_title)
    return fig


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"color": GREY, "size": 12})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def empty_figure(title: str, text: str) -> go.Figure:
    """A placeholder panel that says why it is empty."""
    return _empty(_base(title, "empty"), text)


def mark_stages(fig: go.Figure, columns) -> go.Figure:
    """A dashed line and a label where each later stage (RFT after SFT) begins. Also the last touch of every
    panel: a curve of one or two points gets markers, since a line through one point draws nothing."""
    for trace in fig.data:
        if getattr(trace, "mode", None) == "lines" and not getattr(trace, "fill", None) \
                and trace.x is not None and len(trace.x) <= 2:
            trace.mode = "lines+markers"
    for x, stage in getattr(columns, "stage_starts", []):
        fig.add_shape(type="line", x0=x, x1=x, xref="x", yref="paper", y0=0, y1=1,
                      line={"dash": "dash", "color": GREY, "width": 1})
        fig.add_annotation(x=x, y=1, xref="x", yref="paper", text=f"{stage.upper()} starts", showarrow=False,
                           xanchor="left", yanchor="top", font={"size": 10, "color": GREY})
    return fig


def _line(fig, s, name, color, smoothing, width=2, raw_ghost=True, **kw):
    """A curve; with smoothing on, the raw values stay as a faint line behind the smoothed one."""
    x, raw, smooth = s
    if smoothing > 0 and raw_ghost:
        fig.add_trace(go.Scatter(x=x, y=raw, mode="lines", name=f"{name} (raw)", showlegend=False,
                                 line={"color": color, "width": 1}, opacity=0.25, hoverinfo="skip", **kw))
    fig.add_trace(go.Scatter(x=x, y=smooth, mode="lines", name=name, line={"color": color, "width": width}, **kw))


def loss_figure(columns, smoothing=0.0, log_y=False, revision="", max_points=MAX_POINTS) -> go.Figure:
    fig = _base("Training loss", revision, "loss")
    parts = stage_series(columns, "loss", smoothing, max_points)
    if parts is None:
        return _empty(fig, "No loss logged yet.")
    # SFT's cross-entropy and GRPO's policy loss are different quantities: one curve per stage.
    stages = list(getattr(columns, "stages", []) or [])
    for stage, s in parts:
        color = PALETTE[stages.index(stage) % len(PALETTE)] if stage in stages else PALETTE[0]
        _line(fig, s, f"{stage.upper()} loss" if stage else "loss", color, smoothing)
    if "rft" in stages:
        # The question TRL's issues get most about GRPO: its loss is ~0 on purpose (the advantages of a group
        # average to zero), so a flat zero is not a stalled run.
        fig.update_layout(title_subtitle_text=RFT_LOSS_NOTE, title_subtitle_font={"size": 11, "color": GREY},
                          margin={"t": 58})
    if log_y:
        fig.update_yaxes(type="log")
    return mark_stages(fig, columns)


RFT_LOSS_NOTE = ("RFT (GRPO) loss stays near 0 by design: it is not a measure of progress. "
                 "Watch the reward curve.")


def reward_figure(columns, smoothing=0.0, revision="", max_points=MAX_POINTS) -> go.Figure:
    fig = _base("Reward: mean ± std, per grader, eval", revision, "reward")
    s = series(columns, "reward", smoothing, max_points)
    if s is None:
        return mark_stages(_empty(fig, "No reward yet: rewards come from the graders in the RFT stage."), columns)
    x, raw, smooth = s
    std = series(columns, "reward_std", smoothing, max_points)
    if std is not None:
        sd = np.interp(x, std[0], std[2])
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([smooth + sd, (smooth - sd)[::-1]]),
                                 fill="toself", mode="lines", line={"width": 0}, fillcolor="rgba(59,91,219,0.12)",
                                 name="± std", hoverinfo="skip"))
    _line(fig, s, "reward (weighted sum)", BLUE, smoothing, width=3)
    for i, key in enumerate(sorted(k for k in columns.keys("rewards/") if k.endswith("/mean"))):
        g = series(columns, key, smoothing, max_points)
        _line(fig, g, key.split("/")[1], PALETTE[(i + 1) % len(PALETTE)], smoothing, width=1.5, raw_ghost=False)
    ev = columns.get("eval_reward")
    if ev is not None:
        fig.add_trace(go.Scatter(x=ev[0], y=ev[1], mode="lines+markers", name="eval reward (held out)",
                                 line={"color": "#e8590c", "dash": "dot", "width": 2}, marker={"size": 7}))
    for i, key in enumerate(sorted(k for k in columns.keys("eval_rewards/") if k.endswith("/mean"))):
        e = columns.get(key)
        fig.add_trace(go.Scatter(x=e[0], y=e[1], mode="lines+markers", name=f"eval {key.split('/')[1]}",
                                 visible="legendonly", line={"dash": "dot", "color": PALETTE[(i + 1) % 8]}))
    return mark_stages(fig, columns)


def _two_axes(title, revision, left, right, columns, smoothing, max_points, empty, log_left=False,
              right_pct=False) -> go.Figure:
    """Two metrics with different units: `left` on the left axis, `right` on the right one."""
    fig = _base(title, revision, left[1])
    got = False
    for (key, label), color, axis in ((left, BLUE, "y"), (right, "#e8590c", "y2")):
        s = series(columns, key, smoothing, max_points)
        if s is not None:
            got = True
            _line(fig, s, label, color, smoothing, yaxis=axis)
    if not got:
        return mark_stages(_empty(fig, empty), columns)
    fig.update_layout(yaxis2={"title": {"text": right[1], "standoff": 2}, "overlaying": "y", "side": "right",
                              "showgrid": False, **({"tickformat": ".0%", "rangemode": "tozero"} if right_pct else {})},
                      margin={"r": 80})
    if log_left:
        fig.update_layout(yaxis_type="log")
    return mark_stages(fig, columns)


def kl_figure(columns, smoothing=0.0, log_y=False, revision="", max_points=MAX_POINTS) -> go.Figure:
    return _two_axes("KL to the start model, and entropy", revision, ("kl", "KL"), ("entropy", "entropy"), columns,
                     smoothing, max_points, "No KL or entropy yet (RFT only; KL needs rft.beta > 0).", log_left=log_y)


def length_figure(columns, smoothing=0.0, revision="", max_points=MAX_POINTS) -> go.Figure:
    return _two_axes("Completion length and share cut off", revision, ("completions/mean_length", "mean tokens"),
                     ("completions/clipped_ratio", "cut off at max length"), columns, smoothing, max_points,
                     "No completions yet (RFT only).", right_pct=True)


def signal_figure(columns, smoothing=0.0, revision="", max_points=MAX_POINTS) -> go.Figure:
    fig = _base("Learning signal: groups with no spread, grader errors", revision, "share")
    got = False
    for key, label, color in (("frac_reward_zero_std", "groups where all scores are equal", "#ab63fa"),
                              ("graders/error_rate", "grades that failed", "#e03131")):
        s = series(columns, key, smoothing, max_points)
        if s is not None:
            got = True
            _line(fig, s, label, color, smoothing)
    # One dotted curve per grader that ever failed, so the failing one is named, not only the total.
    per_grader = sorted(k for k in columns.keys("graders/") if k.endswith("/error_rate") and k.count("/") == 2)
    for i, key in enumerate(per_grader):
        s = series(columns, key, smoothing, max_points)
        if s is not None and s[1].max(initial=0) > 0:
            fig.add_trace(go.Scatter(x=s[0], y=s[2], mode="lines", name=f"{key.split('/')[1]} errors",
                                     line={"color": PALETTE[(i + 3) % len(PALETTE)], "width": 1.5, "dash": "dot"}))
    if not got:
        return mark_stages(_empty(fig, "No groups yet (RFT only)."), columns)
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02])
    return mark_stages(fig, columns)


def time_figure(columns, revision="", max_points=MAX_POINTS) -> go.Figure:
    fig = _base("Seconds per step: generation, grading, training", revision, "seconds")
    got = False
    for key, label, color in (("time/generation_s", "generation", "#19d3f3"), ("time/grading_s", "grading", "#ffa15a"),
                              ("time/training_s", "training", "#636efa")):
        s = series(columns, key, 0.0, max_points)
        if s is not None:
            got = True
            fig.add_trace(go.Scatter(x=s[0], y=s[1], mode="lines", name=label, stackgroup="time",
                                     line={"width": 0.5, "color": color}))
    if not got:
        return mark_stages(_empty(fig, "No step times yet."), columns)
    return mark_stages(fig, columns)


def memory_figure(columns, revision="", max_points=MAX_POINTS) -> go.Figure:
    fig = _base("Peak memory (GPU allocator on CUDA, process RSS on CPU)", revision, "GB")
    s = series(columns, "memory/peak_gb", 0.0, max_points)
    if s is None:
        return mark_stages(_empty(fig, "No memory readings yet."), columns)
    fig.add_trace(go.Scatter(x=s[0], y=s[1], mode="lines", name="peak GB", line={"color": "#2f9e44"}))
    fig.update_yaxes(rangemode="tozero")
    return mark_stages(fig, columns)


PANELS = ("loss", "reward", "kl", "length", "signal", "time", "memory")


def monitor_figures(columns, smoothing: float = 0.0, log_y: bool = False, revision: str = "",
                    max_points: int = MAX_POINTS) -> dict[str, go.Figure]:
    """Every Monitor panel, keyed by PANELS."""
    sm = min(max(float(smoothing or 0.0), 0.0), 0.999)
    return {"loss": loss_figure(columns, sm, log_y, revision, max_points),
            "reward": reward_figure(columns, sm, revision, max_points),
            "kl": kl_figure(columns, sm, log_y, revision, max_points),
            "length": length_figure(columns, sm, revision, max_points),
            "signal": signal_figure(columns, sm, revision, max_points),
            "time": time_figure(columns, revision, max_points),
            "memory": memory_figure(columns, revision, max_points)}


def compare_figure(runs: list[tuple[str, object]], metric: str, smoothing: float = 0.0,
                   max_points: int = MAX_POINTS) -> go.Figure:
    """One metric of several runs overlaid; `runs` is [(label, columns)]."""
    fig = _base(f"{metric} across runs", "compare", metric, height=360)
    for i, (label, columns) in enumerate(runs):
        s = series(columns, metric, smoothing, max_points)
        if s is not None:
            _line(fig, s, label, PALETTE[i % len(PALETTE)], smoothing)
    if not fig.data:
        return _empty(fig, f"None of the selected runs logged `{metric}`.")
    return fig


def eval_bar_figure(results: dict) -> go.Figure:
    """Grouped bars: one group per grader (and the weighted total), one bar per model (base, SFT, RFT)."""
    fig = _base("Held-out scores by model", "eval", "mean score", height=340)
    fig.update_layout(hovermode="closest", xaxis_title="", barmode="group")
    models = results.get("models") or {}
    graders = [g["name"] for g in results.get("graders", [])] + ["total"]
    for i, (key, m) in enumerate(models.items()):
        ys = [m["scores"].get(g) if g != "total" else m.get("total") for g in graders]
        fig.add_trace(go.Bar(x=graders, y=ys, name=m.get("label", key), marker_color=PALETTE[i % len(PALETTE)],
                             text=[f"{v:.2f}" if v is not None else "" for v in ys], textposition="outside"))
    if not models:
        return _empty(fig, "No evaluation yet.")
    top = max([v for t in fig.data for v in t.y if v is not None] or [1.0])
    fig.update_yaxes(range=[0, max(top, 0.01) * 1.18])  # room for the value labels above the bars
    return fig


HELDOUT = "heldout/"
HELDOUT_TOTAL = "heldout/reward"
HELDOUT_TITLE = "Held-out score (greedy answers to the eval split)"


def heldout_figure(columns, revision: str = "") -> go.Figure:
    """The `heldout/<grader>` curves (`eval.every_steps`): greedy answers to the same held-out rows, scored at
    the start (base model), every N steps and at the end of each stage, on the run_step timeline. Unlike the
    sampled train reward it shows what the model answers when asked, so this is where learning shows."""
    fig = _base(HELDOUT_TITLE, revision, "mean score")
    graders = [k for k in columns.keys(HELDOUT) if k != HELDOUT_TOTAL]
    if not graders:
        return mark_stages(_empty(fig, "No held-out scores: set `eval.every_steps` (the demo does) to score the "
                                       "eval split during training."), columns)
    for i, key in enumerate(graders):
        _line(fig, series(columns, key), key[len(HELDOUT):], PALETTE[i % len(PALETTE)], 0.0)
        fig.data[-1].mode = "lines+markers"  # sparse points: each one is a scoring of the whole split
    if len(graders) > 1 and columns.get(HELDOUT_TOTAL) is not None:
        _line(fig, series(columns, HELDOUT_TOTAL), "reward (weighted sum)", BLUE, 0.0, width=3, raw_ghost=False)
        fig.data[-1].update(mode="lines+markers", line={"dash": "dot", "color": BLUE, "width": 2})
    top = max(float(np.nanmax(t.y)) for t in fig.data)
    fig.update_yaxes(range=[-0.02, max(1.0, top) + 0.05])
    return mark_stages(fig, columns)


def heldout_table(columns) -> dict:
    """{"headers", "data"}: each held-out score of the base model (the first point, when it is step 0), after
    SFT and after RFT (each stage's last point so far), one row per grader, the weighted reward and the step of
    each column; empty data when the run logged none. At the end of an SFT -> RFT run this is its base / SFT / RFT comparison."""
    keys = [k for k in columns.keys(HELDOUT) if k != HELDOUT_TOTAL]
    if columns.get(HELDOUT_TOTAL) is not None:
        keys.append(HELDOUT_TOTAL)
    if not keys:
        return {"headers": ["score"], "data": []}
    x0 = columns.get(keys[0])[0]
    stages = list(getattr(columns, "stages", [])) or ["sft"]
    edges = [-math.inf, *(b for b, _ in getattr(columns, "stage_starts", [])), math.inf]
    picks = []  # (header, the point's x) for each column of the table
    if x0[0] == 0:
        picks.append(("base model", 0.0))
    for i, stage in enumerate(stages[:len(edges) - 1]):
        inside = x0[(x0 > edges[i]) & (x0 < edges[i + 1]) & (x0 > 0)]
        if len(inside):
            picks.append((f"after {stage.upper()}", float(inside[-1])))
    data = []
    for key in keys:
        x, y = columns.get(key)
        values = {float(a): float(b) for a, b in zip(x, y)}
        name = "reward (weighted)" if key == HELDOUT_TOTAL else key[len(HELDOUT):]
        data.append([name, *(f"{values[px]:.3f}" if px in values else "" for _h, px in picks)])
    # Short headers keep the table narrow beside its chart; the steps (the chart's x) go in a row of their own.
    data.append(["at step", *(str(int(px)) for _h, px in picks)])
    return {"headers": ["score", *(h for h, _ in picks)], "data": data}
