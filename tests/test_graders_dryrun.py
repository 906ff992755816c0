"""Dry run reports, grader files, and the test-grader CLI."""

import json

import pytest

from graders.errors import ConfigError, DataError
from graders import build_graders
from graders.cli import main, read_rows
from graders.dryrun import dry_run, load_grader_file

EXACT = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
ROWS = [{"q": "1+1", "answer": "2", "guess": "2"}, {"q": "2+2", "answer": "4", "guess": "5"},
        {"q": "3+3", "answer": "6", "guess": "6"}]


def test_sample_column_report():
    graders = build_graders([EXACT, {"name": "short", "type": "length", "max": 5, "weight": 0.5}])
    report = dry_run(graders, ROWS, sample_column="guess")
    rows = report.rows_json()
    assert [r["total"] for r in rows] == [1.5, 0.5, 1.5]
    assert rows[1] == {"row": 1, "scores": {"exact": 0.0, "short": 1.0}, "total": 0.5, "errors": {},
                       "logs": rows[1]["logs"]} and "sample" not in rows[1]
    summary = report.summary_json()
    assert summary["mean"] == pytest.approx(3.5 / 3) and summary["error_rate"] == 0
    assert summary["range"] == [0.0, 1.5] and sum(summary["histogram"]["counts"]) == 3
    assert summary["graders"]["exact"]["mean"] == pytest.approx(2 / 3) and summary["warnings"] == []
    text = report.text()
    assert "exact" in text and "Mean reward 1.167" in text and "Histogram" in text


def test_k_samples_per_row_and_no_signal_warning():
    graders = build_graders([EXACT])
    report = dry_run(graders, ROWS[:2], samples=[["2", "2", "2"], ["4", "5", "3"]])
    rows = report.rows_json()
    assert len(rows) == 6 and [r["sample"] for r in rows[:3]] == [0, 1, 2]
    summary = report.summary_json()
    assert summary["samples_per_row"] == 3 and summary["constant_groups"] == 0.5
    assert summary["mean_group_std"] > 0
    flat = dry_run(graders, ROWS[:2], samples=[["2", "2"], ["5", "5"]])
    assert any(w.startswith("no learning signal") for w in flat.summary_json()["warnings"])


def test_too_hard_and_too_easy():
    graders = build_graders([EXACT])
    hard = dry_run(graders, ROWS, samples=[["x"], ["y"], ["z"]])
    assert any(w.startswith("too hard") and "SFT" in w for w in hard.summary_json()["warnings"])
    easy = dry_run(graders, ROWS, sample_column="answer")
    assert any(w.startswith("too easy") for w in easy.summary_json()["warnings"])


def test_errors_are_counted_and_warned():
    graders = build_graders([EXACT, {"name": "py", "type": "python", "source": "def grade(s, i):\n    return None\n"}])
    report = dry_run(graders, ROWS, sample_column="guess", rows_limit=2)
    summary = report.summary_json()
    assert summary["samples"] == 2 and summary["error_rate"] == 0.5
    assert summary["errors_by_type"] == {"invalid_return": 2}
    assert report.rows_json()[0]["errors"]["py"]["type"] == "invalid_return"
    assert report.rows_json()[0]["scores"]["py"] is None
    assert any("failed" in w for w in summary["warnings"]) and "ERR invalid_retu" in report.text()


def test_where_samples_come_from_is_required():
    graders = build_graders([EXACT])
    with pytest.raises(DataError, match="row 1 has no column 'nope'"):
        dry_run(graders, ROWS, sample_column="nope")
    with pytest.raises(DataError, match="say where"):
        dry_run(graders, ROWS)
    with pytest.raises(DataError, match="samples for only 1"):
        dry_run(graders, ROWS, samples=[["a"]])


def test_load_grader_file_formats(tmp_path):
    (tmp_path / "list.yaml").write_text("- name: exact\n  type: string_check\n  input: '{{sample.output_text}}'\n"
                                        "  reference: '{{item.answer}}'\n  operation: eq\n")
    (tmp_path / "run.yaml").write_text("model: tiny\ngraders:\n  - name: short\n    type: length\n    max: 3\n")
    (tmp_path / "openai.json").write_text(json.dumps({"type": "string_check", "name": "x", "input": "a",
                                                      "reference": "a", "operation": "eq"}))
    (tmp_path / "job.json").write_text(json.dumps({"method": {"type": "reinforcement", "reinforcement": {
        "grader": {"type": "text_similarity", "input": "a", "reference": "a", "evaluation_metric": "bleu"}}}}))
    assert load_grader_file(str(tmp_path / "list.yaml"))[0]["name"] == "exact"
    assert load_grader_file(str(tmp_path / "run.yaml")) == [{"name": "short", "type": "length", "max": 3}]
    assert load_grader_file(str(tmp_path / "openai.json"))[0]["type"] == "string_check"
    [job] = load_grader_file(str(tmp_path / "job.json"))
    assert job["name"] == "job" and build_graders([job])[0].grade("a", {}).score == 1.0
    (tmp_path / "bad.yaml").write_text("just text")
    with pytest.raises(ConfigError, match="must hold a grader"):
        load_grader_file(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_grader_file(str(tmp_path / "missing.yaml"))


def test_read_rows_formats(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "d.json").write_text('{"data": [{"a": 1}]}')
    (tmp_path / "d.csv").write_text("a,b\n1,x\n")
    assert read_rows(str(tmp_path / "d.jsonl")) == [{"a": 1}, {"a": 2}]
    assert read_rows(str(tmp_path / "d.json")) == [{"a": 1}]
    assert read_rows(str(tmp_path / "d.csv")) == [{"a": "1", "b": "x"}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        read_rows(str(tmp_path / "bad.jsonl"))


def test_cli(tmp_path, capsys):
    (tmp_path / "g.yaml").write_text(json.dumps([EXACT]))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    args = ["test-grader", "--grader", str(tmp_path / "g.yaml"), "--data", str(tmp_path / "d.jsonl"),
            "--sample-column", "guess"]
    assert main(args) == 0
    assert "Mean reward 0.667" in capsys.readouterr().out
    assert main(args + ["--json", "--rows", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["row"] for line in lines[:-1]] == [0, 1] and lines[-1]["summary"]["samples"] == 2
    assert main(["--grader", str(tmp_path / "g.yaml"), "--data", str(tmp_path / "d.jsonl"),
                 "--sample-column", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err
