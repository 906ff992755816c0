"""The Lab tab's handlers (issue 15): the form into a spec (a preset or the project), a preset filling the form,
and another user's Lab refused by every Lab handler."""

from pathlib import Path

import pytest

from finetuner.lab import create_lab, preset, spec_from_dict
from finetuner.config import load_config
from graders.errors import ConfigError, RunError

from lab_helpers import demo_spec


def test_the_form_builds_a_spec_from_a_preset_or_the_project(tmp_path):
    from finetuner.ui import tab_data, tab_lab
    from finetuner.ui.context import AppContext, new_project
    from finetuner.ui.welcome import demo_project

    ctx = AppContext(tmp_path / "runs")
    data, base_dir = tab_lab.spec_data(ctx, None, tab_lab.SOURCES[0], "demo", ["SFT", "RFT"], "3, 4", "25, 50",
                                       "examples seen", 500, None)
    spec = spec_from_dict(data, base_dir)
    assert spec.methods == ["sft", "rft"] and spec.seeds == [3, 4] and spec.sizes == [25, 50]
    assert spec.budget == {"examples": 500.0} and spec.keep  # the preset's own keep set stays
    project = tab_data.from_project(demo_project())[0]  # the demo's data and graders, checked by the Data tab
    data, base_dir = tab_lab.spec_data(ctx, project, tab_lab.SOURCES[1], "", ["SFT then RFT"], "0", "",
                                       "seconds of training", 5, None)
    spec = spec_from_dict(data, base_dir)
    base = load_config(spec.base)
    assert Path(spec.base).parent == ctx.uploads_for() and base.data.train.endswith("train.jsonl")
    assert [g["name"] for g in base.graders] == [g["name"] for g in project["graders"]] and spec.sizes == []
    with pytest.raises(ConfigError, match="no data yet"):
        tab_lab.spec_data(ctx, new_project(), tab_lab.SOURCES[1], "", ["SFT"], "0", "", "seconds of training", 5, None)
    with pytest.raises(ConfigError, match="at least one method"):
        tab_lab.spec_data(ctx, project, tab_lab.SOURCES[0], "demo", [], "0", "", "seconds of training", 5, None)
    with pytest.raises(ConfigError, match="whole numbers"):
        tab_lab.spec_data(ctx, project, tab_lab.SOURCES[0], "demo", ["SFT"], "zero", "", "seconds of training", 5, None)


def test_picking_a_preset_fills_the_form():
    from finetuner.ui import tab_lab

    methods, seeds, sizes, kind, budget = tab_lab.preset_form("demo")
    assert methods == ["SFT", "RFT", "SFT then RFT"] and seeds == "0, 1" and sizes == "25, 50, 100, 200"
    assert kind == "seconds of training" and budget == preset("demo").budget_value


def test_another_users_lab_is_refused_by_every_lab_handler(tmp_path):
    from finetuner.ui import tab_lab
    from finetuner.ui.context import AppContext, current_user

    lab = create_lab(demo_spec(sizes=[25], seeds=[0], methods=["sft"]), tmp_path, owner="alice")
    lab.write(state="running")
    classroom = AppContext(tmp_path, auth=True, teachers={"teacher"})
    before = lab.status_path.read_text()
    token = current_user.set("bob")
    try:
        assert tab_lab.lab_choices(classroom) == []
        for handler, args in ((tab_lab.show, (lab.id,)), (tab_lab.stop, (lab.id,)), (tab_lab.tick, (lab.id, None))):
            with pytest.raises(RunError, match="belongs to another user"):
                handler(classroom, *args)
    finally:
        current_user.reset(token)
    assert not lab.stop_path.exists() and lab.status_path.read_text() == before
    token = current_user.set("alice")
    try:
        assert tab_lab.lab_choices(classroom) == [lab.id]
        assert "will stop" in tab_lab.stop(classroom, lab.id) and lab.stop_path.exists()
    finally:
        current_user.reset(token)
