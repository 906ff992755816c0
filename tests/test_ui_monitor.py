"""Monitor tab without a browser: incremental tailing (half-written lines, 100k lines), warnings from crafted
metrics, the rollout filter, the view handlers on a real run, re-attaching, and Stop / Force stop."""

import json
import os
import time

import pytest

from finetuner.demo import arith
from finetuner.config import from_dict
from finetuner.runs import RunFolder, launch, list_runs, wait
from finetuner.ui import rollouts, run_watch, tab_monitor
from finetuner.ui.context import AppContext

NO_FILTER = ("", "", "all", rollouts.ALL, "total", "", "", "")


def write(path, rows, tail=""):
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows) + tail)


def fake_run(root, name="r", state="running", pid=None):
    run = RunFolder(root / name)
    run.path.mkdir(parents=True)
    run.config_path.write_text("name: r\n")
    run.write_status(state=state, pid=pid or os.getpid(), name=name, method="sft+rft", stages=["sft", "rft"],
                     stage="rft", step=5, total=10, started=time.time() - 60, created=time.time())
    return run


def test_tail_skips_a_half_written_line_and_reads_only_what_was_appended(tmp_path):
    run = fake_run(tmp_path)
    write(run.metrics_path, [{"stage": "sft", "step": 1, "run_step": 1, "loss": 2.0}],
          tail='{"stage": "sft", "step": 2, "run_st')
    watch = run_watch.RunWatch(run.path)
    assert watch.refresh() and len(watch.metrics) == 1 and watch.metrics_version == 1
    assert not watch.refresh()  # nothing new: no version bump
    with open(run.metrics_path, "a") as fh:
        fh.write('ep": 2, "loss": 1.0}\n')
    assert watch.refresh() and [m["loss"] for m in watch.metrics] == [2.0, 1.0]
    x, y = watch.columns.get("loss")
    assert list(x) == [1, 2] and list(y) == [2.0, 1.0]
    run.metrics_path.write_text(json.dumps({"stage": "sft", "step": 1, "run_step": 1, "loss": 9.0}) + "\n")
    watch.refresh()  # the file was replaced (shorter): read again from the start
    assert [m["loss"] for m in watch.metrics] == [9.0]


def test_refresh_of_a_100k_line_metrics_file_is_incremental(tmp_path):
    run = fake_run(tmp_path, "big")
    rows = []
    for i in range(1, 100_001):
        stage = "sft" if i <= 50_000 else "rft"
        row = {"stage": stage, "step": i if stage == "sft" else i - 50_000, "run_step": i, "time": i, "loss": 1 / i,
               "time/step_s": 0.5, "time/training_s": 0.3, "memory/peak_gb": 1.0}
        if stage == "rft":
            row.update({"reward": (i % 100) / 100, "reward_std": 0.1, "rewards/correct/mean": 0.5, "kl": 0.01,
                        "entropy": 0.3, "completions/mean_length": 20.0, "frac_reward_zero_std": 0.1,
                        "graders/correct/errors": 0, "time/generation_s": 0.1, "time/grading_s": 0.01})
        rows.append(row)
    write(run.metrics_path, rows)
    ctx = AppContext(tmp_path)
    t0 = time.perf_counter()
    first = tab_monitor.view(ctx, tab_monitor.MonitorRequest("big", 0.6), force=True)
    t_first = time.perf_counter() - t0
    assert all(len(t.x) <= (4000 if t.fill else 2000) for t in first["reward"].data)  # a band: both edges
    t0 = time.perf_counter()
    same = tab_monitor.tick(ctx, "big", 0.6, False, True, first["seen"], *NO_FILTER)
    t_same = time.perf_counter() - t0
    assert same == {"__type__": "update"}  # one skip for every output
    write(run.metrics_path, [{**rows[-1], "step": 50_000 + k, "run_step": 100_000 + k} for k in range(1, 6)])
    t0 = time.perf_counter()
    grown = tab_monitor.tick(ctx, "big", 0.6, False, True, first["seen"], *NO_FILTER)
    t_grown = time.perf_counter() - t0
    out = dict(zip(tab_monitor.OUTPUTS, grown))
    assert out["seen"]["m"] == first["seen"]["m"] + 1 and out["loss"].data
    assert len(run_watch.get_watch(run.path).metrics) == 100_005
    print(f"\n100k-line metrics.jsonl: first view {t_first * 1000:.0f} ms, unchanged tick {t_same * 1000:.1f} ms, "
          f"tick after 5 new lines {t_grown * 1000:.0f} ms")
    assert t_same < 2 and t_grown < 2  # generous: the target is < 200 ms; timing asserts are flaky on busy CI


