"""The Train tab's handlers (recommendation, run file, presets, launch and its refusal) and the whole app's
wiring: it builds, every control of the Data, Graders and Train tabs explains itself, and the "Try the demo"
chain of refreshers returns what its outputs expect."""

import os
import time

import gradio as gr
import pytest

from finetuner.config import load_config
from finetuner.runs import RunFolder, force_stop, pid_alive, wait
from finetuner.ui import build_app, tab_data, tab_graders, tab_train
from finetuner.ui.context import AppContext, Shared, new_project
from finetuner.ui.welcome import demo_project


@pytest.fixture
def ctx(tmp_path):
    return AppContext(tmp_path / "runs")


def values(project, **over):
    """The controls' values as the tab would send them, with some fields changed, then the two extras."""
    vals = dict(zip(tab_train.FIELDS, tab_train.form_values(project)))
    vals.update(over)
    return [*vals.values(), "detected", None]


def checked_demo():
    return tab_data.from_project(demo_project())[0]  # the demo after the Data tab checked it


def test_recommendation_follows_data_graders_and_the_base_model_test():
    assert "Check your data" in tab_train.recommendation_markdown(new_project(), "sft")
    project = checked_demo()
    text = tab_train.recommendation_markdown(project, "sft+rft")
    assert "Recommended: SFT then RFT" in text and "100-700x" in text and "claim" in text
    project["graders"] = []
    assert "Recommended: SFT." in tab_train.recommendation_markdown(project, "sft+rft")
    project = checked_demo()
    project["dry_run"] = {"source": "base", "mean": 0.0, "range": [0, 1.1]}
    text = tab_train.recommendation_markdown(project, "rft")
    assert "almost never passes" in text and "You chose RFT" in text
    assert tab_train.use_recommended(project) == {"value": "sft+rft", "__type__": "update"}


def test_preview_writes_the_exact_yaml_and_the_cli(ctx):
    project = checked_demo()
    rec, estimate, text, cli, download, message, _params = tab_train.preview(ctx, project, *values(project))
    assert text.startswith("name: arithmetic\nmethod: sft+rft\n") and "num_generations: 8" in text
    assert cli == "python -m finetuner train run.yaml" and message == ""
    saved = load_config(download["value"])  # the downloadable file is the run, field for field
    assert saved.rft.max_steps == 300 and [g["name"] for g in saved.graders] == ["correct", "format"]
    assert download["interactive"] is True
    assert "Fits" in estimate and "RFT KV cache" in estimate and "RFT per step (rough)" in estimate
    assert "Recommended" in rec


def test_invalid_settings_are_explained_and_block_the_download(ctx):
    project = checked_demo()
    out = tab_train.preview(ctx, project, *values(project, **{"rft.batch_size": 6}))
    text, download, message = out[2], out[4], out[5]
    assert message.startswith("❌ Not ready") and "multiple of `rft.num_generations`" in message
    assert text.startswith("# Not valid yet") and download == {"interactive": False, "__type__": "update"}
    empty = tab_train.preview(ctx, new_project(), *values(new_project()))
    assert "data.train" in empty[5] and "GB" in empty[1]  # the estimate shows before any data exists


def test_update_stores_the_settings_in_the_project():
    project = checked_demo()
    out = tab_train.update(project, *values(project, **{"model.name": "Qwen/Qwen2.5-0.5B-Instruct",
                                                         "adapter.r": 8}))
    assert out["config"]["model"]["name"] == "Qwen/Qwen2.5-0.5B-Instruct" and out["config"]["adapter"]["r"] == 8
    assert out["config"]["data"]["rft_train"].endswith("prompts.jsonl") and "graders" not in out["config"]
    assert tab_train.form_values(out)[tab_train.FIELDS.index("adapter.r")] == 8


def test_gpu_preset_and_estimate_against_a_gpu_size(ctx):
    project = checked_demo()
    updates = tab_train.apply_preset("12", *values(project)[:-2])
    by_name = dict(zip(tab_train.FIELDS, updates))
    assert by_name["rft.max_completion_length"]["value"] == 384 and by_name["sft.batch_size"]["value"] == 4
    assert by_name["name"] == {"__type__": "update"}  # untouched fields are skipped
    project["config"]["model"]["name"] = "Qwen/Qwen2.5-7B-Instruct"
    vals = values(project, **{"model.quantization": "none"})
    vals[-2] = "8"
    estimate = tab_train.preview(ctx, project, *vals)[1]
    assert "Will not fit" in estimate and "a 8 GB GPU" in estimate and "quantization" in estimate


def test_unknown_model_asks_for_its_size(ctx):
    project = checked_demo()
    vals = values(project, **{"model.name": "someone/private-model"})
    out = tab_train.preview(ctx, project, *vals)
    assert "parameter count" in out[1] and out[6] == {"visible": True, "__type__": "update"}
    vals[-1] = 1.5
    assert "1.50B parameters" in tab_train.preview(ctx, project, *vals)[1]


