"""Write this example's data from finetuner/demo/addsmall.py (run from the repo root: python examples/smollm2/make_data.py).

train.jsonl   200 labelled rows (prompt, completion "Answer: N", answer): SFT learns the format from them.
prompts.jsonl 2000 prompts with their answer: the RFT stage samples answers and the graders check them.
val.jsonl     200 validation problems, for choosing hyper-parameters (the run never reads them).
eval.jsonl    200 held-out problems, disjoint from all the above (addsmall's hash split), for the demo's measurements.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repo root, so this runs without installing the package

from finetuner.demo import addsmall, arith  # noqa: E402


def write(name: str, rows: list[dict]) -> None:
    arith.write_jsonl(HERE / name, rows)


if __name__ == "__main__":
    write("train.jsonl", arith.labelled(addsmall.rows(200, seed=0, split="train")))
    write("prompts.jsonl", addsmall.rows(2000, seed=1, split="train"))
    write("val.jsonl", arith.labelled(addsmall.rows(200, seed=3, split="val")))
    write("eval.jsonl", arith.labelled(addsmall.rows(200, seed=2, split="eval")))
