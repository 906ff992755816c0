"""Held-out score during training (`eval.every_steps`, training/heldout_callback.py) and the Monitor's chart and
base / SFT / RFT table built from it (figures.heldout_figure / heldout_table, tab_monitor.view)."""

import json
import os
import time

import pytest

from finetuner.demo import arith
from finetuner.config import from_dict, load_config, save_config
from graders.errors import ConfigError
from finetuner.runs import RunFolder, new_run
from finetuner.ui import figures, run_watch, tab_monitor
from finetuner.ui.context import AppContext
from finetuner.ui.welcome import EXAMPLE

NO_FILTER = ("", "", "all", "all", "total", "", "", "")


def columns_of(rows):
    cols = run_watch.MetricColumns()
    cols.add(rows)
    return cols


def heldout_row(stage, step, offset, correct, fmt):
    return {"stage": stage, "step": step, "run_step": offset + step, "time": 1.0, "heldout/correct": correct,
            "heldout/format": fmt, "heldout/reward": correct + 0.1 * fmt, "time/heldout_s": 0.4}


# An SFT (4 steps) -> RFT (4 steps) run as metrics.jsonl holds it: train rows between held-out rows.
CRAFTED = [heldout_row("sft", 0, 0, 0.0, 0.0), {"stage": "sft", "step": 1, "run_step": 1, "loss": 3.0},
           heldout_row("sft", 2, 0, 0.25, 0.5), {"stage": "sft", "step": 4, "run_step": 4, "loss": 1.0},
           heldout_row("sft", 4, 0, 0.5, 1.0), {"stage": "rft", "step": 1, "run_step": 5, "reward": 0.5},
           heldout_row("rft", 2, 4, 0.625, 1.0), heldout_row("rft", 4, 4, 0.75, 1.0)]


def test_config_section_is_off_by_default_checked_and_on_in_the_demo():
    base = {"data": {"train": "rows.jsonl"}}
    assert from_dict(base).eval.every_steps == 0
    cfg = from_dict({**base, "eval": {"every_steps": 5, "rows": 20}})
    assert (cfg.eval.every_steps, cfg.eval.rows) == (5, 20)
    with pytest.raises(ConfigError, match="`eval.rows` is 0"):
        from_dict({**base, "eval": {"rows": 0}})
    with pytest.raises(ConfigError, match="Did you mean `every_steps`"):
        from_dict({**base, "eval": {"every_step": 5}})
    demo = load_config(EXAMPLE / "run.yaml")
    assert demo.eval.every_steps > 0 and demo.eval.rows == 200


def test_figure_and_table_from_crafted_metrics():
    cols = columns_of(CRAFTED)
    fig = figures.heldout_figure(cols, "r")
    assert [t.name for t in fig.data] == ["correct", "format", "reward (weighted sum)"]
    assert list(fig.data[0].x) == [0, 2, 4, 6, 8] and list(fig.data[0].y) == [0.0, 0.25, 0.5, 0.625, 0.75]
    assert all(t.mode == "lines+markers" for t in fig.data)
    assert [s.x0 for s in fig.layout.shapes] == [4.5]  # the RFT start mark
    table = figures.heldout_table(cols)
    assert table["headers"] == ["score", "base model", "after SFT", "after RFT"]
    assert table["data"] == [["correct", "0.000", "0.500", "0.750"], ["format", "0.000", "1.000", "1.000"],
                             ["reward (weighted)", "0.000", "0.600", "0.850"], ["at step", "0", "4", "8"]]
    # During SFT the table holds what there is so far; a run without held-out rows gets none.
    live = figures.heldout_table(columns_of(CRAFTED[:3]))
    assert live["headers"] == ["score", "base model", "after SFT"] and live["data"][-1] == ["at step", "0", "2"]
    plain = columns_of([r for r in CRAFTED if "loss" in r or "reward" in r and "heldout/reward" not in r])
    assert figures.heldout_table(plain)["data"] == []
    assert "eval.every_steps" in figures.heldout_figure(plain).layout.annotations[0].text


def test_monitor_shows_the_chart_and_table_only_for_a_run_that_has_them(tmp_path):
    ctx = AppContext(tmp_path)
    for name, rows in (("with", CRAFTED), ("without", [r for r in CRAFTED if "heldout/correct" not in r])):
        run = RunFolder(tmp_path / name)
        run.path.mkdir()
        run.config_path.write_text("name: r\n")
        run.write_status(state="finished", pid=os.getpid(), name=name, method="sft+rft", stages=["sft", "rft"],
                         stage="rft", step=4, total=4, started=time.time() - 60, created=time.time())
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = tab_monitor.view(ctx, tab_monitor.MonitorRequest("with", 0.0), force=True)
    assert shown["heldout"]["visible"] is True and shown["heldout_table"]["visible"] is True
    assert [t.name for t in shown["heldout"]["value"].data][:2] == ["correct", "format"]
    assert shown["heldout_table"]["value"]["data"][0] == ["correct", "0.000", "0.500", "0.750"]
    hidden = tab_monitor.view(ctx, tab_monitor.MonitorRequest("without", 0.0), force=True)
    assert hidden["heldout"]["visible"] is False and hidden["heldout_table"]["visible"] is False
    assert len(tab_monitor.render(ctx, "with", 0.0, False, True, *NO_FILTER)) == len(tab_monitor.OUTPUTS)