def test_launch_while_a_run_is_active_queues_it(ctx, monkeypatch):
    from finetuner.runs import cancel, queue

    monkeypatch.setattr(queue, "gpu_count", lambda: 0)  # one CPU slot, whatever this machine has
    busy = RunFolder(ctx.runs_dir / "busy-20250101-000000")
    busy.path.mkdir()
    busy.write_status(state="running", pid=os.getpid(), created=time.time())
    project = checked_demo()
    run_id, tabs, message = tab_train.launch(ctx, project, *values(project))
    assert isinstance(tabs, gr.Tabs) and tabs.selected == "monitor"  # the Monitor shows the waiting run
    assert "Queued: position 1, after `busy-20250101-000000` (training now)" in message
    status = RunFolder(ctx.runs_dir / run_id).read_status()
    assert status["state"] == "waiting" and "pid" not in status  # no process until the busy run ends
    cancel(ctx.runs_dir, run_id)


def test_launch_refuses_invalid_settings_and_bad_data(ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    project = checked_demo()
    assert "multiple" in tab_train.launch(ctx, project, *values(project, **{"rft.batch_size": 6}))[2]
    offline = tab_train.launch(ctx, project, *values(project, **{"model.name": "someone/not-downloaded"}))[2]
    assert "offline" in offline and "huggingface-cli download someone/not-downloaded" in offline
    project["data"]["ok"] = False
    assert "Data tab" in tab_train.launch(ctx, project, *values(project))[2]
    assert not any(p.is_dir() and p.name != "_uploads" for p in ctx.runs_dir.iterdir())  # nothing started


def test_launch_starts_a_run_and_opens_the_monitor(ctx):
    project = checked_demo()
    run_id, tabs, message = tab_train.launch(ctx, project, *values(
        project, method="sft", **{"sft.max_steps": 2, "name": "ui-launch"}))
    run = RunFolder(ctx.runs_dir / run_id)
    try:
        assert run_id.startswith("ui-launch-") and message.startswith("✅")
        assert isinstance(tabs, gr.Tabs) and tabs.selected == "monitor"
        cfg = load_config(run.config_path)
        assert cfg.method == "sft" and cfg.sft.max_steps == 2 and cfg.data.train.endswith("train.jsonl")
        status = run.read_status()
        assert status["state"] in ("queued", "running") and pid_alive(status["pid"])
        assert ctx.active_run()["id"] == run_id
    finally:
        force_stop(run)
        final = wait(run, timeout=30)
    assert final["state"] == "stopped"
    deadline = time.time() + 15
    while pid_alive(run.read_status()["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not pid_alive(run.read_status()["pid"]) and ctx.active_run() is None


def test_project_loaded_from_outside_sets_every_control(ctx):
    out = tab_train.from_project(ctx, checked_demo())
    n = len(tab_train.FIELDS)
    by_name = dict(zip(tab_train.FIELDS, out[:n]))
    assert by_name["name"] == "arithmetic" and by_name["method"] == "sft+rft" and by_name["rft.num_generations"] == 8
    sft_section, rft_section, recipe_box = out[n], out[n + 1], out[n + 2]
    assert sft_section["visible"] and rft_section["visible"] and recipe_box["visible"]
    assert "name: arithmetic" in out[n + 5]


def _in_tab(block, ids) -> bool:
    while block is not None:
        if isinstance(block, gr.Tab) and block.id in ids:
            return True
        block = getattr(block, "parent", None)
    return False


def test_whole_app_builds_and_every_control_explains_itself(ctx):
    demo = build_app(ctx)
    assert isinstance(demo, gr.Blocks)
    kinds = (gr.Textbox, gr.Number, gr.Dropdown, gr.Radio, gr.Checkbox, gr.CheckboxGroup, gr.Slider)
    controls = [b for b in demo.blocks.values() if isinstance(b, kinds) and _in_tab(b, ("data", "graders", "train"))]
    assert len(controls) > 60
    silent = [b.label for b in controls if not (getattr(b, "info", None) or "").strip()]
    assert silent == []
    for name in tab_train.FIELDS:  # the Train tab's help is the config's own help text
        assert tab_train.INFO[name][2]


def test_demo_chain_of_refreshers_fits_their_outputs(ctx):
    with gr.Blocks():
        shared = Shared(project=gr.State(new_project()), run_id=gr.State(""), tabs=gr.Tabs())
        for module in (tab_data, tab_graders, tab_train):
            module.build(ctx, shared)
    assert len(shared.refreshers) == 3
    project = demo_project()
    for fn, outputs in shared.refreshers:
        result = fn(project)
        assert len(result) == len(outputs)
        if outputs[0] is shared.project:
            project = result[0]  # the Data tab completes the project for the tabs after it
    assert project["data"]["rows"] == 200


def test_thinking_choice_writes_the_template_argument_and_keeps_the_others():
    """The form's Thinking choice is model.chat_template_kwargs.enable_thinking; other template arguments a YAML
    file brought stay, and "Model's default" removes only enable_thinking."""
    project = new_project()
    project["config"] = {"model": {"chat_template_kwargs": {"enable_thinking": True, "custom": 1}}}
    values = tab_train.form_values(project)
    index = tab_train.FIELDS.index("model.chat_template_kwargs")
    assert values[index] == "on"
    fields = dict(zip(tab_train.FIELDS, values))
    fields["model.chat_template_kwargs"] = "off"
    out = tab_train.config_dict(project, fields)
    assert out["model"]["chat_template_kwargs"] == {"enable_thinking": False, "custom": 1}
    fields["model.chat_template_kwargs"] = "default"
    assert tab_train.config_dict(project, fields)["model"]["chat_template_kwargs"] == {"custom": 1}
