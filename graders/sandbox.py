"""A pool of sandboxed worker processes that run Python graders, many rows per round trip.

`SandboxPool.run(program, rows)` splits the rows over the workers (one chunk each, in parallel), sends
each chunk as one JSON line, and reads one JSON line back per row. A row that outlives its deadline, or a
worker that dies (segfault, os._exit, out of memory), costs that row a typed error: the worker is killed
and replaced and the remaining rows go on. Workers are reused across calls and compile a program once.

The lock-down itself lives in `_sandbox_worker.py`; `docs/graders.md` says what is and is not enforced.
Pools are shared per memory limit through `get_pool()`, and closed at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import queue
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_worker.py")
NOBODY = 65534
_GRACE_S = 1.0  # the worker's own timer fires first; this is for code stuck in C, where it can't
_MAX_LINE = 32 * 1024 * 1024


@dataclass(frozen=True)
class Program:
    """User source plus the per-call limits it runs under. `gid` names it inside a worker."""

    source: str
    filename: str = "<grader>"
    timeout_s: float = 10.0
    cpu_s: float | None = None
    max_output_kb: int = 64
    load_timeout_s: float = 60.0
    read_dirs: tuple[str, ...] = ()
    # "grade": call grade(sample, item), expect a finite number. "tool": call the function named `entry` with
    # a row's first element as keyword arguments, and return its result as text (Agent RFT's tools).
    kind: str = "grade"
    entry: str = "grade"
    gid: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.gid:
            key = f"{self.filename}\0{self.kind}\0{self.entry}\0{self.source}"
            digest = hashlib.sha256(key.encode("utf-8", "surrogatepass"))
            object.__setattr__(self, "gid", digest.hexdigest()[:16])

    @property
    def noun(self) -> str:
        """What messages call the user's code."""
        return "tool" if self.kind == "tool" else "grader"

    def limits(self) -> dict:
        return {"timeout": self.timeout_s, "cpu": self.cpu_s or self.timeout_s,
                "max_output": self.max_output_kb * 1024, "load_timeout": self.load_timeout_s}


class _Dead(Exception):
    pass


def _world_readable(path: str) -> bool:
    """True when every folder down to `path` lets 'nobody' in: then root can drop to it and still import."""
    path = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _can_drop_root() -> bool:
    if os.geteuid() != 0:
        return False
    needed = [sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), WORKER_SCRIPT,
              os.path.realpath(sys.executable)] + [p for p in sys.path if p.endswith("site-packages")]
    return all(_world_readable(p) for p in needed)


_spawner = ThreadPoolExecutor(1, thread_name_prefix="grader-spawner")


def _spawn(cmd: list[str], env: dict, cwd: str) -> subprocess.Popen:
    """Start a worker from one long-lived thread. Workers ask the kernel to kill them when the thread that
    started them ends (PR_SET_PDEATHSIG), so that a killed trainer leaves no orphan; starting them from
    short-lived threads (a dry run's) would kill them early."""
    def start():
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True, close_fds=True)
    return _spawner.submit(start).result()


