"""Agent RFT demo task (finetuner/demo/agent_task.py) and the tool loop (finetuner/modeling/tool_chat.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from finetuner.demo import agent_task
from finetuner.demo.agent_task import calculator
from finetuner.modeling.tool_chat import run_with_tools
from finetuner.modeling.tiny import IM_END, build_tokenizer


# ---- the task module ----

def test_calculator_answers_and_refuses():
    assert calculator("347+589") == "936"
    assert calculator(" 12 * (3 - 5) ") == "-24"
    assert calculator("7/2") == "3.5" and calculator("8/2") == "4"
    for bad in ("2**10", "__import__('os')", "1.5+2", "abc", "1/0", "9" * 70):
        with pytest.raises(ValueError):
            calculator(bad)


def test_calculator_source_runs_alone_and_matches():
    space: dict = {}
    exec(agent_task.CALCULATOR_SOURCE, space)  # noqa: S102 -- our own source, as the sandbox will run it
    fn = space["calculator"]
    assert fn is not calculator
    for expr in ("347+589", "999+100", "6*7-2", "10/4", "-3+1"):
        assert fn(expr) == calculator(expr)
    with pytest.raises(ValueError):
        fn("open('x')")


def _pair(prompt: str) -> frozenset:
    return frozenset(int(x) for x in re.findall(r"\d+", prompt))


def test_splits_are_disjoint_and_sized():
    assert agent_task.split_of(34, 58) == agent_task.split_of(58, 34)
    held = {_pair(r["prompt"]) for r in agent_task.eval_rows(300)}
    train = {_pair(r["prompt"]) for r in agent_task.rft_rows(2000, seed=5)}
    train |= {_pair(r["messages"][0]["content"]) for r in agent_task.sft_rows(300, seed=7)}
    assert held and train and not held & train
    share = sum(agent_task.split_of(a, b) == "eval" for a in range(10, 100) for b in range(10, 100)) / 8100
    assert 0.09 < share < 0.16
    rows = agent_task.rft_rows(50, seed=3)
    assert all(10 <= n <= 99 for r in rows for n in _pair(r["prompt"]))
    for r in rows:
        a, b = map(int, re.findall(r"\d+", r["prompt"]))
        assert int(r["answer"]) == a * b
    assert rows == agent_task.rft_rows(50, seed=3) and rows != agent_task.rft_rows(50, seed=4)
    demos = agent_task.eval_demos(5)
    assert [agent_task.question_of(d) for d in demos] == [r["prompt"] for r in agent_task.eval_rows(5)]


def test_sft_row_renders_within_context_and_teaches_the_format():
    tok = build_tokenizer()
    row = agent_task.sft_rows(1, seed=0)[0]["messages"]
    a, b = re.findall(r"\d+", row[0]["content"])
    text = tok.apply_chat_template(row, tools=[calculator], tokenize=False)
    assert f'"expression":"{a}*{b}"' in text and text.rstrip().endswith(f"Answer: {int(a) * int(b)}{IM_END}")
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 256


def test_format_and_correctness():
    assert agent_task.is_correct(" Answer: 936 ", "936") and not agent_task.is_correct("Answer: 935", "936")
    assert agent_task.is_format("Answer: 12") and not agent_task.is_format("The sum is 936.")


# ---- the tool loop, on a fake model whose turns are scripted ----

class FakeModel:
    """Stands in for a causal LM: `policy(prompt_text) -> completion text` decides each turn; eos is appended
    unless the policy returns (text, False). Records every prompt it is shown."""

    def __init__(self, tok, policy, context=256):
        self.tok, self.policy, self.prompts = tok, policy, []
        self.training, self.device = True, torch.device("cpu")
        self.config = SimpleNamespace(max_position_embeddings=context)

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tok.decode([i for i, m in zip(ids, mask) if m])
            self.prompts.append(prompt)
            out = self.policy(prompt)
            text, stop = out if isinstance(out, tuple) else (out, True)
            new = self.tok(text, add_special_tokens=False)["input_ids"] + ([eos_token_id] if stop else [])
            rows.append(new[:max_new_tokens])
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def call_text(expression, name="calculator"):
    return f'<tool_call>{{"name":"{name}","arguments":{{"expression":"{expression}"}}}}</tool_call>'


def agent_policy(prompt):
    """Calls the (first) listed tool with the question's operands, then answers with the tool's result."""
    if "<|im_start|>tool\n" in prompt:
        return f"Answer: {prompt.rsplit('<|im_start|>tool' + chr(10), 1)[1].split(IM_END)[0]}"
    a, b = re.findall(r"\d+", prompt.split("<|im_start|>user\n")[1])[:2]
    return call_text(f"{a}*{b}", name=re.search(r"Tools: (\w+)\(", prompt).group(1))


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_loop_runs_the_tool_and_shows_its_answer_next_turn(tok):
    seen = []

    def recording(expression: str) -> str:
        """Records and answers.

        Args:
            expression: The expression.
        """
        seen.append(expression)
        return "RESULT-" + calculator(expression)

    model = FakeModel(tok, agent_policy)
    convs = [[{"role": "user", "content": "What is 37*59?"}], [{"role": "user", "content": "Multiply 10 and 25."}]]
    out = run_with_tools(model, tok, convs, [recording], max_calls=3)
    assert sorted(seen) == ["10*25", "37*59"]
    assert any("<|im_start|>tool\nRESULT-2183<|im_end|>" in p for p in model.prompts)
    first = out[0]
    assert first["calls"] == 1 and first["errors"] == 0 and not first["hit_limit"] and not first["truncated"]
    assert [m["role"] for m in first["messages"]] == ["assistant", "tool", "assistant"]
    assert first["messages"][0]["tool_calls"][0]["function"] == {"name": "recording", "arguments": {"expression": "37*59"}}
    assert first["messages"][1] == {"role": "tool", "name": "recording", "content": "RESULT-2183"}
    assert first["messages"][2] == {"role": "assistant", "content": "Answer: RESULT-2183"}
    assert out[1]["messages"][-1]["content"] == "Answer: RESULT-250"
    assert model.training is True and tok.padding_side == "right"  # restored


def test_failing_and_unknown_tools_answer_an_error(tok):
    def boom(expression: str) -> str:
        """Always fails.

        Args:
            expression: Ignored.
        """
        raise RuntimeError("broken tool")

    state = {"n": 0}

    def policy(prompt):
        state["n"] += 1
        return {1: call_text("1+1", "boom"), 2: call_text("1+1", "nosuch")}.get(state["n"], "Answer: 2")

    out = run_with_tools(FakeModel(tok, policy, context=1000), tok, [[{"role": "user", "content": "hi"}]], [boom])[0]
    tools = [m for m in out["messages"] if m["role"] == "tool"]
    assert [t["content"] for t in tools] == [str({"error": "broken tool"}), str({"error": "Tool nosuch not found."})]
    assert out["calls"] == 2 and out["errors"] == 2 and out["messages"][-1]["content"] == "Answer: 2"


def test_limits_end_the_loop_without_raising(tok):
    always = FakeModel(tok, lambda p: call_text("1+1"), context=1000)
    out = run_with_tools(always, tok, [[{"role": "user", "content": "hi"}]], [calculator], max_calls=2)[0]
    assert out["calls"] == 2 and out["hit_limit"] and "tool_calls" in out["messages"][-1]

    rambling = FakeModel(tok, lambda p: ("x" * 200, False))
    out = run_with_tools(rambling, tok, [[{"role": "user", "content": "hi"}]], [calculator], max_new_tokens=10)[0]
    assert out["truncated"] and out["calls"] == 0 and out["messages"] == [{"role": "assistant", "content": "x" * 10}]

    tight = FakeModel(tok, agent_policy, context=160)  # room for the call, not for the tool's answer turn
    out = run_with_tools(tight, tok, [[{"role": "user", "content": "What is 347+589?"}]], [calculator])[0]
    assert out["truncated"] and out["calls"] == 1

    garbled = FakeModel(tok, lambda p: '<tool_call>{"name":"calc')
    out = run_with_tools(garbled, tok, [[{"role": "user", "content": "hi"}]], [calculator])[0]
    assert out["calls"] == 0 and out["messages"][-1]["content"].startswith("<tool_call>")


def test_evaluate_scores_trajectories(tok):
    rows = agent_task.eval_rows(6)
    assert agent_task.evaluate(FakeModel(tok, agent_policy), tok, rows) == {
        "accuracy": 1.0, "tool_call_rate": 1.0, "format": 1.0}
    head = agent_task.evaluate(FakeModel(tok, lambda p: "Answer: 1000"), tok, rows)
    assert head["tool_call_rate"] == 0.0 and head["format"] == 1.0 and head["accuracy"] < 1.0


# ---- real models ----

def test_tool_loop_on_the_tiny_model(tok):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuner.modeling.tiny import tiny_path

    real_tok = AutoTokenizer.from_pretrained(tiny_path())
    model = AutoModelForCausalLM.from_pretrained(tiny_path())
    out = run_with_tools(model, real_tok, [[{"role": "user", "content": "What is 12+30?"}]] * 2, [calculator],
                         max_new_tokens=24)
    assert len(out) == 2 and out[0]["messages"] and out[0]["messages"][0]["role"] == "assistant"
    assert out[0] == out[1]  # greedy and batched: same question, same trajectory


def test_tiny_agent_calls_the_calculator_with_the_operands():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuner.modeling.load import resolve_model_path
    from finetuner.modeling.tiny import TINY_AGENT_DIR

    if not (TINY_AGENT_DIR / "model.safetensors").is_file():
        pytest.skip("tiny-agent is not built yet: python scripts/build_tiny.py --agent")

    path = resolve_model_path("tiny-agent")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rows = agent_task.eval_rows(40)
    runs = agent_task.trajectories(model, tok, rows)
    good = 0
    for row, run in zip(rows, runs):
        a, b = re.findall(r"\d+", row["prompt"])
        for m in run["messages"]:
            for call in m.get("tool_calls") or []:
                expr = str(call["function"]["arguments"].get("expression", ""))
                good += a in expr and b in expr
    assert good >= 8  # tiny-agent calls on about half the questions, with the right operands in most calls
