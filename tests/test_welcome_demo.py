"""The "Try the demo" button: one click launches the demo run, opens the Monitor on it and loads its project;
a second click while the demo is on its way shows that demo instead of queueing a copy; behind another run the
demo waits in the queue and says its place."""

import time

import gradio as gr

from finetuner.config import load_config, portable_config, to_dict
from finetuner.runs import cancel, force_stop, list_runs, open_run, pid_alive, wait
from finetuner.ui import welcome
from finetuner.ui.context import AppContext


def test_try_the_demo_launches_it_and_a_second_click_shows_the_same_run(tmp_path, monkeypatch):
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
        _project, again, _tabs = welcome.start_demo(ctx)
        assert again == run_id and "already" in said[0] and run_id in said[0]
        assert [r["id"] for r in list_runs(ctx.runs_dir)] == [run_id]  # no copy queued
        other = to_dict(demo)
        other.update(name="other")
        from finetuner.config import from_dict
        from finetuner.runs import enqueue

        blocker = enqueue(from_dict(other, base_dir=str(welcome.EXAMPLE)), ctx.runs_dir)  # waits behind the demo
        assert blocker.read_status()["state"] == "waiting"
        cancel(ctx.runs_dir, blocker.id)
    finally:
        force_stop(run)
        wait(run, timeout=30)
    deadline = time.time() + 15
    while pid_alive(run.read_status()["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert ctx.active_run() is None