class _Worker:
    def __init__(self, config: dict):
        self.tmpdir = tempfile.mkdtemp(prefix="finetuner-grader-")
        cfg = dict(config, tmpdir=self.tmpdir, parent_pid=os.getpid())
        env = {"PATH": "/usr/bin:/bin", "HOME": self.tmpdir, "TMPDIR": self.tmpdir, "LANG": "C.UTF-8",
               "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        # The environment is built from nothing, so tokens and keys in ours never reach user code.
        self.proc = _spawn([sys.executable, "-I", "-B", WORKER_SCRIPT, json.dumps(cfg)], env, self.tmpdir)
        self.rfd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self.loaded: set[str] = set()
        self.info: dict | None = None
        self.cpu = 0.0

    def wait_ready(self, timeout: float = 30.0) -> dict:
        if self.info is None:
            msg = self.read(time.monotonic() + timeout)
            if msg is None or not msg.get("ready"):
                raise _Dead("the grader worker did not start")
            self.info = msg["info"]
        return self.info

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj, default=str) + "\n").encode("utf-8", "surrogatepass")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as err:
            raise _Dead(str(err)) from err

    def read(self, deadline: float) -> dict | None:
        """The next message, or None at the deadline. Raises _Dead when the worker is gone or garbled."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                try:
                    msg = json.loads(line)
                except ValueError as err:
                    raise _Dead("the grader worker sent garbage") from err
                if not isinstance(msg, dict):
                    raise _Dead("the grader worker sent garbage")
                return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.rfd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise _Dead("the grader worker exited")
            self.buf += chunk
            if len(self.buf) > _MAX_LINE:
                raise _Dead("the grader worker sent an oversized message")

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = {"SIGSEGV": " (a crash in native code)", "SIGKILL": " (out of memory or CPU budget?)",
                    "SIGXCPU": " (CPU limit)", "SIGABRT": " (aborted)"}.get(name, "")
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: nothing else shares the group
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def close(self) -> None:
        try:
            self.send({"op": "exit"})
            self.proc.wait(timeout=1)
        except (_Dead, subprocess.TimeoutExpired):
            pass
        self.kill()


class SandboxPool:
    """Worker processes for Python graders. Thread-safe; `run` blocks until every row has a result."""

    def __init__(self, workers: int | None = None, memory_mb: int = 2048, fsize_mb: int = 1024,
                 isolate_network: bool = True, cpu_budget_s: int = 3600, max_crashes: int = 3):
        self.size = max(1, workers or min(4, os.cpu_count() or 1))
        self.config = {"memory_mb": int(memory_mb), "fsize_mb": int(fsize_mb), "cpu_budget_s": cpu_budget_s,
                       "isolate_network": isolate_network, "seccomp": True,
                       "drop_uid": NOBODY if _can_drop_root() else None}
        self.cpu_budget_s, self.max_crashes = cpu_budget_s, max_crashes
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="grader-pool")
        self._closed = False
        self.restarts = 0

    # -- workers
    def _checkout(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the grader pool is closed")
            if self._idle.empty() and self._started < self.size:
                self._started += 1
                return _Worker(self.config)
        return self._idle.get()

    def _checkin(self, worker: _Worker) -> None:
        if self._closed:
            worker.close()
        else:
            self._idle.put(worker)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        self.restarts += 1
        return _Worker(self.config)

    def info(self) -> dict:
        """What the lock-down achieved on this machine (from a worker's own report)."""
        worker = self._checkout()
        try:
            return dict(worker.wait_ready())
        except _Dead:
            worker = self._replace(worker)
            return {"error": "the grader worker did not start"}
        finally:
            self._checkin(worker)

    # -- running
    def run(self, program: Program, rows: list[tuple[dict, dict]]) -> list[dict]:
        """One dict per row: {"score": float|None, "error": [type, message]|None, "log": str}."""
        if not rows:
            return []
        n_chunks = min(self.size, len(rows))
        step = -(-len(rows) // n_chunks)
        chunks = [rows[i: i + step] for i in range(0, len(rows), step)]
        if len(chunks) == 1:
            return self._run_chunk(program, chunks[0])
        results: list[dict] = []
        for part in self._executor.map(lambda c: self._run_chunk(program, c), chunks):
            results.extend(part)
        return results

    def _run_chunk(self, program: Program, rows: list) -> list[dict]:
        worker = self._checkout()
        results: list[dict | None] = [None] * len(rows)
        start, crashes, last_error = 0, 0, ("runtime_error", "")
        try:
            while start < len(rows):
                if crashes >= self.max_crashes:
                    for k in range(start, len(rows)):
                        results[k] = _err(last_error[0], f"skipped: {last_error[1]} (on {crashes} rows in a row)")
                    break
                done, last_error, worker = self._attempt(worker, program, rows, start, results)
                if last_error is None:
                    break
                crashes += 1
                start = done + 1
            if worker.cpu > self.cpu_budget_s * 0.8:
                worker = self._replace(worker)  # retire before RLIMIT_CPU's hard limit kills it mid-row
        finally:
            self._checkin(worker)
        return results  # type: ignore[return-value]

    def _attempt(self, worker: _Worker, program: Program, rows: list, start: int, results: list):
        """Run rows[start:] on `worker`. Returns (index of the failing row, error or None, live worker)."""
        limits = program.limits()
        msg = {"op": "run", "gid": program.gid, "limits": limits, "read_dirs": list(program.read_dirs),
               "rows": rows[start:], "kind": program.kind}
        i = start
        try:
            worker.wait_ready()
            if program.gid not in worker.loaded:
                msg["source"], msg["filename"], msg["entry"] = program.source, program.filename, program.entry
            worker.send(msg)
            if "source" in msg:
                loaded = worker.read(time.monotonic() + program.load_timeout_s + _GRACE_S + 5)
                if loaded is None:
                    error = ("timeout", f"loading the {program.noun} took longer than {program.load_timeout_s:g} s")
                    for k in range(start, len(rows)):
                        results[k] = _err(*error)
                    return len(rows), None, self._replace(worker)
                worker.loaded.add(program.gid)
            row_deadline = limits["timeout"] + _GRACE_S
            while True:
                reply = worker.read(time.monotonic() + row_deadline)
                if reply is None:
                    error = ("timeout", f"{program.noun} took longer than {program.timeout_s:g} s and its worker was "
                             "stopped")
                    results[i] = _err(*error)
                    return i, error, self._replace(worker)
                if reply.get("done"):
                    worker.cpu = float(reply.get("cpu", 0.0))
                    return i, None, worker
                i = start + int(reply["i"])
                results[i] = {"score": reply.get("s"), "error": reply.get("e"), "log": reply.get("l") or ""}
                i += 1
        except _Dead:
            error = ("runtime_error", f"the {program.noun}'s process {worker.death_reason()} while running this "
                     "row; it was replaced")
            if i < len(rows):
                results[i] = _err(*error)
            return i, error, self._replace(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        self._executor.shutdown(wait=False)


def _err(type_: str, message: str) -> dict:
    return {"score": None, "error": [type_, message], "log": ""}


_pools: dict[tuple, SandboxPool] = {}
_pools_lock = threading.Lock()


def get_pool(memory_mb: int = 2048, workers: int | None = None) -> SandboxPool:
    """The shared pool for this memory limit (memory is fixed per worker process, so it keys the pool)."""
    key = (int(memory_mb), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool._closed:
            pool = _pools[key] = SandboxPool(workers=workers, memory_mb=memory_mb)
        return pool


def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)
