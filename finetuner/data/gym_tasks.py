"""Ready-made verifiable tasks: RFT datasets and their grader from reasoning-gym's procedural generators.

reasoning-gym (PyPI `reasoning-gym`, pinned in requirements.txt) makes each task from a `*Config` dataclass and
scores answers with the task's own `score_answer`. Its curriculum classes (`create_curriculum(name)`) name the
difficulty knobs (number of terms, digits, words...) with a list of levels each; `set_global_level(k)` moves
every knob to level k (capped at that knob's last level) and `generate_configuration` returns the config. We
use level 0 for easy, the middle for medium, the last for hard, and every level in turn for mixed, and write
`difficulty` = 100 x level / last level, the column the RFT curriculum (`rft.difficulty_column`) reads.

Everything here is generated locally: reasoning-gym ships its word lists, and none of the listed tasks reads the
network or the Hugging Face Hub (the package has no such code; see tests/test_gym_tasks.py).
"""

from __future__ import annotations

import json
import random

from graders.errors import DataError

# Tasks that suit small models: one short answer, prompts mostly under 300 characters (word lists and many animals
# reach ~1,000 at the hardest level), a curriculum, and a scorer that the reference answer passes. Left out on
# purpose: caesar_cipher (its hardest curriculum level fails its own config check), number_sorting and
# number_filtering (prompts up to 2,000 characters), products and lcm (answers of 14-40 digits at the top
# levels), and the puzzle families (sudoku, arc, games), whose answers are grids or move lists a small model
# cannot produce.
TASKS = {
    "basic_arithmetic": "Evaluate an expression such as 3 + 4 * 2 (more terms and digits when harder).",
    "chain_sum": "Add and subtract a chain of integers (longer chains of bigger numbers when harder).",
    "simple_equations": "Solve a one-unknown linear equation such as 3x + 5 = 20 for x.",
    "gcd": "Greatest common divisor of a few integers.",
    "prime_factorization": "Write a number as its prime factors, e.g. 3 × 7 × 7.",
    "count_bits": "Count the 1 bits in the binary form of a number.",
    "base_conversion": "Convert a number from one base to another (e.g. base 10 to base 16).",
    "leg_counting": "Count the legs of a list of animals (more animals when harder).",
    "letter_counting": "Count how often a letter occurs in a sentence.",
    "spell_backward": "Spell a word backward (longer words when harder).",
    "word_sorting": "Sort a list of words alphabetically, ascending or descending.",
    "word_sequence_reversal": "Reverse the order of a list of words.",
}
DIFFICULTIES = ("easy", "medium", "hard", "mixed")
EVAL_SHARE = 0.1  # held-out share written by make_files


def _check(task: str, difficulty: str, size: int) -> None:
    if task not in TASKS:
        raise DataError(f"Unknown ready-made task '{task}'. Choose one of: {', '.join(TASKS)} "
                        "(`python -m finetuner make-task --list` describes them).")
    if difficulty not in DIFFICULTIES:
        raise DataError(f"Difficulty '{difficulty}' is not one of {', '.join(DIFFICULTIES)}.")
    if not 1 <= int(size) <= 100_000:
        raise DataError(f"Size {size} is out of range: ask for 1 to 100,000 rows.")


def _curriculum(task: str):
    try:
        from reasoning_gym.factory import create_curriculum
    except ImportError as err:
        raise DataError(f"Ready-made tasks need the reasoning-gym package ({err}). Install it with "
                        "`pip install reasoning-gym==0.1.25` (it is in requirements.txt).") from err
    return create_curriculum(task)


def levels(task: str) -> int:
    """How many difficulty levels the task's curriculum has (its longest knob)."""
    return max(len(a.levels) for a in _curriculum(task).attributes.values())


def _level_rows(task: str, level: int, last: int, count: int, seed: int) -> list[dict]:
    from reasoning_gym.factory import DATASETS

    curriculum = _curriculum(task)
    curriculum.set_global_level(level)
    config = curriculum.generate_configuration({"seed": seed, "size": count})
    if hasattr(config, "validate"):
        config.validate()  # create_dataset does this; the curriculum path does not
    dataset = DATASETS[task][0](config=config)
    rows = []
    for i in range(count):
        entry = dataset[i]
        rows.append({"prompt": entry["question"], "answer": str(entry["answer"]),
                     "difficulty": round(100 * level / last) if last else 0, "gym_task": task,
                     # The scorer's whole input: several read entry["metadata"], not only the answer.
                     "gym_entry": json.dumps(entry, ensure_ascii=False)})
    return rows


def generate(task: str, size: int, difficulty: str = "mixed", seed: int = 0) -> list[dict]:
    """`size` distinct rows of `task`: prompt, answer, difficulty (0-100), gym_task, gym_entry (JSON text).

    easy / medium / hard use one curriculum level; mixed spreads the rows evenly over every level, shuffled."""
    _check(task, difficulty, size)
    size, n_levels = int(size), levels(task)
    last = n_levels - 1
    chosen = {"easy": [0], "medium": [last // 2], "hard": [last], "mixed": list(range(n_levels))}[difficulty]
    want = {lvl: size // len(chosen) + (k < size % len(chosen)) for k, lvl in enumerate(chosen)}
    rows, seen = [], set()
    for lvl, count in want.items():
        if not count:
            continue
        # Easy levels repeat questions (few small numbers), so ask for more and keep the distinct ones.
        got = [r for r in _level_rows(task, lvl, last, 2 * count + 8, seed * 1000 + lvl) if r["prompt"] not in seen]
        got = list({r["prompt"]: r for r in got}.values())[:count]
        seen.update(r["prompt"] for r in got)
        rows += got
    if len(rows) < size:
        raise DataError(f"Task '{task}' at difficulty '{difficulty}' has only {len(rows)} distinct questions for "
                        f"seed {seed}; ask for at most {len(rows)} rows, or choose a harder or mixed difficulty.")
    random.Random(seed).shuffle(rows)
    return rows


def grader_spec(task: str, name: str = "correct") -> dict:
    """The run YAML's grader for `task`: the task's own scorer on the answer found in the completion."""
    _check(task, "mixed", 1)
    return {"name": name, "type": "reasoning_gym", "task": task, "entry_column": "gym_entry", "weight": 1.0}


def _write_jsonl(path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_files(task: str, size: int, difficulty: str, seed: int, out_dir, stem: str = "") -> tuple:
    """Write `<stem>train.jsonl` (size rows) and `<stem>eval.jsonl` (held out: 10% more, at least 10, never in
    train) into out_dir; returns their paths."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_eval = max(10, round(int(size) * EVAL_SHARE))
    rows = generate(task, int(size) + n_eval, difficulty, seed)
    train, held = out / f"{stem}train.jsonl", out / f"{stem}eval.jsonl"
    _write_jsonl(train, rows[n_eval:])
    _write_jsonl(held, rows[:n_eval])
    return train, held


def run_config(task: str, difficulty: str, model: str = "smollm2-135m") -> dict:
    """A modest RFT run on the made files (relative paths: the YAML sits beside them)."""
    rft = {"max_steps": 100, "batch_size": 8, "num_generations": 4, "max_completion_length": 64,
           "learning_rate": 1.0e-5, "logging_steps": 5}
    if difficulty == "mixed":
        rft.update(curriculum="adarft", difficulty="column")  # the spread is what AdaRFT's curriculum steps along
    return {"name": f"gym-{task}", "method": "rft", "model": {"name": model},
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"}, "graders": [grader_spec(task)], "rft": rft,
            "eval": {"every_steps": 20, "rows": 50}, "seed": 0}
