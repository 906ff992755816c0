"""Write the Lab demo's keep set (run from the repo root: python examples/lab/make_data.py).

keep.jsonl: what the built-in model knew before any tuning and should not lose: its pre-training small talk
(scripts/build_tiny.py SMALL_TALK, reference replies) and 34 held-out sums asked in chat, answered in any style
(scored by the last number). The Lab scores it before training and after each arm: forgetting.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repo root, so this runs without installing the package

from finetuner.demo import arith  # noqa: E402

SMALL_TALK = [  # as in scripts/build_tiny.py, which pre-trained the built-in model on them
    ("Hi!", "Hello! How can I help?"),
    ("Who are you?", "I am a tiny model that adds numbers."),
    ("Thanks!", "You're welcome."),
    ("Can you add numbers?", "Yes, ask me a sum."),
    ("What can you do?", "I can add two numbers."),
    ("Say hello.", "Hello!"),
]

if __name__ == "__main__":
    rows = [{"prompt": q, "completion": a} for q, a in SMALL_TALK]
    rows += [{"prompt": r["prompt"], "answer": r["answer"]} for r in arith.eval_rows(34, seed=7)]
    (HERE / "keep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
