"""A class on one machine for `python -m finetuner bench --only class`: 20 signed-in browser sessions against
`python app.py --auth FILE` while a real training run trains, over loopback HTTP (issue 15).

Set-up: a temporary runs folder, an accounts file (20 students s01..s20 and the teacher `teach`), the app as a
child process, and one training run owned by s01 (the built-in model on the arithmetic demo data, SFT then RFT),
queued through the engine (`runs.enqueue(..., owner="s01")`) so it trains while the load runs. `run(sessions=,
seconds=)` changes the size (45 s, or 3 sessions for 10 s with --quick).

Sessions: each is a `gradio_client.Client` signed in as its user, in its own thread, calling the page's own
events by the api names the tabs give them (the page's gr.State values live on the server per session, as for
a browser). Monitor sessions pick their run the way the page does (Refresh list = `attach`, then `render`),
then poll `monitor_refresh` every 2 s as the page's timer does: s01 and the teacher watch the training run; the
other students see no run of their own (their view is empty) and also refresh the Runs list. Worker sessions
upload a data file (Data tab, `data_upload`), set graders (`graders_yaml`) and run "Test graders"
(`graders_test`, the reference column) over and over.

Reported per class of call (also login, monitor open, graders setup): count, p50, p95, max ms, errors (client
exceptions: Gradio sends a handler's gr.Error as one; plus tracebacks in the app's log); lost runs (the run
not ending `finished`, a run folder gone or without a parsable status.json); responses to another student
naming s01's run. Where the time goes: a refresh's round trip before any load, the Monitor handler timed in
this process on the same folder during the load, and the CPU seconds of the app, the run and the clients.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from benchmarks.train import EXAMPLE, BenchError, bench_config, log_tail
from benchmarks.ui import _free_port, _port_open, stop_app

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = 20
TEACHER = "teach"
TICK_S = 2.0  # the Monitor page's gr.Timer
RUNS_EVERY = 3  # a watching student refreshes the Runs list every third tick
GRADERS_YAML = """- name: correct
  type: string_check
  input: "{{sample.output_text}}"
  reference: "Answer: {{item.answer}}"
  operation: eq
"""
CLASSES = ("monitor refresh", "runs list", "upload/check", "test graders", "monitor open", "graders setup", "login")


def no_filter() -> tuple:
    """The Monitor's rollout filters as a fresh page has them (finetuner.ui imports gradio: not at import)."""
    from finetuner.ui.rollouts import ALL

    return ("", "", "all", ALL, "total", "", "", "", ALL)


def password(user: str) -> str:
    return f"pw-{user}"


def roles(sessions: int) -> list[tuple[str, str]]:
    """(user, role) per session: s01 owns the run, s02 must never see it, about 3 in 10 are workers."""
    workers = max(1, round(sessions * 0.3))
    out = [("s01", "owner"), ("s02", "watcher")]
    watchers = sessions - workers - len(out)
    if watchers > 0:
        out.append((TEACHER, "teacher"))
        watchers -= 1
    out += [(f"s{i:02d}", "watcher") for i in range(3, 3 + max(watchers, 0))]
    first = len([u for u, _ in out if u != TEACHER]) + 1
    out += [(f"s{i:02d}", "worker") for i in range(first, first + workers)]
    return out[:sessions]


def start_app(work: Path, runs_dir: Path, timeout: float = 120) -> tuple[subprocess.Popen, str, Path]:
    users = [f"s{i:02d}" for i in range(1, STUDENTS + 1)]
    accounts = work / "class.txt"
    accounts.write_text("".join(f"{u}:{password(u)}\n" for u in users) + f"{TEACHER}:{password(TEACHER)}:teacher\n")
    port = _free_port()
    log_path = work / "app.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--auth", str(accounts), "--port", str(port),
                                 "--runs-dir", str(runs_dir)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise BenchError(f"app.py --auth exited (code {proc.returncode}) before serving." + log_tail(log_path))
        if _port_open(port):
            try:
                urllib.request.urlopen(url, timeout=30).close()
                return proc, url, log_path
            except urllib.error.HTTPError:
                return proc, url, log_path  # answering, with a login wall
            except OSError:
                pass
        time.sleep(0.2)
    stop_app(proc)
    raise BenchError(f"app.py --auth did not serve within {timeout:.0f} s." + log_tail(log_path))


