"""Monitor figures from synthetic metrics rows: the expected traces, the SFT -> RFT marker, downsampling,
smoothing, and the comparison / evaluation charts."""

import numpy as np
import pytest

from finetuner.ui import figures
from finetuner.ui.run_watch import MetricColumns


def sft_rft_rows(sft=20, rft=30, graders=("correct", "format"), evals=(10, 20, 30)):
    rows = []
    for s in range(1, sft + 1):
        rows.append({"stage": "sft", "step": s, "run_step": s, "time": s, "loss": 3.0 / s, "entropy": 1.0,
                     "time/step_s": 0.1, "time/training_s": 0.1, "memory/peak_gb": 0.7})
    for s in range(1, rft + 1):
        row = {"stage": "rft", "step": s, "run_step": sft + s, "time": 100 + s, "loss": 0.01, "reward": s / rft,
               "reward_std": 0.2, "kl": 0.01 * s, "entropy": 0.5, "completions/mean_length": 10.0,
               "completions/clipped_ratio": 0.05, "frac_reward_zero_std": 0.1, "graders/error_rate": 0.0,
               "time/step_s": 1.0, "time/generation_s": 0.6, "time/grading_s": 0.1, "time/training_s": 0.3,
               "memory/peak_gb": 0.9}
        for g in graders:
            row[f"rewards/{g}/mean"] = s / rft / 2
            row[f"graders/{g}/errors"] = 0
        rows.append(row)
        if s in evals:
            rows.append({"stage": "rft", "step": s, "run_step": sft + s, "time": 100 + s, "eval_reward": 0.5,
                         **{f"eval_rewards/{g}/mean": 0.4 for g in graders}})
    return rows


def columns(rows):
    cols = MetricColumns()
    cols.add(rows)
    return cols


def names(fig):
    return [t.name for t in fig.data]


def test_every_panel_has_its_traces_and_the_stage_marker():
    cols = columns(sft_rft_rows())
    assert cols.stage_starts == [(20.5, "rft")]
    figs = figures.monitor_figures(cols, smoothing=0.0, revision="r1")
    assert set(figs) == set(figures.PANELS)
    assert names(figs["loss"]) == ["SFT loss", "RFT loss"]
    reward = names(figs["reward"])
    assert reward[:2] == ["± std", "reward (weighted sum)"]
    assert {"correct", "format", "eval reward (held out)", "eval correct", "eval format"} <= set(reward)
    assert names(figs["kl"]) == ["KL", "entropy"]
    assert names(figs["length"]) == ["mean tokens", "cut off at max length"]
    assert names(figs["time"]) == ["generation", "grading", "training"]
    assert all(t.stackgroup == "time" for t in figs["time"].data)
    for name, fig in figs.items():
        # the dashed line at the boundary and its label, on every timeline
        assert [s.x0 for s in fig.layout.shapes] == [20.5], name
        assert any(a.text == "RFT starts" for a in fig.layout.annotations), name
        assert fig.layout.uirevision == "r1"
    # the std band surrounds the mean
    band, mean = figs["reward"].data[0], figs["reward"].data[1]
    assert max(band.y) > max(mean.y) and min(band.y) < min(mean.y)


def test_loss_curve_splits_by_stage_and_log_scale_applies():
    figs = figures.monitor_figures(columns(sft_rft_rows()), log_y=True)
    sft, rft = figs["loss"].data
    assert max(sft.x) <= 20 < min(rft.x)
    assert figs["loss"].layout.yaxis.type == "log" and figs["kl"].layout.yaxis.type == "log"


def test_sft_only_run_explains_the_empty_panels():
    figs = figures.monitor_figures(columns(sft_rft_rows(rft=0)))
    assert names(figs["loss"]) == ["SFT loss"]
    assert not figs["reward"].data and "RFT stage" in figs["reward"].layout.annotations[0].text
    assert not figs["reward"].layout.shapes  # no stage change yet


def test_long_series_are_downsampled_and_smoothed():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000) + np.random.default_rng(0).normal(0, 0.5, len(x))
    dx, dy, bucket = figures.downsample(x, y, 2000)
    assert len(dx) <= 2000 and bucket == 50
    assert dx[0] == np.mean(x[:50]) and abs(dy.mean() - y.mean()) < 1e-9
    smooth = figures.ema(dy, 0.9)
    assert smooth.std() < dy.std() and smooth[0] == pytest.approx(dy[0])
    cols = columns([{"stage": "rft", "step": i, "run_step": i, "reward": float(v)} for i, v in enumerate(y, 1)])
    fig = figures.reward_figure(cols, smoothing=0.6)
    assert all(len(t.x) <= 2000 for t in fig.data)
    ghost, line = fig.data[0], fig.data[1]  # raw curve kept faint behind the smoothed one
    assert ghost.opacity < 1 and line.name == "reward (weighted sum)"


def test_compare_and_eval_bar_figures():
    a, b = columns(sft_rft_rows()), columns(sft_rft_rows(sft=5))
    fig = figures.compare_figure([("run-a", a), ("run-b", b)], "reward")
    assert names(fig) == ["run-a", "run-b"]
    assert not figures.compare_figure([("run-a", a)], "nope").data
    results = {"graders": [{"name": "correct", "weight": 1.0}],
               "models": {"base": {"label": "Base model", "scores": {"correct": 0.1}, "total": 0.1},
                          "rft": {"label": "After RFT", "scores": {"correct": 0.8}, "total": 0.8}}}
    bars = figures.eval_bar_figure(results)
    assert names(bars) == ["Base model", "After RFT"] and list(bars.data[1].x) == ["correct", "total"]
    assert list(bars.data[1].y) == [0.8, 0.8]


def test_a_curve_of_one_point_is_drawn_with_a_marker():
    # The first logged step must be visible, not an empty panel.
    import plotly.graph_objects as go

    from finetuner.ui.figures import mark_stages

    fig = go.Figure([go.Scatter(x=[1], y=[0.5], mode="lines"), go.Scatter(x=[1, 2, 3], y=[1, 2, 3], mode="lines")])
    fig = mark_stages(fig, None)
    assert fig.data[0].mode == "lines+markers" and fig.data[1].mode == "lines"
