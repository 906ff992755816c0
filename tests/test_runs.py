"""The run folder: atomic status, append-only JSONL with a tolerant reader, run ids, dead-process detection."""

import os
import subprocess
import sys

import pytest

from finetuner.training.callbacks import prune_checkpoints
from graders.errors import RunError
from finetuner.runs import RunFolder, list_runs, new_run, open_run, read_jsonl, refresh_state, safe_name


def test_reader_skips_half_written_last_line_and_resumes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    rows, offset = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2]
    with open(path, "a") as fh:
        fh.write('ss": 0.5}\n{"step": 4}\n')
    more, offset2 = read_jsonl(path, offset)
    assert [r["step"] for r in more] == [3, 4] and more[0]["loss"] == 0.5
    assert offset2 == path.stat().st_size
    assert read_jsonl(path, offset2) == ([], offset2)


def test_reader_skips_a_corrupt_complete_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{garbage\n\xff\xfe\n{"a": 2}\n')
    assert [r["a"] for r in read_jsonl(path)[0]] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == ([], 0)


def test_status_is_merged_and_atomic(tmp_path):
    run = RunFolder(tmp_path)
    run.write_status(state="running", step=1)
    run.write_status(step=2)
    assert run.read_status() == {"state": "running", "step": 2}
    assert not list(tmp_path.glob("*.tmp"))


def test_appenders_write_whole_lines_with_numpy_like_values(tmp_path):
    class Scalar:
        def item(self):
            return 1.5

    run = RunFolder(tmp_path)
    run.append_metric({"loss": Scalar()})
    run.append_samples([{"a": 1}, {"a": 2}])
    assert run.metrics() == [{"loss": 1.5}] and len(run.samples()) == 2


def test_run_ids_are_unique_and_cannot_escape(tmp_path):
    a, b = new_run(tmp_path, "x"), new_run(tmp_path, "x")
    assert a.path != b.path and a.path.parent == tmp_path
    assert safe_name("../../etc/passwd") == "etc-passwd"
    (a.path / "status.json").write_text("{}")
    assert open_run(tmp_path, a.id).path == a.path.resolve()
    outside = new_run(tmp_path / "elsewhere", "x")
    (outside.path / "status.json").write_text("{}")
    for bad in ("..", "no-such-run", str(outside.path), f"../{tmp_path.name}/elsewhere/{outside.id}",
                f"elsewhere/{outside.id}"):
        with pytest.raises(RunError):
            open_run(tmp_path, bad)


def test_dead_process_is_marked_failed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = new_run(tmp_path, "dead")
    run.write_status(state="running", pid=proc.pid, created=1)
    status = refresh_state(run)
    assert status["state"] == "failed" and "No checkpoint had been saved yet" in status["error"]
    assert list_runs(tmp_path)[0]["state"] == "failed"
    # With a checkpoint, the message says how to resume from it.
    (run.checkpoints / "sft" / "checkpoint-4").mkdir(parents=True)
    (run.checkpoints / "sft" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    run.write_status(state="running")
    assert "--resume" in refresh_state(run)["error"]


def test_live_process_stays_running(tmp_path):
    run = new_run(tmp_path, "alive")
    run.write_status(state="running", pid=os.getpid())
    assert refresh_state(run)["state"] == "running"


def test_prune_keeps_best_k_and_latest(tmp_path):
    for step in (10, 20, 30, 40):
        (tmp_path / f"checkpoint-{step}").mkdir()
    kept = prune_checkpoints(tmp_path, {10: 0.9, 20: 0.1, 30: 0.5, 40: 0.2}, keep=2)
    assert kept == [10, 30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-30", "checkpoint-40"]


WRITER = """
import sys
from finetuner.runs import RunFolder
run = RunFolder(sys.argv[1])
for i in range(300):
    run.write_status(**{sys.argv[2]: i})
"""


def test_concurrent_writers_lose_nothing_and_readers_never_see_a_torn_file(tmp_path):
    run = RunFolder(tmp_path)
    run.write_status(state="running")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), key]) for key in ("step", "other")]
    bad = 0
    while any(p.poll() is None for p in procs):
        status = run.read_status()
        bad += status.get("state") != "running"
    assert all(p.wait() == 0 for p in procs)
    final = run.read_status()
    assert bad == 0 and final == {"state": "running", "step": 299, "other": 299}
    assert not list(tmp_path.glob("*.tmp"))
