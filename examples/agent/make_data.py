"""Write this example's data from finetuner/demo/agent_task.py (from the repo root: python examples/agent/make_data.py).

train.jsonl   32 tool-use demonstrations (messages: question, calculator call, its answer, "Answer: N").
prompts.jsonl 2000 prompts with their answer: Agent RFT samples tool-using answers and the graders check them.
eval.jsonl    200 held-out problems, disjoint from both (agent_task's hash split), as demonstrations with their
              `answer`: SFT reads them as chats, RFT and the held-out score as the question (the turns after it
              are the reference), the demo's measurement as prompt + answer.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repo root, so this runs without installing the package

from finetuner.demo import agent_task, arith  # noqa: E402

if __name__ == "__main__":
    arith.write_jsonl(HERE / "train.jsonl", agent_task.sft_rows(32, seed=0))
    arith.write_jsonl(HERE / "prompts.jsonl", agent_task.rft_rows(2000, seed=1))
    arith.write_jsonl(HERE / "eval.jsonl", agent_task.eval_demos(200, seed=2))
