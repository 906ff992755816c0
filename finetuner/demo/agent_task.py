"""The Agent RFT demo task: two-digit products answered as exactly "Answer: N", with a calculator tool.

Used by `scripts/build_tiny.py --agent` (pre-training transcripts and quality checks), by the offline demo
`python -m finetuner demo --agent` and by tests. Pure Python; `evaluate` imports torch (via tool_chat) lazily.

Problem space: a * b with 10 <= a, b <= 99. The built-in model adds two-digit numbers but was never taught to
multiply, so it cannot answer in its head; it can copy the operands into a `calculator` call and copy the
tool's result into its answer: accuracy comes from using the tool, which is what Agent RFT has to teach.
(Three-digit sums were tried first: the 0.45M model never learned to copy a three-digit first operand.)

Held-out split as in `finetuner.demo.arith`: a stable hash of the *unordered* operand pair puts 1 problem in
8 in "eval"; `sft_rows`/`rft_rows` draw only "train" problems, `eval_rows` only "eval" ones.
"""

from __future__ import annotations

import hashlib
import inspect
import random

from finetuner.demo import arith

LOW, HIGH = 10, 99
EVAL_BUCKETS = 8  # 1 of 8 hash buckets is held out

QUESTION_TEMPLATES = [
    "What is {a}*{b}?",
    "What is {a} * {b}?",
    "What is {a} times {b}?",
    "Compute {a}*{b}.",
    "Multiply {a} and {b}.",
    "{a}*{b}=?",
    "Calculate {a} * {b}.",
    "How much is {a} times {b}?",
]



def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression of integers with + - * / and parentheses.

    Args:
        expression: The expression to evaluate, e.g. 347+589.
    """
    # Self-contained (imports inside) so that CALCULATOR_SOURCE runs on its own in the grading sandbox.
    import ast

    if len(expression) > 64:  # bounds the work: no huge products from a long chain of multiplications
        raise ValueError("expression too long (64 characters at most)")
    ops = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y,
           ast.Mult: lambda x, y: x * y, ast.Div: lambda x, y: x / y}

    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError(f"unsupported expression: {expression!r} (integers with + - * / only)")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = ev(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


# The demo's tool as source text, so the engine can run it in its sandbox (a test checks it matches).
CALCULATOR_SOURCE = inspect.getsource(calculator)


def split_of(a: int, b: int) -> str:
    """'eval' or 'train' for the problem a*b (stable across Python runs and platforms)."""
    lo, hi = sorted((a, b))
    digest = hashlib.sha256(f"agent:{lo}+{hi}".encode()).digest()
    return "eval" if digest[0] % EVAL_BUCKETS == 0 else "train"


def question(a: int, b: int, rng: random.Random, template: int | None = None) -> str:
    """A phrasing of a*b: template number `template`, or a random one."""
    text = QUESTION_TEMPLATES[template] if template is not None else rng.choice(QUESTION_TEMPLATES)
    return text.format(a=a, b=b)


def make_pair(rng: random.Random, split: str = "train") -> tuple[int, int]:
    """One random operand pair of `split` (rejection sampling: 7 of 8 draws are "train")."""
    while True:
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if split_of(a, b) == split:
            return a, b


def _sample(n: int, seed: int, split: str) -> list[dict]:
    """n problems of `split` with distinct operand pairs (8100 pairs, 7 in 8 of them "train")."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:
        a, b = make_pair(rng, split)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        out.append({"question": question(a, b, rng), "answer": str(a * b), "a": a, "b": b})
    return out


def tool_call(expression: str) -> dict:
    """An assistant message calling the calculator, in TRL's shape."""
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}]}


def _demo(p: dict) -> list[dict]:
    return [{"role": "user", "content": p["question"]}, tool_call(f"{p['a']}*{p['b']}"),
            {"role": "tool", "name": "calculator", "content": p["answer"]},
            {"role": "assistant", "content": f"Answer: {p['answer']}"}]


def sft_rows(n: int = 50, seed: int = 0) -> list[dict]:
    """Tool-use demonstrations: question -> calculator call -> tool result -> "Answer: N"."""
    return [{"messages": _demo(p)} for p in _sample(n, seed, "train")]


def eval_demos(n: int = 200, seed: int = 2) -> list[dict]:
    """Held-out demonstrations (the "eval" split) with their `answer`: `eval_rows`' problems as chats."""
    return [{"messages": _demo(p), "answer": p["answer"]} for p in _sample(n, seed, "eval")]


def rft_rows(n: int = 2000, seed: int = 1) -> list[dict]:
    """Prompt rows for Agent RFT: {"prompt": user text, "answer": "936"} (graders read `answer`)."""
    return [{"prompt": p["question"], "answer": p["answer"]} for p in _sample(n, seed, "train")]


def eval_rows(n: int = 200, seed: int = 2) -> list[dict]:
    """Held-out rows like `rft_rows`, from the "eval" split (disjoint from training questions)."""
    return [{"prompt": p["question"], "answer": p["answer"]} for p in _sample(n, seed, "eval")]


# The final answer's format and correctness are the arithmetic demo's: exactly "Answer: <int>".
is_format, is_correct = arith.is_format, arith.is_correct


def final_text(messages: list[dict]) -> str:
    """The content of the last assistant message of a trajectory ('' if none)."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return message.get("content") or ""
    return ""


def called_calculator(messages: list[dict]) -> bool:
    return any(m.get("role") == "tool" and m.get("name") == "calculator" for m in messages)


def question_of(row: dict) -> str:
    """The question of a row: its `prompt`, or the user turn of a demonstration (eval.jsonl)."""
    if "prompt" in row:
        return row["prompt"]
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def trajectories(model, tok, rows: list[dict], batch_size: int = 64, **kwargs) -> list[dict]:
    """run_with_tools results (greedy by default) for `rows`, with the calculator as the only tool."""
    from finetuner.modeling.tool_chat import run_with_tools

    out: list[dict] = []
    for i in range(0, len(rows), batch_size):
        convs = [[{"role": "user", "content": question_of(r)}] for r in rows[i : i + batch_size]]
        out += run_with_tools(model, tok, convs, [calculator], **kwargs)
    return out


def evaluate(model, tok, rows: list[dict], batch_size: int = 64) -> dict:
    """Greedy tool-using answers to `rows`: accuracy, tool_call_rate and format rate, 0..1."""
    runs = trajectories(model, tok, rows, batch_size)
    n = max(len(rows), 1)
    finals = [final_text(r["messages"]) for r in runs]
    return {
        "accuracy": sum(is_correct(t, r["answer"]) for t, r in zip(finals, rows)) / n,
        "tool_call_rate": sum(called_calculator(r["messages"]) for r in runs) / n,
        "format": sum(is_format(t) for t in finals) / n,
    }
