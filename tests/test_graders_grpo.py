"""End to end: our reward functions inside a real TRL GRPOTrainer step on the built-in tiny model."""

import os

import pytest

from graders import build_graders
from graders.reward import RewardBridge
from graders.testing import Reply, ScriptedJudgeServer


def _tiny():
    tiny = pytest.importorskip("finetuner.modeling.tiny")
    if not os.path.isfile(os.path.join(tiny.TINY_DIR, "model.safetensors")):
        pytest.skip("the built-in tiny model is not built (finetuner/modeling/assets/tiny)")
    return tiny.tiny_path()


@pytest.mark.slow
def test_one_grpo_step_with_builtin_python_and_judge_graders(tmp_path):
    path = _tiny()
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with ScriptedJudgeServer(lambda body, n: Reply('{"result": 0.5}')) as server:
        bridge = RewardBridge(build_graders([
            {"name": "mentions_answer", "type": "string_check", "input": "{{sample.output_text}}",
             "reference": "{{item.answer}}", "operation": "like"},
            {"name": "digits", "type": "python", "weight": 0.5,
             "source": "def grade(sample, item):\n    return sum(c.isdigit() for c in sample['output_text']) / 10\n"},
            {"name": "judge", "type": "score_model", "model": "m", "base_url": server.base_url,
             "input": "Question: {{item.prompt}} Answer: {{sample.output_text}}"},
        ]))
        rows = [{"prompt": [{"role": "user", "content": f"What is {a}+{b}?"}], "answer": str(a + b)}
                for a, b in [(12, 30), (45, 11)]]
        args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                              max_completion_length=8, max_steps=1, logging_steps=1, report_to="none",
                              bf16=False, use_cpu=True, save_strategy="no", reward_weights=bridge.weights)
        trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path),
                                  processing_class=AutoTokenizer.from_pretrained(path),
                                  reward_funcs=bridge.reward_funcs, args=args,
                                  train_dataset=Dataset.from_list(rows * 2))
        trainer.train()
        samples = bridge.drain_rows()
        bridge.close()
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert {"rewards/mentions_answer/mean", "rewards/digits/mean", "rewards/judge/mean"} <= set(logged)
    assert logged["rewards/judge/mean"] == pytest.approx(0.5)
    assert logged["graders/error_rate"] == 0.0 and logged["time/grading_s"] > 0
    assert len(samples) == 4 and all(set(s["scores"]) == {"mentions_answer", "digits", "judge"} for s in samples)
    assert all(s["errors"] == {} and s["prompt"].startswith("user: What is") for s in samples)
