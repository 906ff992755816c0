"""Resource bounds: on a long run metrics.jsonl and samples.jsonl stay under their caps on disk, every reader
(run_watch / Monitor, Runs table, RunFolder.metrics) sees one continuous timeline across rotations, and the
Monitor refresh on a 100,000-step run is measured (printed, not asserted)."""

import json
import os
import time

import pytest

from finetuner.runs.jsonl_log import JsonlTail, segments
from finetuner.runs import RunFolder
from finetuner.ui import rollouts, run_watch, tab_monitor, tab_runs
from finetuner.ui.context import AppContext

NO_FILTER = ("", "", "all", rollouts.ALL, "total", "", "", "")
STEPS = 100_000


def metric_row(i: int, half: int = STEPS // 2) -> dict:
    stage = "sft" if i <= half else "rft"
    row = {"stage": stage, "step": i if stage == "sft" else i - half, "run_step": i, "time": i, "loss": 1 / i,
           "time/step_s": 0.5, "memory/peak_gb": 1.0}
    if stage == "rft":
        row.update({"reward": (i % 100) / 100, "reward_std": 0.1, "kl": 0.01})
    return row


def sample_rows(step: int) -> list[dict]:
    return [{"stage": "rft", "step": step, "split": "train", "prompt": "What is 2+2? " * 20,
             "completion": f"Answer: {g}" + " so" * 40, "scores": {"exact": 0.0}} for g in range(4)]


def live_run(root, name="long", **caps) -> RunFolder:
    run = RunFolder(root / name, **caps)
    run.path.mkdir(parents=True)
    run.config_path.write_text(f"name: {name}\n")
    run.write_status(state="running", pid=os.getpid(), name=name, method="sft+rft", stages=["sft", "rft"],
                     stage="rft", step=STEPS // 2, total=STEPS // 2, started=time.time() - 3600, created=time.time())
    return run


def disk_bytes(path) -> int:
    files = [p for _seq, p in segments(path)] + ([path] if path.exists() else [])
    return sum(p.stat().st_size for p in files)


@pytest.mark.slow
def test_a_long_run_stays_under_the_caps_and_readers_see_one_timeline(tmp_path):
    caps = dict(metrics_segment_bytes=256 * 1024, metrics_max_bytes=1024 * 1024, samples_segment_bytes=128 * 1024,
                samples_keep=2)
    run = live_run(tmp_path, **caps)
    unbounded = 0
    peak_metrics = peak_samples = 0
    for start in range(1, STEPS + 1, 100):  # through the real appenders, 100 rows per call
        rows = [metric_row(i) for i in range(start, start + 100)]
        rows += [{**metric_row(i), "eval_reward": 0.5} for i in range(start, start + 100) if i % 5000 == 0]
        run.append_jsonl(run.metrics_path, rows)
        unbounded += len("".join(json.dumps(r) + "\n" for r in rows))
        if start > STEPS // 2:
            run.append_samples(sample_rows(start))
        if start % 5000 == 1:
            peak_metrics = max(peak_metrics, disk_bytes(run.metrics_path))
            peak_samples = max(peak_samples, disk_bytes(run.samples_path))
    metrics_on_disk, samples_on_disk = disk_bytes(run.metrics_path), disk_bytes(run.samples_path)
    # Caps hold (one appended batch, ~20 KB, may overshoot a segment before it rotates).
    assert max(peak_metrics, metrics_on_disk) <= caps["metrics_max_bytes"] + 32 * 1024 < unbounded / 10
    assert max(peak_samples, samples_on_disk) <= 3 * caps["samples_segment_bytes"] + 32 * 1024
    assert len(segments(run.metrics_path)) == 3 and len(segments(run.samples_path)) == 2
    assert segments(run.samples_path)[0][0] > 2  # older rollout segments were dropped
    # One timeline from step 1 to the last: evenly thinned history, then every recent step.
    rows = run.metrics()
    xs = [r["run_step"] for r in rows if "eval_reward" not in r]
    assert xs[0] == 1 and xs[-1] == STEPS and xs == sorted(set(xs))
    assert xs[-3000:] == list(range(STEPS - 2999, STEPS + 1))
    old = [x for x in xs if 1 < x < STEPS // 2]
    gaps = {b - a for a, b in zip(old, old[1:])}
    assert len(gaps) == 1 and gaps.pop() > 1  # one power-of-two stride across the archived SFT part
    assert STEPS // 2 + 1 in xs  # where RFT starts is kept
    assert [r["run_step"] for r in rows if "eval_reward" in r] == list(range(5000, STEPS + 1, 5000))
    # Rollouts: the oldest segments were dropped; what is kept is the latest, contiguous.
    steps = sorted({s["step"] for s in run.samples()})
    assert steps[-1] == STEPS - 99 and steps == list(range(steps[0], steps[-1] + 1, 100)) and steps[0] > STEPS // 2 + 1
    # The Monitor shows the whole curve; the Runs table the latest values even right after a rotation.
    ctx = AppContext(tmp_path)
    view = tab_monitor.view(ctx, tab_monitor.MonitorRequest("long", 0.0), force=True)
    xs_plotted = [x for t in view["loss"].data for x in t.x]
    assert min(xs_plotted) < 100 and max(xs_plotted) > STEPS - 100  # plotted points are bucket means
    assert any(len(t.x) for t in view["reward"].data)
    run.metrics_path.unlink()  # as if it had just been rotated: the live file does not exist yet
    table, _ids = tab_runs.runs_table(ctx)
    assert table["data"][0][tab_runs.HEADERS.index("loss")] == f"{1 / STEPS:.3f}"


def test_incremental_reader_sees_every_row_once_across_rotations(tmp_path):
    # A large total cap: archiving merges without thinning, so rows read incrementally must equal rows written.
    run = RunFolder(tmp_path, metrics_segment_bytes=4096, metrics_max_bytes=2**30, samples_segment_bytes=4096,
                    samples_keep=3)
    keeping_up, lagging = JsonlTail(run.metrics_path), JsonlTail(run.metrics_path)
    samples = JsonlTail(run.samples_path)
    written, seen, seen_samples = [], [], []
    assert keeping_up.read() == ([], True)
    for batch in range(200):
        rows = [metric_row(batch * 5 + k) for k in range(1, 6)]
        if batch % 7 == 3:  # a writer caught mid-line: the reader waits for the rest
            with open(run.metrics_path, "ab") as fh:
                fh.write(json.dumps(rows[0]).encode()[:20])
            got, reset = keeping_up.read()
            seen += got
            with open(run.metrics_path, "ab") as fh:
                fh.write(json.dumps(rows[0]).encode()[20:] + b"\n")
            rows = rows[1:]
            written.append(metric_row(batch * 5 + 1))
        run.append_jsonl(run.metrics_path, rows)
        run.append_samples(sample_rows(batch))
        written += rows
        got, reset = keeping_up.read()
        assert not reset
        seen += got
        got, reset = samples.read()
        seen_samples += got
    assert len(segments(run.metrics_path)) >= 3 and [r["run_step"] for r in seen] == [r["run_step"] for r in written]
    assert len(seen_samples) == 200 * 4
    # A reader far behind starts over (reset) and still gets the whole timeline, in order.
    got, reset = lagging.read()
    assert reset and [r["run_step"] for r in got] == [r["run_step"] for r in written] and run.metrics() == got
    # The watch behind the Monitor: continues across the rotations it did not see.
    watch = run_watch.RunWatch(run.path)
    watch.refresh()
    before = segments(run.metrics_path)[-1][0]
    for k in range(0, 60, 20):
        run.append_jsonl(run.metrics_path, [metric_row(10_000 + k + j) for j in range(20)])
    assert segments(run.metrics_path)[-1][0] > before  # it rotated while the watch was not looking
    watch.refresh()
    assert [r["run_step"] for r in watch.metrics] == [r["run_step"] for r in written] + list(range(10_000, 10_060))


def test_monitor_refresh_on_a_100k_step_run_folder(tmp_path):
    """First load and steady-state tick on 100,000 metric lines written through the real appender with
    4 MB segments (so the folder is rotated as a long run's is; none thinned). Printed: the target is < 200 ms."""
    run = live_run(tmp_path, "big", metrics_segment_bytes=4 * 2**20)
    for start in range(1, STEPS + 1, 500):
        run.append_jsonl(run.metrics_path, [metric_row(i) for i in range(start, start + 500)])
    assert len(segments(run.metrics_path)) >= 3
    ctx = AppContext(tmp_path)
    run_watch.forget(run.path)
    t0 = time.perf_counter()
    first = tab_monitor.view(ctx, tab_monitor.MonitorRequest("big", 0.6), force=True)
    first_ms = (time.perf_counter() - t0) * 1000
    assert len(run_watch.get_watch(run.path, refresh=False).metrics) == STEPS
    t0 = time.perf_counter()
    assert tab_monitor.tick(ctx, "big", 0.6, False, True, first["seen"], *NO_FILTER) == {"__type__": "update"}
    idle_ms = (time.perf_counter() - t0) * 1000
    seen, ticks = first["seen"], []
    for k in range(1, 6):
        run.append_metric(metric_row(STEPS + k))
        t0 = time.perf_counter()
        out = dict(zip(tab_monitor.OUTPUTS, tab_monitor.tick(ctx, "big", 0.6, False, True, seen, *NO_FILTER)))
        ticks.append((time.perf_counter() - t0) * 1000)
        assert out["seen"]["m"] == seen["m"] + 1 and out["loss"].data
        assert run_watch.get_watch(run.path, refresh=False).columns.get("loss")[0][-1] == STEPS + k
        seen = out["seen"]
    ticks.sort()
    print(f"\n100k-line rotated run folder: first view {first_ms:.0f} ms, idle tick {idle_ms:.1f} ms, tick after "
          f"one new line median {ticks[2]:.0f} ms (max {ticks[-1]:.0f} ms)")


def test_a_row_appended_after_a_torn_line_stays_whole(tmp_path):
    # A full disk or a crash cut the last write short; after a resume the next row must not be glued to it.
    from finetuner.runs import RunFolder

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.append_metric({"step": 1, "loss": 1.0})
    with open(run.metrics_path, "ab") as fh:
        fh.write(b'{"step": 2, "lo')
    run.append_metric({"step": 3, "loss": 0.5})
    assert [r["step"] for r in run.metrics()] == [1, 3]
