"""Ready-made verifiable tasks (reasoning-gym): generation offline, the difficulty spread, the `reasoning_gym`
grader on real entries, the `make-task` verb's files, and the Data tab's "Make the task" handler."""

import json
import socket
from pathlib import Path

import pytest

from finetuner import cli
from finetuner.config import load_config
from finetuner.config.validate import validate
from finetuner.data import gym_tasks
from finetuner.ui import tab_data, task_source
from finetuner.ui.context import AppContext, new_project
from graders.base import GraderConfigError
from graders.build import build_graders

TASKS = list(gym_tasks.TASKS)


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails: generating and scoring must not need one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a ready-made task tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_package_has_no_network_code():
    # The listed tasks are generated from files inside the wheel; this is why no task had to be excluded for
    # fetching data. If a new version adds a fetch, this says where.
    import reasoning_gym

    root = Path(reasoning_gym.__file__).parent
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py")
            if any(w in p.read_text(encoding="utf-8") for w in ("urllib", "import requests", "hf_hub",
                                                                 "load_dataset", "httpx"))]
    assert hits == []


@pytest.mark.parametrize("task", TASKS)
def test_each_task_generates_and_its_grader_tells_right_from_wrong(task, no_network):
    rows = gym_tasks.generate(task, 12, "mixed", seed=3)
    assert len(rows) == 12 and len({r["prompt"] for r in rows}) == 12
    for row in rows:
        assert row["prompt"].strip() and row["answer"].strip() and 0 <= row["difficulty"] <= 100
        assert row["gym_task"] == task and json.loads(row["gym_entry"])["answer"] == row["answer"]
    grader = build_graders([gym_tasks.grader_spec(task)])[0]
    assert grader.type == "reasoning_gym"
    for k, row in enumerate(rows):
        right = grader.grade(f"Let me think.\nAnswer: {row['answer']}", row)
        assert right.ok and right.score == 1.0, (row, right)
        # Another row's answer (a real, well-formed answer to a different question) must not pass.
        other = next(r["answer"] for r in rows[k + 1:] + rows[:k] if r["answer"] != row["answer"])
        wrong = grader.grade(f"Answer: {other}", row)
        assert wrong.ok and wrong.score < 1.0, (row, other, wrong)
    assert grader.grade("<answer>" + rows[0]["answer"] + "</answer>", rows[0]).score == 1.0


def test_mixed_difficulty_spreads_and_fixed_levels_do_not():
    mixed = {r["difficulty"] for r in gym_tasks.generate("chain_sum", 40, "mixed", 0)}
    assert min(mixed) == 0 and max(mixed) == 100 and len(mixed) >= 5
    assert {r["difficulty"] for r in gym_tasks.generate("chain_sum", 10, "easy", 0)} == {0}
    assert {r["difficulty"] for r in gym_tasks.generate("chain_sum", 10, "hard", 0)} == {100}
    easy = gym_tasks.generate("chain_sum", 10, "easy", 0)
    hard = gym_tasks.generate("chain_sum", 10, "hard", 0)
    assert max(len(r["answer"]) for r in easy) < max(len(r["answer"]) for r in hard)  # harder is harder


def test_same_seed_same_rows_other_seed_other_rows():
    a, b = gym_tasks.generate("gcd", 20, "mixed", 1), gym_tasks.generate("gcd", 20, "mixed", 1)
    assert a == b and a != gym_tasks.generate("gcd", 20, "mixed", 2)


def test_bad_requests_are_clear_errors():
    from graders.errors import DataError

    with pytest.raises(DataError, match="Unknown ready-made task 'nope'.*basic_arithmetic"):
        gym_tasks.generate("nope", 5)
    with pytest.raises(DataError, match="Difficulty 'brutal'"):
        gym_tasks.generate("gcd", 5, "brutal")
    with pytest.raises(GraderConfigError, match="'gdc' is not a reasoning-gym task.*gcd"):
        build_graders([{"name": "c", "type": "reasoning_gym", "task": "gdc"}])
    with pytest.raises(GraderConfigError, match="task"):
        build_graders([{"name": "c", "type": "reasoning_gym"}])


