"""One `item` everywhere: `{{item.prompt}}` renders the same text in a dry run (the library call and the Graders
tab's Test graders), on a training batch (the reward bridge called as GRPOTrainer calls it, with chat prompts)
and in evaluation; a Python grader gets `item["prompt"]` as its editor header promises."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from finetuner.config import from_dict
from finetuner.data import load_stage_data
from finetuner.data.to_trl import GRPO_RESERVED
from finetuner.evaluation.grader_check import dry_run_config
from finetuner.modeling.load import load_tokenizer
from finetuner.ui import tab_graders as tg
from finetuner.ui.context import new_project
from graders import build_graders, build_item
from graders.item import prompt_text
from graders.reward import RewardBridge
from graders.rubrics import RUBRICS, rubric_spec
from graders.testing import Reply, ScriptedJudgeServer

ROWS = [{"prompt": "Where does an invoice question go?", "answer": "billing"},
        {"prompt": "My parcel never arrived.", "answer": "shipping"}]


@pytest.fixture
def judge_server():
    with ScriptedJudgeServer(lambda body, n: Reply('{"result": 1, "steps": []}')) as server:
        yield server


def write_data(tmp_path, rows=ROWS):
    path = tmp_path / "emails.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def project_for(path, graders):
    project = new_project()
    project["config"] = {"method": "rft", "model": {"name": "tiny"}, "data": {"train": path, "eval_fraction": 0}}
    project["data"] = {"path": path, "ok": True}
    project["graders"] = graders
    return project


def user_messages(server) -> list[str]:
    return sorted(body["messages"][-1]["content"] for body in server.requests)


def expected_rubric_text(row) -> str:
    """The default rubric's user message, rendered by hand for a row whose answer is also the graded text."""
    user = next(m["content"] for m in RUBRICS["correctness"]["input"] if m["role"] == "user")
    return (user.replace("{{item.prompt}}", row["prompt"]).replace("{{item.answer}}", row["answer"])
            .replace("{{sample.output_text}}", row["answer"]))


def test_the_default_rubric_renders_the_same_text_in_dry_runs_and_on_a_training_batch(tmp_path, judge_server):
    path = write_data(tmp_path)
    spec = rubric_spec("correctness", name="judge", model="m", base_url=judge_server.base_url, cache=False)
    cfg = from_dict({"name": "t", "method": "rft", "model": {"name": "tiny"},
                     "data": {"train": path, "eval_fraction": 0}, "graders": [spec]})

    report = dry_run_config(cfg, rows=2, sample_column="answer")
    assert report.error_rate == 0, report.text()
    dry = user_messages(judge_server)
    judge_server.requests.clear()

    out = tg.test_on_data(project_for(path, [spec]), 2, tg.COLUMN, "answer", 2)
    assert out[0]["dry_run"]["error_rate"] == 0 and "row has no column" not in out[2]["value"]
    tab = user_messages(judge_server)
    judge_server.requests.clear()

    # A training batch: the RFT dataset's rows, split the way GRPOTrainer splits them (chat prompts, every
    # other column but its reserved ones as keyword arguments), and the reward function awaited as TRL does.
    records = load_stage_data(cfg, "rft", load_tokenizer("tiny")).train.to_list()
    prompts = [r["prompt"] for r in records]
    assert all(isinstance(p, list) and p[0]["role"] == "user" for p in prompts)  # chat-format prompts
    columns = {k: [r[k] for r in records] for k in records[0] if k not in GRPO_RESERVED}
    bridge = RewardBridge(build_graders([spec]))
    try:
        [reward] = bridge.reward_funcs
        completions = [[{"role": "assistant", "content": r["answer"]}] for r in records]
        scores = asyncio.run(reward(prompts=prompts, completions=completions, completion_ids=None,
                                    trainer_state=SimpleNamespace(global_step=1), log_metric=lambda *a: None,
                                    log_extra=lambda *a: None, **columns))
    finally:
        bridge.close()
    assert scores == [1.0, 1.0]
    train = user_messages(judge_server)

    assert dry == tab == train == sorted(expected_rubric_text(r) for r in ROWS)
    assert "Question:\nWhere does an invoice question go?\n\n" in train[0] + train[1]
    assert "'role'" not in "".join(train)  # the user's text, not a list of message dicts


def test_a_python_grader_gets_the_prompt_its_header_promises(tmp_path):
    path = write_data(tmp_path)
    header = tg.gf.python_template(["prompt", "answer"], ROWS[0])
    assert 'item["prompt"]' in header
    probe = {"name": "probe", "type": "python",
             "source": "def grade(sample, item):\n    print(sorted(item), repr(item['prompt']))\n    return 1.0\n"}
    project = project_for(path, [probe])
    _p, _s, _w, _f, table, _r = tg.test_on_data(project, 2, tg.COLUMN, "answer", 2)
    logs = [row[-1] for row in table["value"]["data"]]
    assert "'Where does an invoice question go?'" in logs[0] and "'prompt'" in logs[0] and "'messages'" in logs[0]
    assert table["value"]["data"][0][6] == ""  # no error


def test_test_connection_sends_the_first_rows_prompt_text(tmp_path, judge_server):
    path = write_data(tmp_path)
    system, user = tg.gf.rubric_messages("correctness")
    message = tg.judge_connection(project_for(path, []), "score_model", "judge", 1, system, user,
                                  judge_server.base_url, "m", "", 0, 1, "", "")
    assert message.startswith("✅"), message
    sent = judge_server.requests[0]["messages"][-1]["content"]
    assert sent.startswith("Question:\nWhere does an invoice question go?\n\nReference answer:\nbilling")


@pytest.mark.parametrize("prompt,text", [
    ("2+2?", "2+2?"),
    ([{"role": "user", "content": "2+2?"}], "2+2?"),
    ([{"role": "user", "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]}], "2+2?"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
     "system: Be brief.\nuser: 2+2?"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
      {"role": "user", "content": "2+2?"}], "user: hi\nassistant: hello\nuser: 2+2?"),
])
def test_prompt_text_rule(prompt, text):
    assert prompt_text(prompt) == text
    item = build_item({"answer": "4"}, prompt)
    assert item["prompt"] == text and item["answer"] == "4"
    assert item["messages"][-1]["role"] == "user"  # the turns stay available to Python graders


def test_build_item_renames_the_reference_and_takes_a_rows_own_prompt():
    item = build_item({"reference_completion": "4", "prompt": [{"role": "user", "content": "2+2?"}]})
    assert item == {"completion": "4", "prompt": "2+2?", "messages": [{"role": "user", "content": "2+2?"}]}
    assert build_item({"answer": "4"}) == {"answer": "4"}  # no prompt, nothing invented
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "completion": "a"}
    # evaluation's raw chat row: the prompt the model was given replaces the full chat, as in training
    assert build_item(row, row["messages"][:1])["messages"] == [{"role": "user", "content": "q"}]


def test_evaluation_items_match_training_items(tmp_path):
    from finetuner.evaluation.heldout import eval_split

    path = write_data(tmp_path, ROWS * 3)
    cfg = from_dict({"name": "t", "method": "rft", "model": {"name": "tiny"},
                     "data": {"train": path, "eval_fraction": 0.5}, "graders": [{"name": "n", "type": "length"}]})
    prompts, items, _notes = eval_split(cfg, load_tokenizer("tiny"), 10)
    assert items and all(item["prompt"] == prompt_text(p) and item["prompt"] in {r["prompt"] for r in ROWS}
                         for item, p in zip(items, prompts))
