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


def test_agent_demo_runs_sft_then_agent_rft_with_the_tool(tmp_path, capsys):
    """`demo --agent`, shortened (10 RFT steps, 50 held-out rows): the base model calls the calculator on about
    half the problems and never in the format; SFT on the demonstrations teaches the call and the format; the
    numbers reach the table and the Monitor's held-out curve. The full demo's numbers are in README."""
    from finetuner.demo.run import run_demo

    assert run_demo(runs_dir=str(tmp_path), as_json=True, model="agent", rft_steps=10, heldout_rows=50,
                    overrides={"eval": {"every_steps": 10, "rows": 50}}) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["base"]["format"] == 0.0 and 0.2 < result["base"]["tool_call_rate"] < 0.8
    assert result["sft"]["format"] >= 0.9 and result["sft"]["tool_call_rate"] >= 0.9
    assert result["sft"]["accuracy"] > 0.2 and "rft" in result
    held = [m for m in RunFolder(Path(result["run_dir"])).metrics() if "heldout/tool_call_rate" in m]
    assert held and held[0]["heldout/correct"] == 0.0 and held[-1]["stage"] == "rft"
