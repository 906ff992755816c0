"""Run a Lab: every arm an ordinary run through the run queue, then the keep scores, the table and the report.

    lab = create_lab(spec, "runs", owner=None)    # runs/_lab/<name>-<stamp>/: spec, data, lab.json
    result = run_lab(lab, "runs", say=print)      # blocks until every arm ended; writes results.json + report

`lab.json` is the Lab's status, rewritten atomically as arms start and end (the Lab tab reads it): state
(`planned`, `running`, `scoring`, `finished`, `failed`, `stopped`), the arms with their run ids and states,
and the error of a failed Lab. A `STOP` file in the Lab folder stops it: its waiting arms leave the queue and
the arm training now is asked to stop. The Lab process itself trains nothing: arms are child processes
started by the queue (one at a time per device), so each shows in the Runs tab like any run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from finetuner.runs import FINAL_STATES, RunFolder, open_run, refresh_state, safe_name
from finetuner.runs.atomic import write_text_atomic

LAB_DIR = "_lab"
FINAL_LAB = ("finished", "failed", "stopped")


class LabFolder:
    def __init__(self, path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def status_path(self) -> Path:
        return self.path / "lab.json"

    @property
    def stop_path(self) -> Path:
        return self.path / "STOP"

    def read(self) -> dict:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write(self, **updates) -> dict:
        """Merge `updates` into lab.json under a lock (the Lab process and the app both write it), fsync'ed and
        renamed into place (runs/atomic.py)."""
        import fcntl

        with open(self.path / "lab.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            status = {**self.read(), **updates}
            write_text_atomic(self.status_path, json.dumps(status, indent=1, default=str))
        return status

    def results(self) -> dict | None:
        try:
            return json.loads((self.path / "results.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def labs_dir(runs_dir) -> Path:
    return Path(runs_dir) / LAB_DIR


def list_labs(runs_dir) -> list[dict]:
    """Every Lab under `runs_dir`, newest first: lab.json plus `id` and `path`."""
    root = labs_dir(runs_dir)
    out = []
    for p in root.iterdir() if root.is_dir() else []:
        if p.is_dir() and not p.is_symlink() and (p / "lab.json").exists():
            out.append({**LabFolder(p).read(), "id": p.name, "path": str(p)})
    return sorted(out, key=lambda s: s.get("created") or 0, reverse=True)


def open_lab(runs_dir, lab_id: str) -> LabFolder:
    """A Lab by its folder name under runs_dir/_lab (an id cannot leave that folder)."""
    from graders.errors import RunError

    root = labs_dir(runs_dir).resolve()
    path = (root / str(lab_id)).resolve()
    if "\x00" in str(lab_id) or path.parent != root or not (path / "lab.json").exists():
        raise RunError(f"There is no Lab {lab_id!r} in {root}. Pick one from the list.")
    return LabFolder(path)


def lab_status(lab: LabFolder) -> dict:
    """lab.json, with the truth about its process: a Lab marked running whose process is gone is failed."""
    from finetuner.runs import pid_alive

    status = lab.read()
    if status.get("state") in ("planned", "running", "scoring") and status.get("pid") and \
            not pid_alive(status["pid"]):
        status = lab.write(state="failed", finished=time.time(), error=(
            f"The Lab's process (pid {status['pid']}) ended without finishing; see {lab.path / 'log.txt'}. Its "
            "finished arms are kept as ordinary runs."))
    return status


def start_lab_process(lab: LabFolder, runs_dir):
    """Run the Lab in its own process (`python -m finetuner lab --lab-dir`), as training runs are: the web app
    only reads lab.json. Its output goes to the Lab folder's log.txt."""
    from finetuner.runs.process import child_env

    cmd = [sys.executable, "-m", "finetuner", "lab", "--lab-dir", str(lab.path), "--runs-dir", str(runs_dir)]
    with open(lab.path / "log.txt", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=child_env(), cwd=os.getcwd())
    lab.write(pid=proc.pid)
    return proc


