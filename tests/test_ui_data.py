"""The Data tab's handlers, without a browser: uploads of each format, errors by line, the preview's trained
spans, column mapping into the project's config, the evaluation split, a project loaded from outside."""

import json
import re
from pathlib import Path

import pytest

from graders.errors import DataError
from finetuner.ui import data_view, tab_data
from finetuner.ui.context import AppContext, new_project
from finetuner.ui.welcome import demo_project

ROWS = [{"prompt": "Add 1 and 2.", "completion": "Answer: 3", "answer": "3"},
        {"prompt": "Add 2 and 2.", "completion": "Answer: 4", "answer": "4"},
        {"prompt": "Add 5 and 1.", "completion": "Answer: 6", "answer": "6"}]
SETTINGS = dict(method="sft", fmt="auto", messages_column="", prompt_column="", completion_column="",
                text_column="", split="train", eval_mode=tab_data.EVAL_SHARE, eval_fraction=0.1, max_rows=0)


def settings(**over):
    return list({**SETTINGS, **over}.values())


@pytest.fixture
def ctx(tmp_path):
    return AppContext(tmp_path / "runs")


def write(path: Path, kind: str, rows=ROWS) -> Path:
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "csv":
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "json"])
def test_upload_each_format(ctx, tmp_path, kind):
    src = write(tmp_path / f"my data.{kind}", kind)
    project, status, preview, *_ = tab_data.upload_data(ctx, new_project(), str(src), *settings())
    data = project["data"]
    assert data["ok"] and data["rows"] == 3 and data["format"] == "prompt_completion"
    assert data["columns"] == ["prompt", "completion", "answer"] and data["has_labels"]
    assert data["tokens"]["max"] > 0 and data["name"] == f"my-data.{kind}"
    stored = Path(data["path"])
    assert stored.parent == ctx.uploads and stored.suffix == f".{kind}" and " " not in stored.name
    assert project["config"]["data"]["train"] == str(stored) and project["config"]["method"] == "sft"
    assert "Ready: 3 rows" in status and "Tokens per row" in status and "Answer: 3" in preview


def test_upload_names_are_sanitised(ctx, tmp_path):
    src = write(tmp_path / "x;rm -rf ~ $(boom).jsonl", "jsonl")
    stored = data_view.save_upload(src, ctx.uploads)
    assert stored.parent == ctx.uploads and stored.suffix == ".jsonl"
    assert re.fullmatch(r"x-rm--rf-boom-[0-9a-f]{8}\.jsonl", stored.name)  # no spaces, $, ;, ~ or slashes
    assert data_view.save_upload(src, ctx.uploads) == stored  # same content, same copy
    odd = tmp_path / "data.exe"
    odd.write_text(json.dumps(ROWS[0]) + "\n")
    assert data_view.save_upload(odd, ctx.uploads).suffix == ""  # a foreign extension is dropped


def test_broken_file_names_the_line(ctx, tmp_path):
    src = tmp_path / "broken.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n" + '{"prompt": "x", \n')
    project, status, *_ = tab_data.upload_data(ctx, new_project(), str(src), *settings())
    assert not project["data"]["ok"]
    assert "Not usable yet" in status and "line 3" in status and "broken.jsonl" in status
    assert str(ctx.uploads) not in status  # the person's file name, not our stored copy's path