def test_grader_fails_clearly_without_an_entry_and_scores_garbage_zero():
    grader = build_graders([gym_tasks.grader_spec("prime_factorization")])[0]
    missing = grader.grade("Answer: 3", {"prompt": "x"})
    assert not missing.ok and missing.error.type == "invalid_variable" and "gym_entry" in missing.error.message
    broken = grader.grade("Answer: 3", {"gym_entry": "{not json"})
    assert not broken.ok and "not JSON" in broken.error.message
    row = gym_tasks.generate("gcd", 1, "easy", 0)[0]
    mismatch = grader.grade("Answer: 3", row)
    assert not mismatch.ok and "'gcd'" in mismatch.error.message
    row = gym_tasks.generate("prime_factorization", 1, "easy", 0)[0]
    garbage = grader.grade("Answer: no idea", row)  # its scorer raises ValueError on words
    assert garbage.ok and garbage.score == 0.0 and "rejected" in garbage.log


def test_make_task_cli_writes_data_and_a_run_yaml_config_accepts(tmp_path, capsys):
    out = tmp_path / "task"
    assert cli.main(["make-task", "basic_arithmetic", "--size", "30", "--seed", "1", "--out", str(out)]) == 0
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert len(train) == 30 and len(held) == 10
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}  # held out means never trained on
    cfg = load_config(out / "run.yaml")
    validate(cfg)
    assert cfg.method == "rft" and cfg.graders[0]["type"] == "reasoning_gym" and cfg.rft.curriculum == "adarft"
    build_graders(cfg.graders)
    assert cli.main(["check-data", str(out / "train.jsonl"), "--method", "rft"]) == 0
    capsys.readouterr()
    # The grader dry run sees rows as training does (graders.item): the reference answers all score 1.
    assert cli.main(["test-grader", str(out / "run.yaml"), "--samples", "column", "--sample-column", "answer",
                     "--rows", "8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]
    assert summary["rows"] == 8 and summary["mean"] == 1.0 and summary["error_rate"] == 0.0
    assert cli.main(["make-task", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(t in listed for t in TASKS)
    assert cli.main(["make-task", "nope", "--out", str(tmp_path / "x")]) == 2


def test_ui_make_task_loads_the_data_and_adds_the_grader(tmp_path):
    assert task_source.EVAL_FILE_MODE == tab_data.EVAL_FILE
    ctx = AppContext(tmp_path / "runs")
    project = new_project()
    project["graders"] = [{"name": "short", "type": "length", "unit": "chars", "max": 50}]
    settings = [None] * len(tab_data.SETTINGS)
    out = task_source.make_task(ctx, tab_data.load_made, project, "spell_backward", 20, "mixed", 4, *settings)
    project, status = out[0], out[1]
    train = Path(project["config"]["data"]["train"])
    assert train.parent == ctx.uploads and len(train.read_text().splitlines()) == 20
    assert Path(project["config"]["data"]["eval"]).is_file()
    assert project["data"]["ok"] and project["data"]["rows"] == 20 and project["config"]["method"] == "rft"
    assert "difficulty" in project["data"]["columns"] and "spell_backward" in status
    names = [g["name"] for g in project["graders"]]
    assert names == ["short", "correct"] and project["graders"][1]["task"] == "spell_backward"
    assert out[-4]["value"] == "rft" and out[-3]["value"] == tab_data.EVAL_FILE
    assert project["config"]["rft"]["curriculum"] == "adarft" and project["config"]["rft"]["difficulty"] == "column"
    from finetuner.ui import tab_train  # the Train tab's form reads the curriculum from the project

    values = dict(zip(tab_train.FIELDS, tab_train.form_values(project)))
    assert values["rft.curriculum"] == "adarft"
    with pytest.raises(Exception, match="Unknown ready-made task"):
        task_source.make_task(ctx, tab_data.load_made, project, "nope", 5, "easy", 0, *settings)
