"""The real-model demo task: a 2- or 3-digit number plus a single digit, answered as exactly "Answer: N".

Why this task: SmolLM2-135M-Instruct adds small numbers in prose ("48 + 7 = 55"), but often wrongly and never
in the format; the answer is checkable and a few tokens long, so RFT steps stay cheap on a CPU. SFT (a few
steps) teaches the format; RFT, rewarded for the right sum, then works on the sums themselves, where the
model's samples disagree (carries), which is what GRPO learns from. A first RFT setting (60 steps x 2 prompts,
lr 2e-4) lowered held-out accuracy (0.275 -> 0.15), its training reward falling: too few prompts per step and
too high a rate. The shipped one (30 steps x 4 prompts x 8 samples, lr 5e-5), chosen on the "val" split (0.217
-> 0.275 there), gives 0.275 -> 0.335 on the held-out split, one seed, 660 s on 2 CPU cores. A first
choice, "which of two numbers is larger", was too easy: after 20 SFT steps validation accuracy was 0.97 and
GRPO groups all agreed.

Splits, by a hash of the *unordered* pair (so "48+7" and "7+48" share a side): "eval" (1 bucket of 8) is the
held-out set the demo reports; "val" (another bucket) is for choosing hyper-parameters without looking at
"eval"; "train" (the other 6) feeds SFT and RFT. Scoring reuses arith's strict "Answer: <int>" checks and its
greedy chat generation, so the base model, SFT and RFT are measured the same way.
"""

from __future__ import annotations

import hashlib
import random

from finetuner.demo import arith

BIG = (10, 199)   # the larger operand
SMALL = (2, 9)    # the single digit
BUCKETS = 8
SPLIT_OF_BUCKET = {0: "eval", 1: "val"}  # every other bucket is "train"

QUESTION_TEMPLATES = arith.QUESTION_TEMPLATES[:5]  # the tiny demo's phrasings but "{a}+{b}=?"


def split_of(a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    digest = hashlib.sha256(f"{lo} plus {hi}".encode()).digest()
    return SPLIT_OF_BUCKET.get(digest[0] % BUCKETS, "train")


def pairs(split: str) -> list[tuple[int, int]]:
    """All ordered (a, b) pairs of a split (the digit first or second), in a fixed order."""
    out = [(big, small) for big in range(BIG[0], BIG[1] + 1) for small in range(SMALL[0], SMALL[1] + 1)]
    out += [(small, big) for big, small in out]
    return [(a, b) for a, b in out if split_of(a, b) == split]


def rows(n: int, seed: int, split: str) -> list[dict]:
    """n problems {"prompt", "answer"} of `split`, distinct ordered pairs until the split is used up."""
    rng = random.Random(seed)
    return [{"prompt": rng.choice(QUESTION_TEMPLATES).format(a=a, b=b), "answer": str(a + b)}
            for a, b in arith.distinct_pairs(pairs(split), n, rng)]


def evaluate(model, tokenizer, rows: list[dict], max_new_tokens: int = 12, batch_size: int = 64) -> dict:
    """Greedy chat answers: shares in the exact "Answer: N" format and with the right sum, 0..1."""
    return arith.evaluate(model, tokenizer, rows, max_new_tokens, batch_size)
