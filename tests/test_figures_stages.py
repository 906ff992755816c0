"""Issue 10 item 5: smoothing and bucketing restart at each stage, so an SFT-then-RFT run's RFT curve is
drawn from RFT's points only, and the loss chart says why GRPO's loss sits near zero."""

import numpy as np
import pytest

from finetuner.ui.figures import RFT_LOSS_NOTE, loss_figure, reward_figure, series, stage_series
from finetuner.ui.run_watch import MetricColumns

SFT_STEPS, RFT_STEPS = 60, 40


def sft_then_rft(sft_steps=SFT_STEPS, rft_steps=RFT_STEPS) -> MetricColumns:
    """Rows as the trainer writes them: SFT's loss decays from ~3.2, every RFT loss is exactly 0.0."""
    rows = [{"stage": "sft", "step": s, "run_step": s, "loss": 0.2 + 3.0 * np.exp(-s / 15)}
            for s in range(1, sft_steps + 1)]
    rows += [{"stage": "rft", "step": s, "run_step": sft_steps + s, "loss": 0.0, "reward": 0.2 + 0.01 * s}
             for s in range(1, rft_steps + 1)]
    cols = MetricColumns()
    cols.add(rows)
    return cols


def traces(fig, name):
    return [t for t in fig.data if t.name == name]


@pytest.mark.parametrize("max_points", [2000, 17])  # every point, and buckets of several points
def test_rft_smoothed_loss_is_its_own_zeros(max_points):
    fig = loss_figure(sft_then_rft(), smoothing=0.95, max_points=max_points)
    (rft,) = traces(fig, "RFT loss")
    assert len(rft.y) > 0 and np.all(np.asarray(rft.y) == 0.0)  # no decay carried over from SFT
    assert min(rft.x) > SFT_STEPS  # and no SFT point leaked into RFT's bucket
    (sft,) = traces(fig, "SFT loss")
    assert max(sft.x) <= SFT_STEPS and sft.y[-1] > 0.2  # SFT's curve still smoothed (lags its raw decay)


def test_first_smoothed_point_of_each_stage_is_its_first_raw_point():
    fig = loss_figure(sft_then_rft(), smoothing=0.9, max_points=23)
    for stage in ("SFT", "RFT"):
        (smooth,) = traces(fig, f"{stage} loss")
        (raw,) = traces(fig, f"{stage} loss (raw)")
        assert smooth.y[0] == pytest.approx(raw.y[0])
        assert list(smooth.x) == list(raw.x)
    # Later SFT points are smoothed (differ from raw), so the check above is not trivially true.
    (smooth,), (raw,) = traces(fig, "SFT loss"), traces(fig, "SFT loss (raw)")
    assert smooth.y[5] > raw.y[5]


def test_series_smooths_each_stage_on_its_own():
    cols = sft_then_rft()
    parts = stage_series(cols, "loss", smoothing=0.99)
    assert [stage for stage, _ in parts] == ["sft", "rft"]
    x, raw, smooth = series(cols, "loss", smoothing=0.99)
    assert len(x) == SFT_STEPS + RFT_STEPS and np.all(smooth[SFT_STEPS:] == 0.0)
    assert smooth[SFT_STEPS - 1] > 1.0  # heavy smoothing keeps SFT high, and none of it reaches RFT
    # The budget is shared: both stages keep points when the run is cut to a few.
    few = stage_series(cols, "loss", smoothing=0.5, max_points=10)
    assert all(len(s[0]) >= 1 for _, s in few) and sum(len(s[0]) for _, s in few) <= 10


def test_reward_of_the_rft_stage_starts_at_its_first_value():
    fig = reward_figure(sft_then_rft(), smoothing=0.9)
    (reward,) = traces(fig, "reward (weighted sum)")
    assert reward.y[0] == pytest.approx(0.21) and min(reward.x) == SFT_STEPS + 1


def test_loss_chart_explains_grpo_loss_when_rft_is_present():
    fig = loss_figure(sft_then_rft(), smoothing=0.6)
    assert fig.layout.title.subtitle.text == RFT_LOSS_NOTE
    assert "near 0 by design" in RFT_LOSS_NOTE and "reward" in RFT_LOSS_NOTE
    only_sft = MetricColumns()
    only_sft.add([{"stage": "sft", "step": s, "run_step": s, "loss": 1.0 / s} for s in range(1, 5)])
    assert not loss_figure(only_sft).layout.title.subtitle.text


def test_rows_without_stages_still_draw_one_curve():
    cols = MetricColumns()
    cols.add([{"step": s, "loss": 2.0 / s} for s in range(1, 30)])
    fig = loss_figure(cols, smoothing=0.5)
    (curve,) = traces(fig, "loss")
    assert len(curve.y) == 29 and curve.y[0] == pytest.approx(2.0)
