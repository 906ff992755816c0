"""Graders over a whole tool-use trajectory: the final answer, the calls (OpenAI's `output_tools` and our
`tool_calls`) and the messages, in templates, Python graders and the reward bridge's rows."""

from __future__ import annotations

import pytest

from graders import build_graders
from graders.base import GraderConfigError, make_sample
from graders.reward import RewardBridge

CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "347+589"}}}
TRAJECTORY = [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "name": "calculator", "content": "936"},
    {"role": "assistant", "content": "Answer: 936"},
]
FAILED = [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "name": "calculator", "content": "{'error': 'ZeroDivisionError: division by zero'}"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
]
PLAIN = [{"role": "assistant", "content": "Answer: 935"}]


def test_the_sample_of_a_trajectory():
    s = make_sample(TRAJECTORY)
    assert s["output_text"] == "Answer: 936"  # the final answer, not the call turn
    assert s["output_tools"] == [{"id": "call_0", "type": "function",
                                  "function": {"name": "calculator", "arguments": '{"expression": "347+589"}'}}]
    assert s["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "347+589"}, "result": "936",
                                "error": False}]
    assert s["messages"] == TRAJECTORY and s["turns"] == 2 and s["tool_errors"] == 0 and not s["unfinished"]
    f = make_sample(FAILED)
    assert f["tool_errors"] == 1 and f["unfinished"] and f["output_text"] == ""
    p = make_sample(PLAIN)
    assert p["output_tools"] == [] and p["tool_calls"] == [] and "messages" not in p
    assert (p["turns"], p["tool_errors"], p["unfinished"]) == (1, 0, False)  # graders read them in any rollout
    own_json = make_sample([{"role": "assistant", "content": "", "tool_calls": [CALL]},
                            {"role": "tool", "name": "calculator", "content": '{"error": "not found", "code": 404}'},
                            {"role": "assistant", "content": "Answer: none"}])
    assert own_json["tool_errors"] == 0  # a tool's own JSON answer is not a failed call
    assert p["choices"][0]["message"]["content"] == "Answer: 935"


def test_openai_tool_graders_from_its_guide_score_trajectories():
    [name_check] = build_graders([{"name": "tool", "type": "string_check", "operation": "eq",
                                   "input": "{{sample.output_tools[0].function.name}}", "reference": "calculator"}])
    assert name_check.grade(make_sample(TRAJECTORY), {}).score == 1.0
    no_call = name_check.grade(make_sample(PLAIN), {})
    assert no_call.score == 0.0 and no_call.error.type == "invalid_variable" and "0 entries" in no_call.error.message
    [args_check] = build_graders([{"name": "args", "type": "string_check", "operation": "like",
                                   "input": "{{sample.output_tools[0].function.arguments}}",
                                   "reference": "{{item.a}}+{{item.b}}"}])
    assert args_check.grade(make_sample(TRAJECTORY), {"a": 347, "b": 589}).score == 1.0
    [choice] = build_graders([{"name": "c", "type": "string_check", "operation": "eq",
                               "input": "{{sample.choices[0].message.content}}", "reference": "Answer: 936"}])
    assert choice.grade(make_sample(TRAJECTORY), {}).score == 1.0


def test_a_template_for_a_key_no_sample_has_is_refused_at_build():
    with pytest.raises(GraderConfigError, match="sample has no 'output_tool'"):
        build_graders([{"name": "t", "type": "string_check", "operation": "eq",
                        "input": "{{sample.output_tool[0]}}", "reference": "x"}])


PY = '''def grade(sample, item):
    calls = sample["tool_calls"]
    right = sample["output_text"] == "Answer: " + item["answer"]
    if not calls:
        return 0.5 * right             # a right answer without the tool: half marks
    wasted = sum(c["error"] for c in calls)
    return float(right) - 0.25 * wasted  # useless calls cost
'''


def test_python_graders_read_the_calls_and_their_results():
    [g] = build_graders([{"name": "use", "type": "python", "source": PY}])
    item = {"answer": "936"}
    assert g.grade(make_sample(TRAJECTORY), item).score == 1.0
    assert g.grade(make_sample([{"role": "assistant", "content": "Answer: 936"}]), item).score == 0.5
    assert g.grade(make_sample(FAILED), item).score == -0.25


def test_bridge_rows_keep_the_trajectory_and_mark_cut_rollouts():
    [g] = build_graders([{"name": "correct", "type": "string_check", "operation": "eq",
                          "input": "{{sample.output_text}}", "reference": "Answer: {{item.answer}}"}])
    bridge = RewardBridge([g])
    bridge.max_completion_tokens = 10
    scores = bridge.reward_funcs[0](prompts=["q1", "q2"], completions=[TRAJECTORY, PLAIN],
                                    completion_ids=[[1] * 10, [1] * 3], answer=["936", "936"])
    assert scores == [1.0, 0.0]
    a, b = bridge.drain_rows()
    assert a["trajectory"] == TRAJECTORY and a["completion"] == "Answer: 936" and a["truncated"]
    assert a["tools"] == {"calls": 1, "errors": 0, "turns": 2, "unfinished": False, "names": ["calculator"]}
    assert "trajectory" not in b and "truncated" not in b
    bridge.close()
