"""RewardBridge: graders as TRL reward functions, called the way GRPOTrainer calls them."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from graders import build_graders
from graders.reward import RewardBridge
from graders.testing import Reply, ScriptedJudgeServer

trl_utils = pytest.importorskip("trl.trainer.utils")


@pytest.fixture(scope="module")
def server():
    def script(body, n):
        return Reply('{"result": 1}' if "Answer: 4" in body["messages"][-1]["content"] else '{"result": 0.5}')

    with ScriptedJudgeServer(script) as s:
        yield s


def make_bridge(server):
    specs = [
        {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq", "weight": 2},
        {"name": "py", "type": "python",
         "source": "def grade(sample, item):\n    print('len', len(sample['output_text']))\n"
                   "    return 1.0 if item['answer'] in sample['output_text'] else 0.0\n"},
        {"name": "broken", "type": "python", "source": "def grade(sample, item):\n    return item['nope']\n",
         "weight": 0.5},
        {"name": "judge", "type": "score_model", "model": "m", "base_url": server.base_url,
         "input": "Q: {{item.prompt}} Answer: {{sample.output_text}}"},
    ]
    return RewardBridge(build_graders(specs))


def call_like_trl(bridge, prompts, completions, columns, step=3):
    """What GRPOTrainer._calculate_rewards does: sync functions in turn, then async ones gathered on a daemon
    loop, with the dataset columns, trainer_state, log_metric and log_extra as keyword arguments."""
    metrics, extra = {}, {}
    kwargs = dict(columns, trainer_state=SimpleNamespace(global_step=step),
                  log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
                  log_extra=lambda column, values: extra.setdefault(column, []).extend(values))
    rewards = {}
    async_funcs = []
    for func in bridge.reward_funcs:
        name = trl_utils.get_callable_name(func)
        if trl_utils.is_async_callable(func):
            async_funcs.append((name, func))
        else:
            rewards[name] = func(prompts=prompts, completions=completions, completion_ids=None, **kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def gather():
        outs = await asyncio.gather(*(f(prompts=prompts, completions=completions, completion_ids=None, **kwargs)
                                      for _, f in async_funcs))
        return dict(zip([n for n, _ in async_funcs], outs, strict=True))

    try:
        rewards.update(asyncio.run_coroutine_threadsafe(gather(), loop).result(30))
    finally:
        loop.call_soon_threadsafe(loop.stop)
    return rewards, metrics


def test_functions_are_named_weighted_and_sync_or_async(server):
    bridge = make_bridge(server)
    names = [trl_utils.get_callable_name(f) for f in bridge.reward_funcs]
    assert names == ["exact", "py", "broken", "judge"]
    assert [trl_utils.is_async_callable(f) for f in bridge.reward_funcs] == [False, False, False, True]
    assert bridge.weights == [2.0, 1.0, 0.5, 1.0]
    bridge.close()


def test_one_batch_merged_into_rows(server):
    bridge = make_bridge(server)
    prompts = ["2+2?", "2+2?", "3+3?"]
    completions = ["4", "The answer is 4", "7"]
    rewards, metrics = call_like_trl(bridge, prompts, completions, {"answer": ["4", "4", "6"]})
    assert rewards["exact"] == [1.0, 0.0, 0.0]
    assert rewards["py"] == [1.0, 1.0, 0.0]
    assert rewards["broken"] == [0.0, 0.0, 0.0]  # errors are zeros for TRL, never exceptions
    assert rewards["judge"] == [1.0, 0.5, 0.5]
    rows = bridge.drain_rows()
    assert len(rows) == 3 and bridge.drain_rows() == []
    first = rows[0]
    assert first["prompt"] == "2+2?" and first["completion"] == "4"
    assert first["scores"] == {"exact": 1.0, "py": 1.0, "broken": None, "judge": 1.0}
    assert first["total"] == pytest.approx(2 * 1.0 + 1.0 + 1.0)
    assert first["errors"]["broken"]["type"] == "runtime_error" and "KeyError" in first["errors"]["broken"]["message"]
    assert first["logs"]["py"] == "len 1\n" and "judge said 1" in first["logs"]["judge"]
    assert set(first["errors"]) == {"broken"}
    # pushed into TRL's metrics for the step
    assert metrics["graders/broken/errors"] == [3] and metrics["graders/broken/error_rate"] == [1.0]
    assert metrics["graders/exact/error_rate"] == [0.0]
    assert metrics["graders/error_rate"] == [pytest.approx(3 / 12)]
    assert metrics["time/grading_s"][0] > 0 and metrics["graders/judge/judge_latency_s"][0] > 0
    stats = bridge.drain_stats()
    assert stats["graders/broken/errors"] == 3 and stats["graders/broken/error_rate"] == 1.0
    assert stats["graders/error_rate"] == pytest.approx(0.25) and stats["time/grading_s"] > 0
    assert stats["graders/judge/judge_latency_s"] > 0 and stats["graders/judge/judge_calls"] == 3
    assert bridge.drain_stats()["graders/error_rate"] == 0.0  # drained
    bridge.close()


def test_conversational_batches(server):
    bridge = make_bridge(server)
    prompts = [[{"role": "user", "content": "2+2?"}]] * 2
    completions = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "5"}]]
    rewards, _ = call_like_trl(bridge, prompts, completions, {"answer": ["4", "4"]})
    assert rewards["exact"] == [1.0, 0.0]
    rows = bridge.drain_rows()
    assert rows[0]["prompt"] == "user: 2+2?" and rows[1]["completion"] == "5"
    bridge.close()


def test_two_steps_stay_separate(server):
    bridge = make_bridge(server)
    call_like_trl(bridge, ["2+2?"], ["4"], {"answer": ["4"]}, step=1)
    call_like_trl(bridge, ["2+2?"], ["5"], {"answer": ["4"]}, step=2)
    rows = bridge.drain_rows()
    assert [r["scores"]["exact"] for r in rows] == [1.0, 0.0] and [r["completion"] for r in rows] == ["4", "5"]
    bridge.close()


def test_a_grader_that_raises_never_reaches_trl(server, monkeypatch):
    bridge = make_bridge(server)
    grader = bridge.graders[0]

    def explode(samples, items):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(grader, "grade_batch", explode)
    rewards, _ = call_like_trl(bridge, ["q"], ["4"], {"answer": ["4"]})
    assert rewards["exact"] == [0.0]
    assert bridge.drain_rows()[0]["errors"]["exact"]["message"] == "RuntimeError: kaboom"
    bridge.close()


def test_reference_completion_column_is_item_completion():
    [g] = build_graders([{"name": "ref", "type": "string_check", "input": "{{sample.output_text}}",
                          "reference": "{{item.completion}}", "operation": "eq"}])
    bridge = RewardBridge([g])
    assert bridge.reward_funcs[0](prompts=["p"], completions=["42"], reference_completion=["42"]) == [1.0]
    bridge.close()


def test_direct_calls_without_trl_extras():
    [g] = build_graders([{"name": "len", "type": "length", "max": 3}])
    bridge = RewardBridge([g])
    assert bridge.reward_funcs[0](prompts=["p", "p"], completions=["abc", "abcd"]) == [1.0, 0.0]
    assert [r["total"] for r in bridge.drain_rows()] == [1.0, 0.0]
    bridge.close()
