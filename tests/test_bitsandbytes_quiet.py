"""bitsandbytes stays out of processes that do not use it (models.keep_bitsandbytes_quiet): peft and trl import
it whenever it is installed, and on an AVX512-BF16 CPU that import logs "Failed to load CPU gemm_4bit_forward
... kernels" into every run log. Each check runs in a fresh subprocess, since the block lasts for a process."""

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetuner.demo import arith
from finetuner.modeling import load as models

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = importlib.util.find_spec("bitsandbytes") is not None
# bitsandbytes really imported, not the None entry that keeps it out
IMPORTED = "print(json.dumps(sys.modules.get('bitsandbytes') is not None))"


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", f"import json, sys\n{code}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_importing_the_engine_does_not_import_bitsandbytes():
    engine = ("finetuner.cli", "finetuner.training.stages", "finetuner.modeling.load", "finetuner.planning.gpu_defaults", "finetuner.planning.memory",
              "finetuner.runs.export", "finetuner.evaluation.heldout", "finetuner.runs", "finetuner.config")
    assert python(f"import {', '.join(engine)}\n{IMPORTED}") == "false"


def test_the_noise_line_becomes_a_short_note():
    record = logging.LogRecord(models._BNB_CPU_LOGGER, logging.WARNING, "ops.py", 253,
                               "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure "
                               "you already `pip install kernels`", ("No module named 'kernels'",), None)
    assert models._bnb_note(record) and "gemm_4bit_forward" not in record.getMessage()
    assert "CUDA only" in record.getMessage() and record.levelname == "INFO"
    other = logging.LogRecord(models._BNB_CPU_LOGGER, logging.WARNING, "ops.py", 1, "something else", (), None)
    assert models._bnb_note(other) and other.getMessage() == "something else"


@pytest.mark.slow
@pytest.mark.skipif(not INSTALLED, reason="bitsandbytes is not installed: nothing to keep out")
def test_peft_and_trl_import_it_unless_kept_out():
    if cuda():
        pytest.skip("a CUDA machine uses bitsandbytes (QLoRA, 8-bit optimizers): it is not kept out there")
    libraries = "import peft\nfrom trl import GRPOTrainer, SFTTrainer\n"
    assert python(libraries + IMPORTED) == "true"  # what every run did before
    kept = python("from finetuner.modeling import load as models\nkept = models.keep_bitsandbytes_quiet()\n" + libraries +
                  "from finetuner.planning.gpu_defaults import resolve_optim\n"
                  "try:\n    resolve_optim('adamw_8bit', 'cpu')\nexcept Exception as err:\n    why = str(err)\n"
                  "print(json.dumps([kept, sys.modules.get('bitsandbytes') is not None, "
                  "models.bitsandbytes_available(), why]))")
    kept_out, imported, available, why = json.loads(kept)
    assert kept_out and not imported
    # still known as installed, so a CPU refusal names the real reason, not "install bitsandbytes"
    assert available and "needs a CUDA GPU" in why


@pytest.mark.slow
def test_sft_rft_run_on_cpu_keeps_it_out_of_the_run(tmp_path):
    """A real short CPU LoRA run through `python -m finetuner train`: it trains, and neither its log.txt nor
    its process has bitsandbytes in it."""
    if cuda():
        pytest.skip("on CUDA the run uses bitsandbytes")
    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
            for r in arith.rft_rows(16, seed=5)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grader = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
              "reference": "Answer: {{item.answer}}", "operation": "eq"}
    spec = {"name": "quiet", "method": "sft+rft", "model": {"name": "tiny", "max_length": 64},
            "data": {"train": "rows.jsonl"}, "graders": [grader],
            "sft": {"max_steps": 2, "batch_size": 8, "save_steps": 100},
            "rft": {"max_steps": 1, "batch_size": 8, "num_generations": 4, "max_completion_length": 8,
                    "save_steps": 100}}
    from finetuner.config import yaml_text

    (tmp_path / "run.yaml").write_text(yaml_text(spec))
    # the CLI as a launched run starts it, then one question to the finished process: was bitsandbytes loaded?
    code = ("import runpy\nsys.argv = ['finetuner', 'train', 'run.yaml', '--runs-dir', 'runs']\n"
            "try:\n    runpy.run_module('finetuner', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as end:\n    assert not end.code, end.code\n" + IMPORTED)
    done = subprocess.run([sys.executable, "-c", f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\n{code}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "false"
    run = next((tmp_path / "runs").iterdir())
    log = (run / "log.txt").read_text()
    assert "gemm_4bit_forward" not in log and "gemm_4bit_forward" not in done.stderr
    losses = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    assert any(m.get("stage") == "sft" for m in losses) and any(m.get("stage") == "rft" for m in losses)
