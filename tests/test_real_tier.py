"""The real-model tier, end to end on `smollm2-135m`: SFT on multi-turn chats, then RFT with a string_check and
a Python grader, through the engine's own run machinery; then evaluation and chat, as the app and the CLI do
them (the real model's merged export is in test_real_defects, its GGUF round trip in test_export_gguf). A few
steps each: this proves the path works on a real tokenizer, template and architecture, not that the model
learns (the real demo measures that)."""

import json

import pytest

from finetuner.config import from_dict, portable_config, save_config
from finetuner.runs import new_run
from finetuner.training.stages import train_run

pytestmark = [pytest.mark.real, pytest.mark.slow]

CHATS = [[{"role": "user", "content": f"What is {a}+{b}?"}, {"role": "assistant", "content": f"Answer: {a + b}"},
          {"role": "user", "content": f"And {b}+{a}?"}, {"role": "assistant", "content": f"Answer: {a + b}"}]
         for a, b in [(2, 3), (4, 4), (1, 6), (5, 2), (3, 3), (7, 1), (2, 2), (6, 3)]]
PROMPTS = [{"prompt": f"What is {a}+{b}? Reply as 'Answer: N'.", "answer": str(a + b)}
           for a, b in [(1, 2), (3, 4), (2, 5), (4, 1), (6, 2), (3, 5)]]
PYTHON = ("def grade(sample, item) -> float:\n"
          "    return 1.0 if item['answer'] in sample['output_text'] else 0.0\n")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, real_model):
    root = tmp_path_factory.mktemp("real-tier")
    spec = {
        "name": "real-tier", "method": "sft+rft", "seed": 0,
        "model": {"name": "smollm2-135m", "max_length": 96},
        "data": {"train": _jsonl(root / "chats.jsonl", [{"messages": m} for m in CHATS]),
                 "rft_train": _jsonl(root / "prompts.jsonl", PROMPTS),
                 # held-out rows in the training data's form (chats), with the graders' `answer` column
                 "eval": _jsonl(root / "eval.jsonl", [
                     {"messages": [{"role": "user", "content": p["prompt"]},
                                   {"role": "assistant", "content": f"Answer: {p['answer']}"}], "answer": p["answer"]}
                     for p in PROMPTS[:4]])},
        "graders": [{"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
                     "reference": "Answer: {{item.answer}}", "operation": "eq", "weight": 1.0},
                    {"name": "has_answer", "type": "python", "source": PYTHON, "weight": 0.5}],
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
        "sft": {"max_steps": 3, "batch_size": 4, "learning_rate": 5e-4, "save_steps": 100},
        "rft": {"max_steps": 2, "batch_size": 4, "num_generations": 4, "max_completion_length": 10,
                "learning_rate": 5e-5, "save_steps": 100, "logging_steps": 1},
    }
    cfg = from_dict(spec, base_dir=str(root))
    run = new_run(root / "runs", "real")
    save_config(portable_config(cfg), run.config_path)
    status = train_run(cfg, run)
    assert status["state"] == "finished", status.get("error")
    return run


def test_sft_then_rft_log_loss_reward_per_grader_and_rollouts(real_run):
    rows = real_run.metrics()
    sft = [r for r in rows if r.get("stage") == "sft" and r.get("loss") is not None]
    rft = [r for r in rows if r.get("stage") == "rft" and r.get("reward") is not None]
    assert len(sft) == 3 and all(r["loss"] > 0 for r in sft)
    assert len(rft) == 2 and all(0.0 <= r["reward"] <= 1.5 for r in rft)
    graded = [k for k in rft[-1] if k.startswith("rewards/")]
    assert any("exact" in k for k in graded) and any("has_answer" in k for k in graded), graded
    rollouts = real_run.samples()
    assert rollouts and all(isinstance(r.get("completion"), str) for r in rollouts), rollouts[:1]
    assert real_run.stage_adapter("sft").exists() and real_run.stage_adapter("rft").exists()


def test_evaluate_and_chat_on_the_tuned_real_model(real_run):
    from finetuner.evaluation.heldout import chat_reply, evaluate_run

    results = evaluate_run(real_run, rows=4)
    assert list(results["models"]) == ["base", "sft", "rft"]
    for variant in results["models"].values():
        assert set(variant["scores"]) == {"exact", "has_answer"} and variant["mean_chars"] > 0
    reply = chat_reply("smollm2-135m", str(real_run.stage_adapter("rft")), [{"role": "user", "content": "What is 2+2?"}],
                       temperature=0.0, max_new_tokens=12)
    assert isinstance(reply, str) and reply.strip()

