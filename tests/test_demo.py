"""The offline demo end to end: SFT teaches the format, RFT raises held-out accuracy (issue targets)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetuner.runs import RunFolder

pytestmark = pytest.mark.slow


def test_demo_meets_its_targets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "finetuner", "demo", "--runs-dir", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["base"]["format"] < 0.1  # the built-in model answers in other styles
    assert result["sft"]["format"] >= 0.9  # SFT teaches the format
    assert result["rft"]["accuracy"] >= result["sft"]["accuracy"] + 0.05  # RFT: >= 5 points on held-out sums
    assert result["heldout_rows"] == 200 and (tmp_path / result["run_dir"].split("/")[-1]).is_dir()
    # The Monitor's held-out curve (eval.every_steps, greedy, same 200 rows) ends where the printed table does.
    held = [m for m in RunFolder(Path(result["run_dir"])).metrics() if "heldout/correct" in m]
    sft_end, rft_end = [m for m in held if m["stage"] == "sft"][-1], held[-1]
    assert held[0]["run_step"] == 0 and held[0]["heldout/correct"] == result["base"]["accuracy"]
    assert abs(sft_end["heldout/correct"] - result["sft"]["accuracy"]) <= 0.01
    assert rft_end["stage"] == "rft" and abs(rft_end["heldout/correct"] - result["rft"]["accuracy"]) <= 0.01
    print(json.dumps(result))
