"""`test-grader`: grade a data file's answers with a grader file and print the dry-run report.

    python -m graders.cli test-grader --grader graders.yaml --data data.jsonl --sample-column answer \
        [--rows 20] [--json]

The data file is JSONL, JSON (a list of objects, or {"data": [...]}) or CSV. With --json the output is one
JSON object per graded sample and a last summary object (`{"summary": {...}}`). Exit code 0 when it ran
(whatever the scores), 2 for a problem with the files or the graders (the message says what to fix).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from graders.errors import DataError, FinetunerError


def read_rows(path: str) -> list[dict]:
    """Rows of a JSONL, JSON or CSV file (a small reader; the engine's loader does much more)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if path.lower().endswith(".csv"):
                return [dict(row) for row in csv.DictReader(fh)]
            text = fh.read()
    except OSError as err:
        raise DataError(f"cannot read data file {path}: {err}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"data file {path} is not UTF-8 CSV: {err}") from None
    stripped = text.lstrip()
    if path.lower().endswith(".json") or stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"data file {path} is not valid JSON: {err}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"data file {path} must hold a list of objects (one per row).")
        return data
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err}). Each line must be one object.") \
                from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected an object like {{\"question\": ...}}.")
        rows.append(row)
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test-grader", description="Grade a data file's answers with your graders "
                                "before training, and see whether the rewards can teach anything.")
    p.add_argument("--grader", required=True, help="grader file: our YAML/JSON, a run.yaml, or OpenAI grader JSON")
    p.add_argument("--data", required=True, help="data file: .jsonl, .json or .csv")
    p.add_argument("--sample-column", required=True, help="the column holding the text to grade")
    p.add_argument("--rows", type=int, default=None, help="grade only the first N rows")
    p.add_argument("--json", action="store_true", help="print JSON lines (rows, then a summary) instead")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "test-grader":
        argv = argv[1:]
    args = _parser().parse_args(argv)
    from graders.build import build_graders
    from graders.dryrun import dry_run, load_grader_file

    graders = []
    try:
        specs = load_grader_file(args.grader)
        graders = build_graders(specs, base_dir=os.path.dirname(os.path.abspath(args.grader)))
        rows = read_rows(args.data)
        report = dry_run(graders, rows, sample_column=args.sample_column, rows_limit=args.rows)
    except FinetunerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for g in graders:
            g.close()
    emit(report, args.json)
    return 0


def emit(report, as_json: bool) -> None:
    """Print a dry-run report: the readable table, or one JSON object per sample then a summary object."""
    if as_json:
        for obj in report.rows_json():
            print(json.dumps(obj, ensure_ascii=False))
        print(json.dumps({"summary": report.summary_json()}, ensure_ascii=False))
    else:
        print(report.text())
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
