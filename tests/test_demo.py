"""The offline demo end to end: SFT teaches the format, RFT raises held-out accuracy (issue targets)."""

import json
import subprocess
import sys

import pytest

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
    print(json.dumps(result))