def enqueue_run(work: Path, runs_dir: Path, sft_steps: int, rft_steps: int):
    from finetuner.config import load_config
    from finetuner.runs import enqueue

    cfg = {**bench_config(sft_steps, rft_steps), "name": "class-run"}
    path = work / "class-run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return enqueue(load_config(path), runs_dir, owner="s01",
                   extra_env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def wait_for(run, pred, timeout: float, what: str) -> dict:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = run.read_status()
        if pred(status, run):
            return status
        if status.get("state") in ("stopped", "failed"):  # it will not get there: say why now
            break
        time.sleep(0.5)
    status = run.read_status()
    raise BenchError(f"The class run {run.id} did not {what} within {timeout:.0f} s: it is {status.get('state')!r}"
                     f"{' (' + str(status['error']) + ')' if status.get('error') else ''}." + log_tail(run.log_path))


class Session(threading.Thread):
    """One signed-in browser: its calls go to `calls` as (class, seconds, ok)."""

    def __init__(self, url, user, role, data, run_id, ready, go, stop, calls, problems):
        super().__init__(daemon=True, name=f"class-{user}")
        self.url, self.user, self.role, self.data, self.run_id = url, user, role, data, run_id
        self.ready, self.go, self.stop, self.calls, self.problems = ready, go, stop, calls, problems
        self.login_s, self.leaks, self.watched = None, 0, None

    def call(self, cls: str, api: str, *args):
        t0 = time.perf_counter()
        try:
            out = self.client.predict(*args, api_name=api)
        except Exception as err:  # noqa: BLE001 - every failure is a counted error, the first few kept
            self.calls.append((cls, time.perf_counter() - t0, False))
            if len(self.problems) < 10:
                self.problems.append(f"{self.user} {api}: {type(err).__name__}: {str(err)[:300]}")
            return None
        self.calls.append((cls, time.perf_counter() - t0, True))
        if self.user not in ("s01", TEACHER) and self.run_id in str(out):
            self.leaks += 1  # another student was sent s01's run
        return out

    def run(self):
        from gradio_client import Client

        try:
            t0 = time.perf_counter()
            # A browser waits for its page: httpx's 5 s default times out while the run's process starts.
            self.client = Client(self.url, auth=(self.user, password(self.user)), verbose=False,
                                 download_files=False, httpx_kwargs={"timeout": 120})
            self.login_s = time.perf_counter() - t0
            self.calls.append(("login", self.login_s, True))
        except Exception as err:  # noqa: BLE001 - a refused login is an error of the run
            self.problems.append(f"{self.user} login: {type(err).__name__}: {str(err)[:300]}")
            self.calls.append(("login", time.perf_counter() - t0, False))
            return
        finally:
            self.ready.release()
        self.go.wait()
        (self.work if self.role == "worker" else self.monitor)()

    def monitor(self):
        t0 = time.perf_counter()
        picked = self.call("monitor open", "/monitor_attach", None)
        rid = (picked.get("value") if isinstance(picked, dict) else picked) or None
        self.watched = rid
        view = (rid, 0.6, False, True, *no_filter())
        self.call("monitor open", "/monitor_render", *view)
        k = 0
        while not self.stop.is_set():
            k += 1
            # The page's timer: a tick every 2 s from the start; a late answer makes the next tick go at once.
            self.stop.wait(max(0.0, t0 + k * TICK_S - time.perf_counter()))
            if self.stop.is_set():
                break
            self.call("monitor refresh", "/monitor_refresh", *view)
            if self.role != "teacher" and k % RUNS_EVERY == 0:
                self.call("runs list", "/runs_refresh", None)

    def work(self):
        from gradio_client import handle_file

        from finetuner.ui.tab_data import COLUMNS, DEFAULTS, EVAL_SHARE
        from finetuner.ui.tab_graders import COLUMN

        settings = ("sft", "auto", *(getattr(DEFAULTS, c) for c in COLUMNS), "train", EVAL_SHARE, 0.1, 0)
        self.call("upload/check", "/data_upload", handle_file(str(self.data)), *settings)
        out = self.call("graders setup", "/graders_yaml", GRADERS_YAML)
        if out is not None and "✅" not in str(out[-1]):
            self.calls.append(("graders setup", 0.0, False))
            self.problems.append(f"{self.user} graders_yaml: {str(out[-1])[:200]}")
        while not self.stop.is_set():
            self.call("test graders", "/graders_test", 20, COLUMN, "completion", 4)
            if self.stop.wait(1.0):  # a person reads the result before the next try
                break
            self.call("upload/check", "/data_upload", handle_file(str(self.data)), *settings)