def create_lab(spec, runs_dir, owner: str | None = None) -> LabFolder:
    """The Lab folder with its spec, data and planned arms (checked here: a bad spec fails before any run)."""
    from finetuner.config import load_config, yaml_text
    from finetuner.lab.arms import plan_arms, prepare_data

    root = labs_dir(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{safe_name(spec.name)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = root / base, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = root / f"{base}-{n}"
    lab = LabFolder(path)
    base_cfg = load_config(spec.base)
    data = prepare_data(spec, base_cfg, path / "data")
    arms = plan_arms(spec, base_cfg, data, path.name)
    (path / "spec.yaml").write_text(yaml_text(spec.to_dict()), encoding="utf-8")
    # The spec as the Lab runs it: its data, held-out and keep files are the Lab folder's own copies, so an
    # upload removed (or Gradio's temp folder cleaned) while it trains cannot fail it at the end.
    own = {**spec.to_dict(), "data": str(path / "data" / "pool.jsonl"), "eval": data.eval, "keep": data.keep}
    lab.write(name=spec.name, state="planned", owner=owner, created=time.time(), spec=own,
              notes=data.notes, keep_file=data.keep,
              arms=[{"key": a.key, "method": a.method, "size": a.size, "seed": a.seed, "run_id": None,
                     "state": "planned"} for a in arms])
    lab._arms = arms  # the RunConfigs, for run_lab in this process
    return lab


def run_lab(lab: LabFolder, runs_dir, say=print, poll: float = 1.0) -> dict:
    """Queue every arm, follow them to the end, score the keep set, write results.json and the report."""
    from finetuner.runs.queue import advance, enqueue

    status = lab.read()
    arms = {a.key: a for a in getattr(lab, "_arms", None) or _replan(lab, status)}
    entries = status["arms"]
    lab.write(state="running", started=time.time(), pid=os.getpid())
    try:
        for e in entries:  # all queued at once, so the queue (Runs tab, Monitor) shows the whole Lab
            e["run_id"] = enqueue(arms[e["key"]].config, runs_dir, owner=status.get("owner")).id
            e["state"] = "waiting"
        lab.write(arms=entries)
        started, last_said = time.time(), ""
        while True:
            if lab.stop_path.exists():
                _stop(entries, runs_dir)
                lab.write(state="stopped", finished=time.time(), arms=entries)
                return lab.read()
            advance(runs_dir)
            before = [e["state"] for e in entries]
            for e in entries:
                e["state"] = _arm_state(runs_dir, e)
            done = sum(e["state"] in ARM_ENDED for e in entries)
            line = f"{done}/{len(entries)} arms done"
            if line != last_said:
                say(f"  {time.time() - started:5.0f}s  {line}")
                last_said = line
            if [e["state"] for e in entries] != before:  # lab.json (fsync'ed) only when an arm moved on
                lab.write(arms=entries)
            if done == len(entries):
                break
            time.sleep(poll)
        lab.write(state="scoring")
        result = collect(lab, runs_dir, say)
        from finetuner.lab.report import write_report

        write_report(lab, result)
        lab.write(state="finished", finished=time.time())
        return result
    except Exception as err:  # noqa: BLE001 - the Lab's own status must say why it ended
        from graders.errors import FinetunerError

        why = str(err) if isinstance(err, FinetunerError) else f"{type(err).__name__}: {err}"
        lab.write(state="failed", finished=time.time(), error=f"{why} The Lab's log is {lab.path / 'log.txt'}; its "
                  "finished arms stay as ordinary runs on the Runs tab.")
        raise


def _replan(lab: LabFolder, status: dict) -> list:
    """The arms' RunConfigs again, from the Lab folder's spec (a Lab created by the app, run by its own process)."""
    from finetuner.config import load_config
    from finetuner.lab.arms import plan_arms, prepare_data
    from finetuner.lab.spec import spec_from_dict

    spec = spec_from_dict(status["spec"], source=str(lab.path / "spec.yaml"))
    base_cfg = load_config(spec.base)
    return plan_arms(spec, base_cfg, prepare_data(spec, base_cfg, lab.path / "data"), lab.path.name)


ARM_ENDED = FINAL_STATES + ("gone",)  # "gone": its folder was deleted or its queue place cancelled


def _arm_state(runs_dir, entry: dict) -> str:
    path = Path(runs_dir) / entry["run_id"]
    return refresh_state(RunFolder(path)).get("state", "gone") if (path / "status.json").exists() else "gone"


def _stop(entries: list[dict], runs_dir) -> None:
    """Cancel the waiting arms and ask the training one to stop. States are read again here: an arm that started
    since the last look is stopped instead of cancelled. Nothing raises: the Lab must end `stopped`."""
    from graders.errors import RunError
    from finetuner.runs import request_stop
    from finetuner.runs.queue import cancel

    for e in entries:
        e["state"] = _arm_state(runs_dir, e)
        try:
            if e["state"] == "waiting":
                try:
                    cancel(runs_dir, e["run_id"])
                    e["state"] = "gone"
                    continue
                except RunError:  # it started in between
                    e["state"] = _arm_state(runs_dir, e)
            if e["state"] in ("queued", "running"):
                request_stop(RunFolder(Path(runs_dir) / e["run_id"]))
        except RunError:
            pass  # it ended in between: nothing left to stop


def collect(lab: LabFolder, runs_dir, say=print) -> dict:
    """results.json: every arm's numbers with its keep score, the table per size and method, the headline."""
    from finetuner.config import load_config
    from finetuner.lab.keep import KeepScorer
    from finetuner.lab.results import aggregate, run_numbers, summary_json
    from finetuner.lab.spec import spec_from_dict

    status = lab.read()
    spec = spec_from_dict(status["spec"], source=str(lab.path / "spec.yaml"))
    base_cfg = load_config(spec.base)
    rows = []
    for e in status["arms"]:
        if not e.get("run_id") or _arm_state(runs_dir, e) == "gone":  # deleted or cancelled: counted as failed
            rows.append({"method": e["method"], "size": e["size"], "seed": e["seed"], "run_id": e.get("run_id"),
                         "state": "gone", "score": None, "base_score": None, "curve": [], "seconds": 0.0,
                         "examples": 0.0, "tokens": 0, "sft_loss": None, "adapter": ""})
            continue
        run = open_run(runs_dir, e["run_id"])
        rows.append({"method": e["method"], "size": e["size"], "seed": e["seed"],
                     **run_numbers(run, load_config(run.config_path), e["size"]), "adapter": str(run.adapter)})
    keep_before = None
    if status.get("keep_file"):
        say("  scoring the keep set (before and after each arm)")
        graders = spec.keep_graders or (base_cfg.graders if spec.graders is None else spec.graders)
        scorer = KeepScorer(status["keep_file"], graders, base_cfg)
        try:
            keep_before = scorer.score(None)
            for r in rows:
                if r["score"] is not None and Path(r["adapter"]).exists():
                    r["keep_score"] = scorer.score(r["adapter"])
        finally:
            scorer.close()
    bases = [r["base_score"] for r in rows if r.get("base_score") is not None]
    base_score = round(sum(bases) / len(bases), 4) if bases else None
    table = aggregate(rows)
    result = {"lab": lab.id, "name": spec.name, "spec": spec.to_dict(), "model": base_cfg.model.name,
              "notes": status.get("notes", []), "arms": rows, "table": {str(k): v for k, v in table.items()},
              "keep_before": keep_before, "base_score": base_score,
              "summary": summary_json(table, keep_before, base_score), "created": time.time()}
    write_text_atomic(lab.path / "results.json", json.dumps(result, indent=1, default=str))
    return result
