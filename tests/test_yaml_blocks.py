"""The YAML a person reads (Train tab's run.yaml, a run's config.yaml, the export's run.yaml) shows multi-line
text such as a Python grader's source as a literal block (`|`), and always loads back to the same values."""

import random

import pytest
import yaml

from finetuner.config import dump_yaml, from_dict, load_config, save_config, to_dict, yaml_text

SOURCE = ("import re\n\n\ndef grade(sample, item):\n    \"\"\"1 when the last number is the answer.\"\"\"\n"
          "    found = re.findall(r\"-?\\d+\", sample[\"output_text\"])\n"
          "    return float(bool(found) and found[-1] == item[\"answer\"])\n")
RUBRIC = "Score the answer from 0 to 1.\nQuestion: {{item.prompt}}\nAnswer: {{sample.output_text}}"


def run_config():
    return from_dict({"method": "rft", "data": {"train": "rows.jsonl"}, "graders": [
        {"name": "answer", "type": "python", "source": SOURCE},
        {"name": "judge", "type": "score_model", "model": "gpt-4o-mini", "input": [
            {"role": "user", "content": RUBRIC}]}]})


def test_python_grader_source_is_a_literal_block_that_loads_back(tmp_path):
    cfg = run_config()
    text = dump_yaml(cfg)
    assert "source: |\n" in text and "\\n" not in text  # a block, not one escaped line
    # the code reads as written, indented under its key
    assert '\n    def grade(sample, item):\n        """1 when the last number is the answer."""\n' in text
    assert "content: |-\n" in text  # the judge's rubric too (no final newline: `|-`)
    back = load_config(save_config(cfg, tmp_path / "run.yaml"))
    assert to_dict(back) == to_dict(cfg) and back.graders[0]["source"] == SOURCE


@pytest.mark.parametrize("value", [
    "a\n", "a", "a\nb", "a\n\n", "\n", "  leading spaces\nx\n", "\nstarts with a break",
    "x = 1   \ny = 2\n",  # trailing spaces on a line: PyYAML refuses a block, a quoted string is used
    "def f():\n\treturn 1\n",  # a tab
    "a\r\nb\r\n",  # Windows line ends
    "def f():\n    x = 1\n    \n    return x\n",  # a blank line holding indentation
    "a\n ", "key: value\n---\n...\n# not a comment\n", "ünïcode\n✓\n", "a\x85b", "a\u2028b\nc", "tail\n\n\n",
])
def test_every_string_loads_back_identically(value):
    data = {"graders": [{"name": "g", "source": value}], "after": value}
    text = yaml_text(data)
    assert yaml.safe_load(text) == data
    if "\n" in value and value.rstrip("\n") == value.rstrip() and "\t" not in value and "\r" not in value \
            and not any(c in value for c in "\x85\u2028\u2029") and " \n" not in value:
        assert "source: |" in text  # block wherever one can hold the text exactly


def test_random_strings_round_trip():
    # Characters YAML treats specially, mixed at random: whatever style is chosen, the value comes back.
    alphabet = ["a", " ", "\t", "\n", "\r", "#", ":", "-", "'", '"', "|", ">", "---", "...", "\x85", "\u2028",
                "\ufeff", "\x07", "é", "😀"]
    rng = random.Random(0)
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        data = {"graders": [{"source": value}], "name": value}
        assert yaml.safe_load(yaml_text(data)) == data, repr(value)


def test_one_line_strings_and_other_values_dump_as_before():
    data = {"name": "run", "lr": 0.001, "steps": 3, "on": True, "tags": ["a", "b"], "empty": "", "yes": "yes"}
    assert yaml_text(data) == yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