def probe_handler(runs_dir: Path, run_id: str, stop: threading.Event, out: list, folders: set):
    """The Monitor's own handler on the same run folder, in this process, every TICK_S; and the run folders seen."""
    from finetuner.ui import tab_monitor
    from finetuner.ui.context import AppContext

    ctx = AppContext(runs_dir)
    seen = None
    while not stop.wait(TICK_S):
        folders.update(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        t0 = time.perf_counter()
        got = tab_monitor.tick(ctx, run_id, 0.6, False, True, seen, *no_filter())
        out.append(time.perf_counter() - t0)
        if not tab_monitor.is_skip(got):
            seen = dict(zip(tab_monitor.OUTPUTS, got))["seen"]


def cpu_seconds(pids: dict[str, tuple[str, int]]) -> dict[str, float]:
    """CPU seconds used so far by each named process ("pid", n) or process group ("pgrp", n), from Linux's
    /proc ({} elsewhere): where the machine's cores went during the load."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        stats = list(Path("/proc").glob("[0-9]*/stat"))
    except (OSError, ValueError, AttributeError):
        return {}
    out = dict.fromkeys(pids, 0.0)
    for stat in stats:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        pid, pgrp, used = int(stat.parent.name), int(fields[2]), (int(fields[11]) + int(fields[12])) / tick
        for name, (kind, n) in pids.items():
            if (pid if kind == "pid" else pgrp) == n:
                out[name] += used
    return out


def idle_round_trip(url: str, calls: int = 5) -> list[float]:
    """Seconds per Monitor refresh with no run to show (the handler does nothing), one session, nothing
    training: what Gradio's queue and HTTP cost a call on this machine before any load."""
    from gradio_client import Client

    client = Client(url, auth=(TEACHER, password(TEACHER)), verbose=False, download_files=False,
                    httpx_kwargs={"timeout": 120})
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.predict(None, 0.6, False, True, *no_filter(), api_name="/monitor_refresh")
        out.append(time.perf_counter() - t0)
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(q * len(v)) - 1)]


def summarize(calls: list[tuple[str, float, bool]]) -> dict:
    out = {}
    for cls in CLASSES:
        mine = [(s, ok) for c, s, ok in calls if c == cls]
        ms = [s * 1000 for s, ok in mine if ok]
        out[cls] = {"count": len(mine), "errors": sum(1 for _s, ok in mine if not ok), "p50_ms": pct(ms, 0.5),
                    "p95_ms": pct(ms, 0.95), "max_ms": max(ms) if ms else None}
    return out


