"""Graders stand alone: with the engine made unimportable, `graders` imports, builds built-in and Python graders
and grades a row (the import-linter contract checks the source; this checks a real process)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import importlib.abc, json, sys

class NoEngine(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "finetuner" or name.startswith("finetuner.") or name == "benchmarks":
            raise ImportError(f"the engine is not importable here ({name})")

sys.meta_path.insert(0, NoEngine())
from graders import build_graders

graders = build_graders([
    {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
     "reference": "Answer: {{item.answer}}", "operation": "eq"},
    {"name": "py", "type": "python",
     "source": "def grade(sample, item) -> float:\n    return 0.25 if item['answer'] in sample['output_text'] else 0.0\n"},
])
scores = {g.name: g.grade("Answer: 42", {"answer": "42"}).score for g in graders}
wrong = {g.name: g.grade("Answer: 41", {"answer": "42"}).score for g in graders}
print(json.dumps({"scores": scores, "wrong": wrong,
                  "engine_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "finetuner")}))
'''


def test_graders_import_and_grade_with_the_engine_unimportable():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["scores"] == {"exact": 1.0, "py": 0.25}
    assert result["wrong"] == {"exact": 0.0, "py": 0.0}
    assert result["engine_loaded"] == []
