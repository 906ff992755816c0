"""Agent RFT end to end on the built-in tool-calling model (`tiny-agent`): TRL's tool loop calls our sandboxed
tools during rollouts, their answers reach the model, graders read the calls, failures become the model's
feedback, the Monitor draws the tool numbers, and an exported bundle trains headless with its tools."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from finetuner.demo import agent_task
from finetuner.runs import RunFolder, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CALLED = {"name": "called", "type": "python", "weight": 0.1,
          "source": "def grade(sample, item):\n    return 1.0 if sample['tool_calls'] else 0.0\n"}
CORRECT = {"name": "correct", "type": "string_check", "operation": "eq", "input": "{{sample.output_text}}",
           "reference": "Answer: {{item.answer}}"}
# A calculator that fails three ways, chosen by the expression's first digit: it raises, it hangs past its
# timeout, or it returns something that is not text.
FAULTY = '''def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The arithmetic to do, for example 347+589.
    """
    first = expression.strip()[:1]
    if first in "123":
        raise ValueError("the calculator is broken today")
    if first in "456":
        while True:
            pass
    return object()
'''


def _config(tmp_path: Path, tools: list, graders: list, steps: int = 2, tokens: int = 128):
    from finetuner.config import from_dict

    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in agent_task.rft_rows(24, seed=7)))
    return from_dict({"name": "agent", "method": "rft", "model": {"name": "tiny-agent", "max_length": 256},
                      "data": {"train": str(tmp_path / "p.jsonl"), "eval_fraction": 0.0}, "graders": graders,
                      "tools": tools,
                      "rft": {"max_steps": steps, "batch_size": 16, "num_generations": 8, "max_tool_calls": 2,
                              "max_completion_length": tokens, "save_steps": 100, "logging_steps": 1,
                              "max_grader_error_rate": 1.0}, "seed": 3})


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    from finetuner.training.stages import train_run

    tmp = tmp_path_factory.mktemp("agent")
    from finetuner.config import portable_config, save_config

    cfg = _config(tmp, [{"example": "calculator"}], [CORRECT, CALLED])
    run = RunFolder(tmp / "run")
    run.path.mkdir(parents=True)
    save_config(portable_config(cfg), run.config_path)  # as launch writes it: the bundle is made from it
    status = train_run(cfg, run)
    return run, status


def _rows(run: RunFolder) -> list[dict]:
    return read_jsonl(run.samples_path, 0)[0]


def _metrics(run: RunFolder) -> list[dict]:
    return [m for m in read_jsonl(run.metrics_path, 0)[0] if "tools/call_rate" in m]


@pytest.mark.slow
def test_a_tool_is_called_during_rollouts_and_its_answer_reaches_the_model(agent_run):
    run, status = agent_run
    assert status["state"] == "finished", status.get("error")
    calls = 0
    for row in _rows(run):
        turns = row.get("trajectory") or []
        for i, message in enumerate(turns):
            if message.get("tool_calls") and i + 1 < len(turns):
                answer = turns[i + 1]
                assert answer["role"] == "tool" and answer["name"] == "calculator"
                expression = message["tool_calls"][0]["function"]["arguments"].get("expression", "")
                try:
                    expected = agent_task.calculator(expression)
                except Exception:  # noqa: BLE001 - a malformed expression: the tool answers with its error
                    expected = None
                if expected is not None:  # the sandboxed tool computed it, and that is what the model was given
                    assert answer["content"] == expected
                    calls += 1
                # the model wrote another turn after reading the answer
                assert i + 2 < len(turns) and turns[i + 2]["role"] == "assistant"
    assert calls > 0
    steps = _metrics(run)
    assert len(steps) == 2 and max(m["tools/call_rate"] for m in steps) > 0
    assert max(m["tools/calculator/call_rate"] for m in steps) > 0 and "tools/call_frequency" in steps[0]


@pytest.mark.slow
def test_graders_read_the_tool_calls(agent_run):
    run, _ = agent_run
    rows = _rows(run)
    with_calls = [r for r in rows if (r.get("tools") or {}).get("calls")]
    without = [r for r in rows if not (r.get("tools") or {}).get("calls")]
    assert with_calls and without  # the base model calls the calculator only sometimes
    assert all(r["scores"]["called"] == 1.0 for r in with_calls)
    assert all(r["scores"]["called"] == 0.0 for r in without)
    step = _metrics(run)[-1]
    assert "tools/reward_with_call" in step or "tools/reward_without_call" in step


@pytest.mark.slow
def test_the_monitor_draws_the_logged_tool_numbers(agent_run):
    from finetuner.ui.run_watch import MetricColumns
    from finetuner.ui.tool_figures import tool_figures

    run, _ = agent_run
    cols = MetricColumns()
    cols.add(read_jsonl(run.metrics_path, 0)[0])
    figs = tool_figures(cols, 0.0, "r")
    drawn = next(t for t in figs["tools"].data if t.name.startswith("rollouts that called a tool"))
    assert list(drawn.y) == [m["tools/call_rate"] for m in _metrics(run)]
    calls = next(t for t in figs["tools"].data if t.name.startswith("tool calls per rollout"))
    assert list(calls.y) == [m["tools/calls_per_rollout"] for m in _metrics(run)]
    assert figs["tools_reward"].data


@pytest.mark.slow
def test_tools_that_raise_hang_or_return_garbage_answer_the_model_and_training_goes_on(tmp_path):
    from finetuner.training.stages import train_run

    tool = {"name": "calculator", "source": FAULTY, "timeout_s": 0.3}
    # An error message is longer than a sum: room for it in the trajectory (TRL drops a tool's answer that
    # would not fit, and the rollout ends unfinished).
    cfg = _config(tmp_path, [tool], [CORRECT, CALLED], steps=2, tokens=190)
    run = RunFolder(tmp_path / "run")
    status = train_run(cfg, run)
    assert status["state"] == "finished", status.get("error")
    answers = [m["content"] for r in _rows(run) for m in r.get("trajectory") or [] if m["role"] == "tool"]
    assert answers, "the model made no call to the faulty tool"
    for text in answers:  # each call's outcome is text the model read: an error, or the garbage made text
        assert text.startswith("{'error':") or text.startswith('"<object object')
    steps = _metrics(run)
    assert len(steps) == 2 and max(m["tools/error_rate"] for m in steps) > 0
    assert sum(m.get("tools/calculator/errors", 0) for m in steps) > 0
    assert all("reward" in m for m in steps)


@pytest.mark.slow
def test_an_exported_bundle_with_tools_trains_headless(agent_run, tmp_path):
    from finetuner.runs.export import export_bundle

    run, _ = agent_run
    bundle = export_bundle(run)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "b")
    [yaml_file] = list((tmp_path / "b").glob("*/run.yaml"))  # the bundle's one folder
    spec = yaml_file.read_text()
    assert "calculator" in spec and "tools:" in spec
    out = subprocess.run([sys.executable, "-m", "finetuner", "train", str(yaml_file),
                          "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                           "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr[-2000:]
    [folder] = list((tmp_path / "runs").iterdir())
    trained = RunFolder(folder)
    assert trained.read_status()["state"] == "finished"
    assert _metrics(trained) and any(r.get("trajectory") for r in _rows(trained))