def lost_runs(runs_dir: Path, folders: set, run_id: str) -> tuple[int, list[str]]:
    """Run folders seen that are gone or lack a parsable status.json, and the class run if not `finished`."""
    lost = []
    for name in sorted(folders | {run_id}):
        try:
            status = json.loads((runs_dir / name / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lost.append(f"{name}: folder or status.json gone or unreadable")
            continue
        if name == run_id and status.get("state") != "finished":
            lost.append(f"{name}: ended {status.get('state')!r}, not 'finished': {status.get('error') or ''}")
    return len(lost), lost


def run(quick: bool = False, sessions: int | None = None, seconds: float | None = None, say=print) -> dict:
    sessions = sessions or (3 if quick else STUDENTS)
    seconds = seconds or (10.0 if quick else 45.0)
    sft_steps, rft_steps = (5, 8) if quick else (20, 60)
    with tempfile.TemporaryDirectory(prefix="finetuner-bench-class-") as tmp:
        work = Path(tmp)
        runs_dir = work / "runs"
        runs_dir.mkdir()
        data = work / "sums.jsonl"
        shutil.copy(EXAMPLE / "train.jsonl", data)
        # Gradio and the UI imported now: imported by the first session thread, they held the import lock
        # for seconds while the load ran and every other session's first call waited behind it.
        import gradio_client  # noqa: F401
        import finetuner.ui.tab_data, finetuner.ui.tab_graders, finetuner.ui.tab_monitor  # noqa: F401, E401

        proc, url, app_log = start_app(work, runs_dir)
        try:
            idle_ms = [s * 1000 for s in idle_round_trip(url)]
            run_ = enqueue_run(work, runs_dir, sft_steps, rft_steps)
            wait_for(run_, lambda st, r: r.metrics_path.exists() and r.metrics_path.stat().st_size > 0, 300,
                     "log its first step")
            say(f"class: {sessions} sessions for {seconds:.0f} s against {url}, run {run_.id} training")
            calls, problems, handler_s, folders = [], [], [], set()
            ready, go, stop = threading.Semaphore(0), threading.Event(), threading.Event()
            threads = [Session(url, user, role, data, run_.id, ready, go, stop, calls, problems)
                       for user, role in roles(sessions)]
            for t in threads:
                t.start()
            for _ in threads:
                ready.acquire()  # every session signed in before the load starts
            probe = threading.Thread(target=probe_handler, args=(runs_dir, run_.id, stop, handler_s, folders),
                                     daemon=True)
            go.set()
            probe.start()
            status = run_.read_status()
            who = {"app server": ("pid", proc.pid), "training run": ("pgrp", status.get("pgid") or status.get("pid")),
                   "the clients (this process)": ("pid", os.getpid())}
            cpu_before = cpu_seconds(who)
            load_started = time.perf_counter()
            time.sleep(seconds)
            state_at_end = run_.read_status().get("state")
            cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(who).items()}
            cpu_window_s = time.perf_counter() - load_started
            stop.set()
            for t in (*threads, probe):
                t.join(120)
            load_s = time.perf_counter() - load_started
            final = wait_for(run_, lambda st, r: st.get("state") in ("finished", "stopped", "failed"), 900,
                             "end")
            log_text = app_log.read_text(errors="replace")
        finally:
            stop_app(proc)
        folders.update(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        n_lost, lost = lost_runs(runs_dir, folders, run_.id)
    by_class = summarize(calls)
    owner = next(t for t in threads if t.user == "s01")
    tracebacks = log_text.count("Traceback (most recent call last)")
    client_errors = sum(1 for _c, _s, ok in calls if not ok)
    handler_ms = [s * 1000 for s in handler_s]
    mon = by_class["monitor refresh"]
    return {"class_monitor_p95_ms": mon["p95_ms"], "class_monitor_p50_ms": mon["p50_ms"],
            "class_runs_p95_ms": by_class["runs list"]["p95_ms"],
            "class_upload_p95_ms": by_class["upload/check"]["p95_ms"],
            "class_graders_p95_ms": by_class["test graders"]["p95_ms"],
            "class_handler_p95_ms": pct(handler_ms, 0.95), "class_idle_call_ms": pct(idle_ms, 0.5),
            "class_errors": client_errors + tracebacks, "class_lost_runs": n_lost,
            "class_leaks": sum(t.leaks for t in threads),
            "class_detail": {"sessions": sessions, "roles": dict(roles(sessions)), "load_s": load_s,
                             "calls": len(calls), "by_class": by_class, "client_errors": client_errors,
                             "app_log_tracebacks": tracebacks, "problems": problems, "lost": lost,
                             "run": {"id": run_.id, "state_at_load_end": state_at_end, "final": final.get("state"),
                                     "sft_steps": sft_steps, "rft_steps": rft_steps,
                                     "owner_watched": owner.watched},
                             "handler_ms": {"count": len(handler_ms), "p50": pct(handler_ms, 0.5),
                                            "p95": pct(handler_ms, 0.95), "max": max(handler_ms, default=None)},
                             "watched": {t.user: t.watched for t in threads if t.role != "worker"},
                             "cpu_count": os.cpu_count(), "cpu_s_during_load": cpu,
                             "cpu_window_s": cpu_window_s}}


def markdown(r: dict) -> str:
    d = r["class_detail"]
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    lines = [f"class load: {d['sessions']} sessions, {d['load_s']:.0f} s, {d['calls']} calls; run {d['run']['id']} "
             f"{d['run']['state_at_load_end']} at the end of the load, then {d['run']['final']}",
             f"{'call':<18} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'errors':>6}"]
    for cls, s in d["by_class"].items():
        lines.append(f"{cls:<18} {s['count']:>6} {fmt(s['p50_ms']):>8} {fmt(s['p95_ms']):>8} {fmt(s['max_ms']):>8} "
                     f"{s['errors']:>6}")
    h = d["handler_ms"]
    lines.append(f"Before the load (one session, no run training) a refresh with nothing to show took "
                 f"{fmt(r.get('class_idle_call_ms'))} ms (median of 5): Gradio's queue and HTTP alone")
    lines.append(f"Monitor handler in-process on the same run: p50 {fmt(h['p50'])} ms, p95 {fmt(h['p95'])} ms "
                 f"({h['count']} ticks); app log tracebacks {d['app_log_tracebacks']}; another student sent s01's "
                 f"run: {r['class_leaks']}")
    if d.get("cpu_s_during_load"):
        lines.append(f"CPU seconds in {d['cpu_window_s']:.0f} s of load ({d['cpu_count']} cores): " + ", ".join(
            f"{k} {v:.0f}" for k, v in d["cpu_s_during_load"].items()))
    lines += [f"  problem: {p}" for p in d["problems"]] + [f"  lost: {x}" for x in d["lost"]]
    return "\n".join(lines)


TABLE_ROWS = [
    ("class_monitor_p95_ms", "class: Monitor refresh p95 (ms)", "< 300", lambda v: v < 300, "{:.0f}"),
    ("class_monitor_p50_ms", "class: Monitor refresh p50 (ms)", "", None, "{:.0f}"),
    ("class_handler_p95_ms", "class: Monitor handler alone p95 (ms)", "", None, "{:.0f}"),
    ("class_idle_call_ms", "class: idle refresh, 1 session, no run (ms)", "", None, "{:.0f}"),
    ("class_runs_p95_ms", "class: Runs list p95 (ms)", "", None, "{:.0f}"),
    ("class_upload_p95_ms", "class: upload + check p95 (ms)", "", None, "{:.0f}"),
    ("class_graders_p95_ms", "class: Test graders p95 (ms)", "", None, "{:.0f}"),
    ("class_errors", "class: errors", "0", lambda v: v == 0, "{:.0f}"),
    ("class_lost_runs", "class: lost runs", "0", lambda v: v == 0, "{:.0f}"),
    ("class_leaks", "class: another user's run sent", "0", lambda v: v == 0, "{:.0f}"),
]