@pytest.mark.slow
def test_a_real_run_logs_heldout_scores_at_base_mid_and_end_of_each_stage(tmp_path):
    from finetuner.evaluation.heldout import evaluate_run
    from finetuner.training.stages import train_run
    from test_train import EXACT, PY_GRADER, make_cfg, write_jsonl

    sft = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
           for r in arith.rft_rows(48, seed=5)]
    files = {"sft": write_jsonl(tmp_path / "sft.jsonl", sft),
             "eval": write_jsonl(tmp_path / "eval.jsonl", [{**r, "completion": f"Answer: {r['answer']}"}
                                                           for r in arith.eval_rows(8)])}
    cfg = make_cfg(files, method="sft+rft", sft={"max_steps": 5, "learning_rate": 3e-3}, rft={"max_steps": 4},
                   eval={"every_steps": 2, "rows": 6})
    run = new_run(tmp_path / "runs", "heldout")
    save_config(cfg, run.config_path)
    status = train_run(cfg, run)
    assert status["state"] == "finished", status.get("error")
    metrics = run.metrics()
    rows = [m for m in metrics if "heldout/reward" in m]
    # SFT: base (step 0), every 2 steps, its end (5); RFT: every 2 steps, its end (4 = a multiple: once).
    assert [(m["stage"], m["step"], m["run_step"]) for m in rows] == [
        ("sft", 0, 0), ("sft", 2, 2), ("sft", 4, 4), ("sft", 5, 5), ("rft", 2, 7), ("rft", 4, 9)]
    for m in rows:
        assert 0.0 <= m["heldout/digits"] <= 1.0 and 0.0 <= m["heldout/exact"] <= 1.0 and m["time/heldout_s"] > 0
        assert m["heldout/reward"] == pytest.approx(m["heldout/digits"] + m["heldout/exact"], abs=2e-4)
    # Training went on after each scoring (eval mode was switched back): every step's loss / reward is logged.
    assert [m["step"] for m in metrics if m.get("stage") == "sft" and "loss" in m] == [1, 2, 3, 4, 5]
    assert [m["step"] for m in metrics if m.get("stage") == "rft" and "reward" in m] == [1, 2, 3, 4]
    # Greedy, on the same rows, with the same graders as the Evaluate tab: base / SFT / RFT agree with it.
    results = evaluate_run(run, rows=6)["models"]
    for key, m in (("base", rows[0]), ("sft", rows[3]), ("rft", rows[-1])):
        assert results[key]["scores"]["digits"] == pytest.approx(m["heldout/digits"], abs=1e-3), key
        assert results[key]["scores"]["exact"] == pytest.approx(m["heldout/exact"], abs=1e-3), key
    cols = columns_of(metrics)
    fig = figures.heldout_figure(cols)
    assert [t.name for t in fig.data] == ["digits", "exact", "reward (weighted sum)"]
    assert list(fig.data[0].x) == [0, 2, 4, 5, 7, 9] and [s.x0 for s in fig.layout.shapes] == [5.5]
    table = figures.heldout_table(cols)
    assert table["headers"] == ["score", "base model", "after SFT", "after RFT"]
    assert [r[0] for r in table["data"]] == ["digits", "exact", "reward (weighted)", "at step"]
    assert table["data"][-1] == ["at step", "0", "5", "9"]
    assert table["data"][0][1:] == [f"{rows[i]['heldout/digits']:.3f}" for i in (0, 3, 5)]


@pytest.mark.slow
def test_a_stage_stopped_early_is_not_scored_at_its_end(tmp_path):
    import threading

    from finetuner.runs import request_stop
    from finetuner.training.stages import train_run
    from test_train import make_cfg, write_jsonl

    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
            for r in arith.rft_rows(48, seed=5)]
    files = {"sft": write_jsonl(tmp_path / "sft.jsonl", rows), "eval": write_jsonl(tmp_path / "eval.jsonl", rows[:6])}
    cfg = make_cfg(files, method="sft", sft={"max_steps": 5000, "save_steps": 10000},
                   eval={"every_steps": 10000, "rows": 4})
    run = new_run(tmp_path / "runs", "stopped")

    def stop_once_training():
        deadline = time.time() + 300
        while time.time() < deadline and not any("loss" in m for m in run.metrics()):
            time.sleep(0.05)
        request_stop(run)

    stopper = threading.Thread(target=stop_once_training)
    stopper.start()
    status = train_run(cfg, run)
    stopper.join()
    assert status["state"] == "stopped", status.get("error")
    # The base model was scored; the stop did not wait for a scoring of the half-trained model.
    assert [m["step"] for m in run.metrics() if "heldout/reward" in m] == [0]
