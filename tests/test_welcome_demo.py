"""The "Try the demo" button: one click launches the demo run, opens the Monitor on it and loads its project;
while a run trains a second demo waits in the queue and says its place."""

import time

import gradio as gr

from finetuner.config import load_config, portable_config, to_dict
from finetuner.runs import cancel, force_stop, list_runs, open_run, pid_alive, wait
from finetuner.ui import welcome
from finetuner.ui.context import AppContext


def test_try_the_demo_launches_it_and_queues_a_second_run(tmp_path, monkeypatch):
    ctx = AppContext(tmp_path / "runs")
    project, run_id, tabs = welcome.start_demo(ctx)
    run = open_run(ctx.runs_dir, run_id)
    try:
        assert isinstance(tabs, gr.Tabs) and tabs.selected == "monitor"
        assert project == welcome.demo_project()  # every tab gets the demo's data, graders and settings
        launched = load_config(run.config_path)
        demo = portable_config(load_config(welcome.EXAMPLE / "run.yaml"))
        assert to_dict(launched) == to_dict(demo) and launched.eval.every_steps > 0
        assert ctx.active_run()["id"] == run_id
        said = []
        monkeypatch.setattr(gr, "Info", said.append)
        _project, second, _tabs = welcome.start_demo(ctx)
        assert second != run_id and open_run(ctx.runs_dir, second).read_status()["state"] == "waiting"
        assert said and f"Queued: position 1, after `{run_id}`" in said[0]
        assert ctx.active_run()["id"] == run_id  # still one training
        cancel(ctx.runs_dir, second)
        assert [r["id"] for r in list_runs(ctx.runs_dir)] == [run_id]
    finally:
        force_stop(run)
        wait(run, timeout=30)
    deadline = time.time() + 15
    while pid_alive(run.read_status()["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert ctx.active_run() is None
