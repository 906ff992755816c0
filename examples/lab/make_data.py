"""Write the Lab demo's keep set (run from the repo root: python examples/lab/make_data.py).

keep.jsonl: what the built-in model knew before any tuning and should not lose: its pre-training small talk
(arith.SMALL_TALK, reference replies) and 34 held-out sums asked in chat, answered in any style
(scored by the last number). The Lab scores it before training and after each arm: forgetting.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repo root, so this runs without installing the package

from finetuner.demo import arith  # noqa: E402

if __name__ == "__main__":
    rows = [{"prompt": q, "completion": a} for q, a in arith.SMALL_TALK]
    rows += [{"prompt": r["prompt"], "answer": r["answer"]} for r in arith.eval_rows(34, seed=7)]
    arith.write_jsonl(HERE / "keep.jsonl", rows)