def test_missing_answers_for_sft_are_explained_per_row(ctx, tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["completion"] = None
    project, status, *_ = tab_data.upload_data(ctx, new_project(), str(write(tmp_path / "a.jsonl", "jsonl", rows)),
                                               *settings())
    assert not project["data"]["ok"] and "line 2" in status


def test_preview_marks_the_trained_answer(ctx, tmp_path):
    src = write(tmp_path / "d.jsonl", "jsonl")
    _project, _status, preview, *_ = tab_data.upload_data(ctx, new_project(), str(src), *settings())
    assert "trained text" in preview  # the legend
    assert 'title="trained">Answer: 3' in preview  # the completion is inside the highlighted span
    assert "Add 1 and 2." in preview.split('title="trained"')[0]  # the prompt is outside it
    html = data_view.highlighted("ab<c>d", [(2, 5)])
    assert html.startswith("ab<span") and "&lt;c&gt;" in html and html.endswith("</span>d")


def test_rft_preview_lists_grader_columns(ctx, tmp_path):
    src = write(tmp_path / "p.jsonl", "jsonl", [{"prompt": r["prompt"], "answer": r["answer"]} for r in ROWS])
    project, status, preview, *_ = tab_data.upload_data(ctx, new_project(), str(src), *settings(method="rft"))
    assert project["data"]["ok"] and project["data"]["format"] == "prompt" and not project["data"]["has_labels"]
    assert "RFT trains on the model's own answers" in preview and "<code>answer</code>" in preview
    assert "{{item.&lt;column&gt;}}" in status  # notes keep their angle brackets visible in Markdown


def test_column_override_flows_into_project_config(ctx, tmp_path):
    rows = [{"question": r["prompt"], "reply": r["completion"]} for r in ROWS]
    src = write(tmp_path / "q.csv", "csv", rows)
    project, status, _p, _fmt, _m, prompt_dd, completion_dd, _t, accordion = tab_data.upload_data(
        ctx, new_project(), str(src), *settings())
    assert not project["data"]["ok"] and "reply" in status  # `reply` is no known name: detection is unsure
    assert accordion == {"open": True, "__type__": "update"} and "reply" in completion_dd["choices"]
    project, status, *_ = tab_data.check(project, *settings(prompt_column="question", completion_column="reply"))
    assert project["data"]["ok"] and project["data"]["format"] == "prompt_completion"
    data_cfg = project["config"]["data"]
    assert data_cfg["prompt_column"] == "question" and data_cfg["completion_column"] == "reply"


def test_common_column_names_are_mapped_with_a_note(ctx, tmp_path):
    rows = [{"question": r["prompt"], "answer": r["answer"]} for r in ROWS]
    project, status, *_ = tab_data.upload_data(ctx, new_project(), str(write(tmp_path / "qa.jsonl", "jsonl", rows)),
                                               *settings())
    assert project["data"]["ok"] and "mapped by their names" in status
    assert project["config"]["data"]["prompt_column"] == "question"
    assert project["config"]["data"]["completion_column"] == "answer"


def test_eval_split_and_eval_file(ctx, tmp_path):
    many = [dict(ROWS[0], prompt=f"Add {i} and 1.") for i in range(20)]
    src = write(tmp_path / "train.jsonl", "jsonl", many)
    project, status, *_ = tab_data.upload_data(ctx, new_project(), str(src), *settings(eval_fraction=0.25))
    assert "5 of 20 rows held out (25%" in status and project["config"]["data"]["eval_fraction"] == 0.25
    ev = write(tmp_path / "held.jsonl", "jsonl")
    project, status, *_ = tab_data.upload_side_file(ctx, "eval", project, str(ev), *settings())
    assert project["config"]["data"]["eval"].endswith(".jsonl") and "`held.jsonl`: 3 rows" in status
    project, status, *_ = tab_data.check(project, *settings())  # back to holding out a share
    assert project["config"]["data"]["eval"] == "" and "held out" in status


def test_hub_id_offline_is_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    project, status, *_ = tab_data.use_hub_id(new_project(), "someone/not-a-dataset", *settings())
    assert not project["data"]["ok"] and project["data"]["path"] == "someone/not-a-dataset"
    assert "offline" in status and "Upload a .jsonl" in status
    with pytest.raises(DataError, match="Type a dataset id"):
        tab_data.use_hub_id(new_project(), "  ", *settings())


def test_unloadable_model_falls_back_to_the_built_in_tokenizer(ctx, tmp_path):
    project = new_project()
    project["config"]["model"] = {"name": str(tmp_path / "no-such-model")}
    project = tab_data._with_source(project, str(write(tmp_path / "d.jsonl", "jsonl")))
    project, status, *_ = tab_data.check(project, *settings())
    assert project["data"]["ok"] and "built-in model's tokenizer" in status


def test_project_loaded_from_outside_is_redrawn():
    out = tab_data.from_project(demo_project())
    project, status = out[0], out[1]
    assert project["data"]["rows"] == 200 and project["data"]["has_labels"] and project["data"]["ok"]
    assert "`eval.jsonl`: 200 rows" in status and "prompts.jsonl" in status
    method, _split, mode, fraction, _rows, eval_file = out[-6:]
    assert method["value"] == "sft+rft" and mode["value"] == tab_data.EVAL_FILE
    assert fraction["visible"] is False and eval_file["visible"] is True
    empty = tab_data.from_project(new_project())
    assert empty[1] == "" and empty[2] == ""
