"""`rft.max_grader_error_rate` per grader: one dead judge among three graders (a third of all grades, under the
overall limit) stops a real run `failed`, naming it; and Test graders' verdict on a grader that fails every row
blocks Launch on the Train tab while it still describes the graders."""

import copy
from types import SimpleNamespace

import pytest
from test_faults_graders import SPREAD, closed_port, judge, monitor, rft_cfg, write_rows
from test_ui_train import checked_demo, values

from finetuner.training.callbacks import _grader_over_limit
from finetuner.evaluation.grader_check import dry_run_config
from finetuner.runs import new_run
from finetuner.training.stages import train_run
from finetuner.ui import tab_graders as tg
from finetuner.ui import tab_train
from finetuner.ui.context import AppContext
from finetuner.ui.grader_report import blocking_failure
from graders.rubrics import rubric_spec
from graders.testing import Reply, ScriptedJudgeServer


def dead_judge():
    return judge("judge_down", f"http://127.0.0.1:{closed_port()}/v1", max_retries=0,
                 input="Q: {{item.prompt}} A: {{sample.output_text}}")


def questions(server) -> set[str]:
    """The question + reference part of each rubric prompt the judge server received."""
    return {body["messages"][-1]["content"].split("Model answer:")[0] for body in server.requests}


@pytest.mark.slow
def test_one_grader_failing_every_grade_stops_the_run_naming_it(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    run = new_run(ctx.runs_dir, "one-dead")
    data = write_rows(tmp_path / "d.jsonl", ["ok"] * 4)
    with ScriptedJudgeServer(lambda body, n: Reply('{"result": 0.5}')) as server:
        live = rubric_spec("correctness", name="judge", model="m", base_url=server.base_url)
        cfg = rft_cfg(data, [live, SPREAD, dead_judge()], steps=5, rows=4)
        assert cfg.rft.max_grader_error_rate == 0.5  # the default: 1 failing grader of 3 is 33% overall
        dry = dry_run_config(cfg, rows=4, sample_column="answer")
        assert dry.summary_json()["failed_graders"].keys() == {"judge_down"}
        dry_questions = questions(server)
        server.requests.clear()
        status = train_run(cfg, run)
        train_questions = questions(server)
    assert status["state"] == "failed" and status["step"] == 1
    msg = status["error"]
    assert msg.startswith("Grader `judge_down` failed on 100% of its grades (latest: judge_server_error:")
    assert "connection failed" in msg and "above the allowed 50% per grader" in msg
    assert "`rft.max_grader_error_rate`" in msg and "remove it" in msg and "server running" in msg
    assert "`judge`" not in msg and "spread" not in msg  # only the failing grader is named
    steps = [m for m in run.metrics() if "reward" in m]
    assert [m["step"] for m in steps] == [1] and steps[0]["graders/error_rate"] == pytest.approx(1 / 3)
    assert "failed" in monitor(ctx, run)["progress"]
    # The live judge saw the same question text in training (GRPOTrainer's chat prompts) as in the dry run.
    assert train_questions == dry_questions and len(dry_questions) == 4
    assert "Question:\nAdd 0 and 1.\n\nReference answer:\n1\n\n" in train_questions


def test_per_grader_reason_names_only_graders_over_the_limit():
    logs = {"graders/error_rate": 0.34, "graders/a/error_rate": 1.0, "graders/b/error_rate": 0.02,
            "graders/c/error_rate": 0.0}
    rows = [{"errors": {"a": {"type": "judge_server_error", "message": "first"}}},
            {"errors": {"a": {"type": "judge_server_error", "message": "newest"}, "b": {"type": "t", "message": "x"}}}]
    reason = _grader_over_limit(logs, rows, 0.5, 7)
    assert reason.startswith("Grader `a` failed on 100% of its grades (latest: judge_server_error: newest) at RFT "
                             "step 7, above the allowed 50% per grader")
    assert "`b`" not in reason and "`c`" not in reason
    assert _grader_over_limit(logs, rows, 1.0, 7) is None  # a limit of 1 never stops


def failing_project():
    project = checked_demo()
    project["graders"] = project["graders"] + [dead_judge()]
    return project


def test_test_graders_blocks_launch_on_a_grader_that_fails_every_row(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    project, _summary, warn, _f, _t, _r = tg.test_on_data(failing_project(), 3, tg.COLUMN, "answer", 2)
    dry = project["dry_run"]
    assert list(dry["failed_graders"]) == ["judge_down"] and "connection failed" in dry["failed_graders"]["judge_down"]
    assert dry["graders_key"] == tg.graders_key(project["graders"])
    assert "⛔" in warn["value"] and "Launch is blocked" in warn["value"] and "judge_down" in warn["value"]

    run_id, tabs, message = tab_train.launch(ctx, project, *values(project))
    assert run_id == {"__type__": "update"} and tabs == {"__type__": "update"}
    assert message.startswith("❌ Grader `judge_down` failed on every test row (latest: judge_server_error:")
    assert message.endswith("Fix it on the Graders tab or remove it, then test again.")
    assert not any(p.is_dir() and p.name != "_uploads" for p in ctx.runs_dir.iterdir())  # nothing started

    # Removing the grader clears the verdict; so does a grader list edited after the test (a stale verdict).
    assert tg.remove(project, "judge_down")[0]["dry_run"] is None
    stale = copy.deepcopy(project)
    stale["graders"][-1]["base_url"] = "http://127.0.0.1:8000/v1"
    assert blocking_failure(stale) == "" and blocking_failure(project) != ""
    started = []
    ctx.launch = lambda cfg: started.append(cfg) or SimpleNamespace(id="sft-run")  # no child process here
    sft = tab_train.launch(ctx, project, *values(project, method="sft"))[2]
    assert sft.startswith("✅") and started[0].method == "sft"  # SFT does not train on the graders


def test_a_clean_test_blocks_nothing():
    project = tg.test_on_data(checked_demo(), 3, tg.COLUMN, "answer", 2)[0]
    assert project["dry_run"]["failed_graders"] == {} and blocking_failure(project) == ""