def _watch_with(tmp_path, rows, samples=()):
    run = fake_run(tmp_path, "w")
    write(run.metrics_path, rows)
    if samples:
        write(run.samples_path, list(samples))
    watch = run_watch.RunWatch(run.path)
    watch.refresh()
    return watch


def rft_row(step, **values):
    return {"stage": "rft", "step": step, "run_step": step, **values}


def test_warnings_from_crafted_metrics(tmp_path):
    healthy = [rft_row(s, reward=0.5, **{"completions/mean_length": 10.0, "frac_reward_zero_std": 0.1,
                                         "graders/correct/errors": 0}) for s in range(1, 31)]
    assert run_watch.health_warnings(_watch_with(tmp_path / "a", healthy)) == []
    # reward up while eval reward down
    rows = [rft_row(s, reward=0.2 + 0.02 * s) for s in range(1, 31)]
    rows += [rft_row(10, eval_reward=0.6), rft_row(20, eval_reward=0.5), rft_row(30, eval_reward=0.3)]
    (w,) = run_watch.health_warnings(_watch_with(tmp_path / "b", rows))
    assert "eval reward fell" in w and "0.600" in w
    # completion length jumps, most groups without spread, a grader erroring
    rows = [rft_row(s, **{"completions/mean_length": 10.0 if s <= 20 else 40.0, "frac_reward_zero_std":
                          0.95 if s > 25 else 0.1, "graders/judge/errors": 3 if s == 30 else 0}) for s in range(1, 31)]
    sample = {"stage": "rft", "step": 30, "prompt": "p", "completion": "c", "scores": {"judge": None}, "total": 0,
              "errors": {"judge": {"type": "timeout", "message": "took longer than 10s"}}}
    found = run_watch.health_warnings(_watch_with(tmp_path / "c", rows, [sample]))
    text = "\n".join(found)
    assert len(found) == 3
    assert "Completion length grew sharply (10 → 40" in text
    assert "every completion got the same score" in text
    assert "Grader `judge` failed 3 times" in text and "took longer than 10s" in text


def _samples():
    out = []
    for step in (1, 2, 3):
        for k in range(4):
            err = {"judge": {"type": "timeout", "message": "slow"}} if (step, k) == (2, 1) else {}
            out.append({"stage": "rft", "step": step, "split": "eval" if k == 3 else "train",
                        "prompt": f"What is {step}+{step}?", "completion": f"Answer: {step + k}" if k else "no idea",
                        "scores": {"correct": float(k % 2), "judge": None if err else 0.5},
                        "total": float(k % 2) + (0 if err else 0.5), "errors": err, "logs": {"correct": "log"}})
    return out


def test_rollout_filter_table_and_detail():
    s = _samples()
    f = rollouts.RolloutFilter
    assert rollouts.filter_rollouts(s, f())[:2] == [11, 10]  # newest first
    assert {s[i]["step"] for i in rollouts.filter_rollouts(s, f(step_min="2", step_max=2))} == {2}
    assert rollouts.filter_rollouts(s, f(grader_error=rollouts.ANY_ERROR)) == [5]
    assert rollouts.filter_rollouts(s, f(grader_error="judge")) == [5]
    assert 5 not in rollouts.filter_rollouts(s, f(grader_error=rollouts.NO_ERROR))
    assert all(s[i]["total"] >= 1 for i in rollouts.filter_rollouts(s, f(score_min=1)))
    assert all(s[i]["scores"]["correct"] == 0 for i in rollouts.filter_rollouts(s, f(score_of="correct",
                                                                                      score_max="0")))
    assert [s[i]["completion"] for i in rollouts.filter_rollouts(s, f(search="NO IDEA"))] == ["no idea"] * 3
    assert all(s[i]["split"] == "eval" for i in rollouts.filter_rollouts(s, f(split="eval")))
    assert len(rollouts.filter_rollouts(s, f(), limit=5)) == 5
    table = rollouts.rollout_table(s, [5], rollouts.grader_names(s))
    assert table["headers"] == ["stage", "step", "split", "total", "correct", "judge", "errors", "completion",
                                "prompt"]
    assert table["data"][0][5] == "error" and table["data"][0][6] == "judge: timeout"
    detail = rollouts.rollout_detail(s, 5)
    assert "What is 2+2?" in detail and "`timeout`: slow" in detail and "Its group" in detail
    assert rollouts.error_choices(s) == [rollouts.ALL, rollouts.ANY_ERROR, rollouts.NO_ERROR, "correct", "judge"]


