"""The draft on disk (finetuner/ui/draft.py): saved per user, restored on page load, never a broken page.

Without a browser: the file functions and the page handlers (`restore_page`, `save_page`, `start_over`) with
the username a signed-in request would carry. The real reload in Chromium is tests/test_browser_draft.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gradio as gr
import pytest

from finetuner.ui import build_app, draft
from finetuner.ui.context import AppContext, new_project
from finetuner.ui.welcome import demo_project

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "arithmetic" / "train.jsonl"
BROWSER = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def ctx(tmp_path):
    return AppContext(tmp_path / "runs")


def _project(ctx, with_file=True) -> dict:
    """A project as the tabs build it: an uploaded file, a column mapping, a grader, a Train setting."""
    project = new_project()
    path = ctx.uploads / "train-0badcafe.jsonl"
    if with_file:
        shutil.copyfile(TRAIN, path)
    project["data"] = {"path": str(path), "name": "train.jsonl", "rows": 200, "ok": True}
    project["graders"] = [{"name": "correct", "type": "string_check", "input": "{{sample.output_text}}",
                           "reference": "Answer: {{item.answer}}", "operation": "eq"}]
    project["config"] = {"method": "sft", "data": {"train": str(path), "prompt_column": "question"},
                         "sft": {"max_steps": 7}}
    return project


def test_saved_draft_comes_back_whole(ctx):
    project = _project(ctx)
    path = draft.save_draft(ctx.runs_dir, "b-" + BROWSER, project)
    assert path == ctx.runs_dir / "_drafts" / f"b-{BROWSER}.json" and path.is_file()
    got = draft.restore(ctx.runs_dir, "b-" + BROWSER)
    assert got.found and not got.problem and not got.gone
    assert got.project == project
    assert got.saved is not None
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []  # the temporary file was renamed


def test_unchanged_project_is_not_rewritten_and_a_change_is(ctx):
    project = _project(ctx)
    path = draft.save_draft(ctx.runs_dir, "u-ann", project)
    inode = path.stat().st_ino
    draft.save_draft(ctx.runs_dir, "u-ann", json.loads(json.dumps(project)))
    assert path.stat().st_ino == inode  # os.replace would have made a new file
    project["config"]["sft"]["max_steps"] = 9
    draft.save_draft(ctx.runs_dir, "u-ann", project)
    assert path.stat().st_ino != inode
    assert draft.restore(ctx.runs_dir, "u-ann").project["config"]["sft"]["max_steps"] == 9


def test_an_empty_project_removes_the_draft(ctx):
    path = draft.save_draft(ctx.runs_dir, "u-ann", _project(ctx))
    assert draft.save_draft(ctx.runs_dir, "u-ann", new_project()) is None
    assert not path.exists()
    assert draft.restore(ctx.runs_dir, "u-ann").found is False


def test_users_and_browsers_each_get_their_own_draft(ctx):
    ann, bob = _project(ctx), _project(ctx)
    bob["graders"] = []
    other = "f" * 32
    draft.save_page(ctx, ann, BROWSER, True, "ann")
    draft.save_page(ctx, bob, BROWSER, True, "bob")  # same browser, another signed-in user
    draft.save_page(ctx, demo_project(), other, True, None)  # a second browser without auth
    assert draft.restore_page(ctx, BROWSER, "ann")[1] == ann
    assert draft.restore_page(ctx, BROWSER, "bob")[1] == bob
    assert draft.restore_page(ctx, other, None)[1] == demo_project()
    assert draft.restore_page(ctx, BROWSER, None)[1] == new_project()  # this browser saved nothing without auth
    names = sorted(p.name for p in (ctx.runs_dir / "_drafts").glob("*.json"))
    assert names == [f"b-{other}.json", "u-ann.json", "u-bob.json"]


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "..", "", None, 42, "0123456789ABCDEF0123456789ABCDEF",
                                     BROWSER + "/../x", BROWSER + "\n", "a" * 5000, {"id": BROWSER}])
def test_a_hostile_browser_id_never_names_a_file_and_gets_a_fresh_id(ctx, hostile):
    with pytest.raises(draft.DraftError):
        draft.draft_key(None, hostile)
    browser_id, project, live, note = draft.restore_page(ctx, hostile, None)
    assert draft.valid_browser_id(browser_id) and browser_id != hostile
    assert project == new_project() and live is True and note["visible"] is False
    with pytest.raises(draft.DraftError):  # refused (the page shows why): nothing written anywhere
        draft.save_page(ctx, _project(ctx), hostile, True, None)
    assert list((ctx.runs_dir / "_drafts").glob("*.json")) == []
    assert not (ctx.runs_dir.parent / "x.json").exists()


@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ".hidden", "名前", "x" * 300, "a\\b", "ann\x00"])
def test_any_username_becomes_a_plain_file_inside_the_drafts_folder(ctx, name):
    key = draft.draft_key(name)
    path = draft.save_draft(ctx.runs_dir, key, _project(ctx))
    assert path.parent == ctx.runs_dir / "_drafts" and "/" not in key and "\\" not in key
    assert key.startswith("h-") and len(key) == 34
    assert draft.restore_page(ctx, None, name)[1]["graders"][0]["name"] == "correct"
    assert draft.draft_key(name) != draft.draft_key(name + "2")


def test_draft_paths_refuse_keys_the_app_does_not_make(ctx):
    for key in ("../u-ann", "u-../../x", "x-ann", "u-a/b", ".u-ann"):
        with pytest.raises(draft.DraftError):
            draft.draft_path(ctx.runs_dir, key)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe garbage", b"[1, 2]", b'{"version": 1}',
                                     b'{"version": 1, "project": {"graders": "all of them"}}',
                                     b'{"version": 1, "project": {"graders": [3]}}',
                                     b'{"version": 99, "project": {}}', b""])
def test_an_unreadable_draft_starts_empty_says_so_and_is_kept_aside(ctx, content):
    path = draft.drafts_dir(ctx.runs_dir) / f"b-{BROWSER}.json"
    path.write_bytes(content)
    browser_id, project, live, note = draft.restore_page(ctx, BROWSER, None)
    assert browser_id == BROWSER and project == new_project() and live is True
    assert note["visible"] and "could not be restored" in note["value"] and "Started with an empty project" in \
        note["value"]
    assert not path.exists() and path.with_name(path.name + ".unreadable").read_bytes() == content
    draft.save_page(ctx, _project(ctx), BROWSER, True, None)  # the page goes on saving as usual
    assert draft.restore(ctx.runs_dir, f"b-{BROWSER}").project["graders"]


def test_a_gone_data_file_restores_everything_else_and_says_upload_again(ctx):
    project = _project(ctx)
    project["config"]["data"]["eval"] = str(ctx.uploads / "held-out-12345678.jsonl")  # never existed
    draft.save_page(ctx, project, BROWSER, True, None)
    os.remove(project["data"]["path"])
    browser_id, got, live, note = draft.restore_page(ctx, BROWSER, None)
    assert got["data"] == {} and got["config"]["data"]["train"] == "" and got["config"]["data"]["eval"] == ""
    assert got["config"]["data"]["prompt_column"] == "question"  # the column mapping stays
    assert got["graders"] == project["graders"] and got["config"]["sft"] == {"max_steps": 7}
    assert "upload it again on the Data tab" in note["value"] and "`train.jsonl`" in note["value"]
    assert "held-out-12345678.jsonl" in note["value"]


def test_a_hub_dataset_id_is_kept_without_a_file(ctx):
    project = new_project()
    project["data"] = {"path": "openai/gsm8k", "name": "openai/gsm8k"}
    project["config"] = {"data": {"train": "openai/gsm8k"}}
    draft.save_page(ctx, project, BROWSER, True, None)
    got = draft.restore(ctx.runs_dir, f"b-{BROWSER}")
    assert got.project == project and got.gone == []


def test_no_secret_reaches_the_draft(ctx):
    project = _project(ctx)
    project["graders"].append({"name": "judge", "type": "score_model", "model": "m", "api_key_env": "JUDGE_KEY",
                               "api_key": "sk-live-abcdefghijklmnopqrstu", "input": []})
    project["config"]["hub"] = {"hf_token": "hf_ABCDEFGHIJKLMNOPQRSTUV"}
    path = draft.save_draft(ctx.runs_dir, "u-ann", project)
    text = path.read_text(encoding="utf-8")
    assert "sk-live" not in text and "hf_ABCDEF" not in text
    judge = draft.restore(ctx.runs_dir, "u-ann").project["graders"][1]
    assert judge["api_key_env"] == "JUDGE_KEY" and "api_key" not in judge


def test_a_page_saves_only_after_restoring_its_own_draft(ctx):
    draft.save_page(ctx, _project(ctx), BROWSER, True, None)
    draft.save_page(ctx, new_project(), BROWSER, False, None)  # a page still loading: must not wipe it
    assert draft.restore(ctx.runs_dir, f"b-{BROWSER}").project["graders"]


def test_start_over_deletes_the_draft_and_stops_saving(ctx):
    draft.save_page(ctx, _project(ctx), BROWSER, True, "ann")
    live, row = draft.start_over(ctx, BROWSER, "ann")
    assert live is False and row["visible"] is False
    assert not (ctx.runs_dir / "_drafts" / "u-ann.json").exists()
    assert draft.restore_page(ctx, BROWSER, "ann")[1] == new_project()


def test_restored_note_says_what_came_back(ctx):
    draft.save_page(ctx, _project(ctx), BROWSER, True, None)
    note = draft.restore_page(ctx, BROWSER, None)[3]
    assert note["visible"] and "Restored your draft" in note["value"]
    assert "data `train.jsonl`, 1 grader, Train settings" in note["value"]


def test_the_browser_secret_survives_a_restart(ctx):
    first = draft.browser_secret(ctx.runs_dir)
    assert draft.browser_secret(AppContext(ctx.runs_dir).runs_dir) == first and len(first) == 32
    assert oct((ctx.runs_dir / "_drafts" / ".browser-secret").stat().st_mode & 0o777) == "0o600"


def test_the_app_wires_the_draft(ctx):
    demo = build_app(ctx)
    states = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
    assert len(states) == 1 and states[0].storage_key == draft.STORAGE_KEY
    assert states[0].secret == draft.browser_secret(ctx.runs_dir)  # the same after a restart
    buttons = {getattr(b, "elem_id", None): b for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert buttons["start-over"].value == "Start over" and "try-demo" in buttons
    load = [d for d in demo.fns.values() if any(t[1] == "load" for t in d.targets)]
    assert load, "nothing restores the draft on page load"
    restore_outputs = {o._id for d in load for o in d.outputs}
    assert states[0]._id in restore_outputs
