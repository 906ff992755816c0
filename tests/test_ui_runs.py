"""Runs tab without a browser: the history table from run folders, opening a run in another tab, comparing
runs (curves and config diff), resume and delete rules."""

import json
import os
import time

import pytest

from graders.errors import RunError
from finetuner.runs import RunFolder
from finetuner.ui import tab_runs
from finetuner.ui.context import AppContext


def make_run(root, name, state="finished", lr=0.001, pid=None, metrics=()):
    run = RunFolder(root / name)
    run.path.mkdir(parents=True)
    run.config_path.write_text(f"name: {name}\nmethod: sft+rft\nmodel: {{name: tiny}}\n"
                               f"rft: {{learning_rate: {lr}, max_steps: 10}}\ngraders:\n"
                               "- {name: j, type: score_model, api_key: sk-SECRETSECRETSECRET12, "
                               "api_key_env: KEY}\n")
    now = time.time()
    run.write_status(state=state, name=name, method="sft+rft", created=now, started=now - 90, finished=now,
                     run_step=len(metrics), pid=pid, error="Stopped by request at rft step 5." if state == "stopped"
                     else None)
    with open(run.metrics_path, "w") as fh:
        for row in metrics:
            fh.write(json.dumps(row) + "\n")
    return run


def curve(n, reward=0.5):
    return [{"stage": "rft", "step": s, "run_step": s, "loss": 1.0 / s, "reward": reward + s / 100} for s in
            range(1, n + 1)]


@pytest.fixture
def ctx(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    make_run(ctx.runs_dir, "a-run", metrics=curve(10), lr=0.001)
    time.sleep(0.01)
    make_run(ctx.runs_dir, "b-run", state="stopped", metrics=curve(5, 0.2), lr=0.002)
    return ctx


def test_history_table_reads_folders_newest_first(ctx):
    table, ids = tab_runs.runs_table(ctx)
    assert ids == ["b-run", "a-run"] and table["headers"] == tab_runs.HEADERS
    a = dict(zip(table["headers"], table["data"][1]))
    assert a["state"] == "finished" and a["model"] == "tiny" and a["steps"] == "10" and a["duration"] == "1m 30s"
    assert a["reward"] == "0.600" and a["loss"] == "0.100"
    b = dict(zip(table["headers"], table["data"][0]))
    assert b["state"] == "stopped" and b["note"].startswith("Stopped by request")
    # a fresh context (an app restart) sees the same history
    assert tab_runs.runs_table(AppContext(ctx.runs_dir))[1] == ids


def test_select_and_open_in_monitor(ctx):
    assert tab_runs.select_row(["b-run", "a-run"], 1) == "a-run"
    run_id, tabs = tab_runs.open_in(ctx, "monitor", "a-run")
    assert run_id == "a-run" and tabs.selected == "monitor"
    with pytest.raises(RunError):
        tab_runs.open_in(ctx, "monitor", "../escape")


def test_compare_overlays_curves_and_diffs_configs_without_secrets(ctx):
    fig, diff, metric = tab_runs.compare(ctx, ["a-run", "b-run"], None, 0.0)
    assert [t.name for t in fig.data] == ["a-run", "b-run"] and metric["value"] == "reward"
    assert metric["choices"][:2] == ["reward", "loss"]
    rows = {r[0]: r[1:] for r in diff["data"]}
    assert rows["rft.learning_rate"] == ["0.001", "0.002"] and rows["name"] == ["a-run", "b-run"]
    assert "model.name" not in rows  # equal fields are left out
    assert "SECRET" not in json.dumps(diff)
    fig, _diff, _m = tab_runs.compare(ctx, ["a-run", "b-run"], "loss", 0.5)
    assert fig.layout.title.text == "loss across runs"
    one, _diff, _m = tab_runs.compare(ctx, ["a-run"], None, 0.0)
    assert not one.data  # asks for a second run


def test_delete_refuses_an_active_run_and_removes_a_finished_one(ctx):
    make_run(ctx.runs_dir, "live", state="running", pid=os.getpid())  # this test process: alive
    with pytest.raises(RunError, match="Stop it first"):
        tab_runs.delete(ctx, "live")
    assert (ctx.runs_dir / "live").exists()
    confirm, table, ids, _sel, _chosen = tab_runs.delete(ctx, "a-run")
    assert confirm["visible"] is False and not (ctx.runs_dir / "a-run").exists() and "a-run" not in ids


def test_resume_rules(ctx):
    with pytest.raises(RunError, match="already finished"):
        tab_runs.resume(ctx, "a-run")
    make_run(ctx.runs_dir, "live", state="running", pid=os.getpid())
    with pytest.raises(RunError, match="one run at a time"):
        tab_runs.resume(ctx, "b-run")


def test_auto_refresh_only_sends_changes(ctx):
    out = tab_runs.auto_refresh(ctx, None)
    table = out[0]
    assert tab_runs.auto_refresh(ctx, table) == {"__type__": "update"}