@pytest.mark.slow
def test_view_of_a_real_run(tmp_path):
    from test_evaluate import trained_run

    run = trained_run()
    ctx = AppContext(run.path.parent)
    out = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0), force=True)
    assert [t.name for t in out["loss"].data] == ["SFT loss", "RFT loss"]
    assert "eval reward (held out)" in [t.name for t in out["reward"].data]
    assert [s.x0 for s in out["reward"].layout.shapes] == [4.5]
    assert "finished" in out["progress"] and "step 3/3" in out["progress"]
    assert out["stop"]["interactive"] is False and out["force"]["interactive"] is False
    assert out["table"]["headers"][4:6] == ["correct", "format"] and len(out["keys"]) == len(out["table"]["data"])
    assert out["error_filter"]["choices"][-2:] == ["correct", "format"]
    detail = tab_monitor.select_rollout(ctx, run.id, out["keys"], 0)
    assert "**Completion**" in detail and "| correct |" in detail
    table, keys = tab_monitor.apply_filters(ctx, run.id, "1", "1", "all", rollouts.ALL, "total", "", "", "")
    assert keys and all(run.samples()[k]["step"] == 1 for k in keys)
    assert tab_monitor.tick(ctx, run.id, 0.0, False, True, out["seen"], *NO_FILTER) == {"__type__": "update"}
    gone = tab_monitor.view(ctx, tab_monitor.MonitorRequest("deleted-run", 0.0), force=True)
    assert "no longer exists" in gone["progress"]


def test_reattach_prefers_the_active_run(tmp_path):
    ctx = AppContext(tmp_path)
    assert tab_monitor.attach(ctx, "")["value"] is None
    fake_run(tmp_path, "old", state="finished")
    fake_run(tmp_path, "live", state="running")  # our own pid: alive
    assert tab_monitor.pick_run(ctx, "") == "live"
    assert tab_monitor.pick_run(ctx, "old") == "old"  # the run another tab asked for wins
    dead = fake_run(tmp_path, "dead", state="running", pid=2**22 + 12345)
    ids = [c[1] for c in tab_monitor.run_choices(ctx)]
    assert set(ids) == {"old", "live", "dead"} and dead.read_status()["state"] == "failed"  # noticed


@pytest.mark.slow
def test_stop_and_force_stop_a_launched_run(tmp_path):
    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}"} for r in arith.rft_rows(48, seed=5)]
    write(tmp_path / "sft.jsonl", rows)
    cfg = from_dict({"name": "long", "method": "sft", "model": {"name": "tiny", "max_length": 64},
                     "data": {"train": str(tmp_path / "sft.jsonl")},
                     "sft": {"max_steps": 3000, "batch_size": 8, "save_steps": 1000}})
    ctx = AppContext(tmp_path / "runs")
    polite, killed = launch(cfg, ctx.runs_dir), launch(cfg, ctx.runs_dir)
    deadline = time.time() + 180
    while time.time() < deadline and not (polite.metrics() and killed.metrics()):
        time.sleep(0.5)
    assert polite.metrics() and killed.metrics(), polite.log_path.read_text()[-2000:]
    tab_monitor.stop(ctx, polite.id)
    # "stopping" can be overwritten by the trainer's own status write in the same instant (an engine race,
    # harmless: the STOP file is what ends the run), so only the outcome is asserted.
    assert polite.stop_path.exists()
    tab_monitor.force_kill(ctx, killed.id)
    status = wait(polite, timeout=120)
    assert status["state"] == "stopped", (status, polite.log_path.read_text()[-3000:])
    assert (polite.adapter / "adapter_config.json").exists()
    pid = killed.read_status()["pid"]
    for _ in range(50):  # the killed process is reaped by us, its parent
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            break
        time.sleep(0.1)
    assert killed.read_status()["state"] == "stopped" and "Force-stopped" in killed.read_status()["error"]
    assert {s["id"]: s["state"] for s in list_runs(ctx.runs_dir)}[killed.id] == "stopped"
    with pytest.raises(Exception, match="nothing to stop"):
        tab_monitor.stop(ctx, polite.id)
