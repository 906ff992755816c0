"""The arithmetic demo task: two-digit additions answered as exactly "Answer: N".

Used by `scripts/build_tiny.py` (pre-training corpus and quality checks), by the
SFT -> RFT demo and by tests. Pure Python; `evaluate`/`generate` import torch lazily.

Problem space: a + b with 10 <= a, b <= 99 (answers 20..198). After pre-training
the tiny model adds such numbers well but not perfectly, which leaves RFT room to help.

Held-out split: every problem is assigned to "train" or "eval" by a hash of its
*unordered* operand pair, so "23+45" and "45+23" always land on the same side
(about 1 problem in 8 is "eval"). `sft_rows` and `rft_rows` draw only from "train",
`eval_rows` only from "eval", so held-out questions are disjoint from training
questions for every seed, not just the defaults. The pre-training corpus of the
tiny model also uses "train" problems only, so held-out accuracy measures
generalisation, not memorisation.
"""

from __future__ import annotations

import hashlib
import json
import random
import re

LOW, HIGH = 10, 99
EVAL_BUCKETS = 8  # 1 of 8 hash buckets is held out

# User phrasings; the demo varies them so the model cannot key on one string.
QUESTION_TEMPLATES = [
    "What is {a}+{b}?",
    "What is {a} + {b}?",
    "What is {a} plus {b}?",
    "Compute {a}+{b}.",
    "Add {a} and {b}.",
    "{a}+{b}=?",
]

# Strict: the whole completion (surrounding whitespace aside) is "Answer: <int>".
# Anything after the number (more text, a second answer) is not the format, so
# RFT also rewards stopping right after the answer.
_FORMAT = re.compile(r"Answer: (-?\d+)")


# Small talk the built-in model is pre-trained on (scripts/build_tiny.py), with the replies it learns; the Lab's
# demo keep set (examples/lab/make_data.py) checks it is not forgotten.
SMALL_TALK = [
    ("Hi!", "Hello! How can I help?"),
    ("Who are you?", "I am a tiny model that adds numbers."),
    ("Thanks!", "You're welcome."),
    ("Can you add numbers?", "Yes, ask me a sum."),
    ("What can you do?", "I can add two numbers."),
    ("Say hello.", "Hello!"),
]


def split_of(a: int, b: int) -> str:
    """'eval' or 'train' for the problem a+b (stable across Python runs and platforms)."""
    lo, hi = sorted((a, b))
    digest = hashlib.sha256(f"{lo}+{hi}".encode()).digest()
    return "eval" if digest[0] % EVAL_BUCKETS == 0 else "train"


def pairs(split: str) -> list[tuple[int, int]]:
    """All (a, b) operand pairs of a split, in a fixed order."""
    return [(a, b) for a in range(LOW, HIGH + 1) for b in range(LOW, HIGH + 1) if split_of(a, b) == split]


def question(a: int, b: int, rng: random.Random) -> str:
    return rng.choice(QUESTION_TEMPLATES).format(a=a, b=b)


def make_problem(rng: random.Random, split: str = "train") -> dict:
    """One random problem of `split`: {"question", "answer" (str), "a", "b"}."""
    while True:  # rejection sampling; 7 of 8 draws are "train", 1 of 8 "eval"
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if split_of(a, b) == split:
            return {"question": question(a, b, rng), "answer": str(a + b), "a": a, "b": b}


def distinct_pairs(pool: list[tuple[int, int]], n: int, rng: random.Random):
    """n pairs of `pool`: distinct until it is used up, then it cycles, each pass shuffled. A generator, so a
    caller drawing from `rng` between pairs (a phrasing per problem) keeps one seeded sequence."""
    made = 0
    while made < n:
        order = pool[:]
        rng.shuffle(order)
        for pair in order[: n - made]:
            made += 1
            yield pair


def _sample(n: int, seed: int, split: str) -> list[dict]:
    """n problems of `split`; distinct operand pairs until the split is used up, then it cycles."""
    rng = random.Random(seed)
    return [{"question": question(a, b, rng), "answer": str(a + b)} for a, b in distinct_pairs(pairs(split), n, rng)]


def sft_rows(n: int = 200, seed: int = 0) -> list[dict]:
    """Chat rows teaching the target format: user question -> "Answer: N"."""
    return [
        {"messages": [{"role": "user", "content": p["question"]}, {"role": "assistant", "content": f"Answer: {p['answer']}"}]}
        for p in _sample(n, seed, "train")
    ]


def rft_rows(n: int = 2000, seed: int = 1) -> list[dict]:
    """Prompt rows for RFT/GRPO: {"prompt": user text, "answer": "68"} (graders read `answer`)."""
    return [{"prompt": p["question"], "answer": p["answer"]} for p in _sample(n, seed, "train")]


def eval_rows(n: int = 200, seed: int = 2) -> list[dict]:
    """Held-out rows like `rft_rows`, from the "eval" split (disjoint from training questions)."""
    return [{"prompt": p["question"], "answer": p["answer"]} for p in _sample(n, seed, "eval")]


def is_format(text: str) -> bool:
    """True if the completion is exactly "Answer: <int>" (surrounding whitespace ignored)."""
    return _FORMAT.fullmatch(text.strip()) is not None


def is_correct(text: str, answer) -> bool:
    """True if the completion is in the target format AND its number equals `answer`."""
    m = _FORMAT.fullmatch(text.strip())
    return m is not None and int(m.group(1)) == int(answer)


def reward(text: str, answer) -> float:
    """1.0 for the correct answer in the format, plus 0.1 for the format alone (max 1.1)."""
    return (1.0 if is_correct(text, answer) else 0.0) + (0.1 if is_format(text) else 0.0)


def last_int(text: str) -> int | None:
    """The last integer in free text ("The sum is 68." -> 68); used to judge answers in any style."""
    found = re.findall(r"-?\d+", text)
    return int(found[-1]) if found else None


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 12, batch_size: int = 64,
             chat: bool = True) -> list[str]:
    """Greedy completions for user texts (through the chat template if `chat`), special tokens removed."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # decoder-only batch generation needs left padding
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            if chat:
                chunk = [
                    tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                    for p in chunk
                ]
            # The chat template already holds the special tokens; add no others.
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def evaluate(model, tokenizer, rows: list[dict], max_new_tokens: int = 12, batch_size: int = 64) -> dict:
    """Greedy chat answers to `rows` ({"prompt", "answer"}): rates of format and of correct answers, 0..1."""
    texts = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, batch_size)
    n = max(len(rows), 1)
    return {
        "format": sum(is_format(t) for t in texts) / n,
        "accuracy": sum(is_correct(t, r["answer"]) for t, r in zip(texts, rows)) / n,
    }


def labelled(rows: list[dict]) -> list[dict]:
    """Prompt rows with their SFT answer in the demo's format: prompt, completion "Answer: N", answer."""
    return [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]} for r in rows]


def write_jsonl(path, rows: list[dict]) -> None:
    """The examples' data files (examples/*/make_data.py), one JSON object per line."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
