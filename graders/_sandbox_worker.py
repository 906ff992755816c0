"""Sandbox worker: runs user-written Python graders inside a locked-down child process.

Started only by `graders/sandbox.py` as `python -I -B _sandbox_worker.py CONFIG_JSON`. It locks itself
down once (network namespace, dropped root where possible, rlimits, a seccomp filter, an audit hook),
then serves batches: one JSON line in (a program and many rows), one JSON line out per row. Standard
library only, and never imported by the app: it must start fast and trust nothing it runs.
"""

import builtins
import json
import linecache
import math
import numbers
import os
import resource
import signal
import sys
import time
import traceback

CONFIG = json.loads(sys.argv[1])
TMP = os.path.realpath(CONFIG["tmpdir"])
MYPID = os.getpid()
MIB = 1024 * 1024


class _Limit(BaseException):
    """Raised inside user code by our signal handlers. BaseException, so `except Exception` can't eat it."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


class _OutputLimit(BaseException):
    pass


_guard = None  # the audit-hook module, loaded by _lock_down
_in_user_code = False  # a timer firing just after user code returned must not hit our own code
_limits = {"timeout": 10.0, "cpu": 10.0, "noun": "grader"}  # noun: what messages call the user code


def _on_alarm(signum, frame):
    if _in_user_code:
        raise _Limit("timeout", f"{_limits['noun']} took longer than {_limits['timeout']:g} s (wall clock) and was "
                     "stopped")


def _on_cpu(signum, frame):
    if _in_user_code:
        raise _Limit("timeout", f"{_limits['noun']} used more than {_limits['cpu']:g} s of CPU time and was stopped")


# ---------------------------------------------------------------- lock-down (runs once, before any user code)

def _load_sibling(name):
    """Import a module from this folder without putting the folder on sys.path (user code can't see it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lock_down():
    info = {"pid": MYPID, "network": "open", "seccomp": False, "uid": os.geteuid(), "dropped_root": False}
    import ctypes

    clib = ctypes.CDLL(None, use_errno=True)

    class _LibC:  # Linux-only calls; elsewhere (macOS) they report failure instead of crashing the worker
        def __getattr__(self, name):
            return getattr(clib, name, lambda *args: -1)

    libc = _LibC()
    if CONFIG.get("isolate_network", True):
        CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
        if libc.unshare(CLONE_NEWNET) == 0:
            info["network"] = "namespace"
        elif os.geteuid() != 0 and libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            info["network"] = "user+network namespace"
    drop_uid = CONFIG.get("drop_uid")
    if os.geteuid() == 0 and drop_uid is not None:
        try:
            os.chown(TMP, drop_uid, drop_uid)
            os.setgroups([])
            os.setgid(drop_uid)
            os.setuid(drop_uid)
            info["dropped_root"], info["uid"] = True, drop_uid
        except OSError as err:
            info["drop_error"] = str(err)
    # Die with the app: a trainer that is killed must not leave graders running (set after the uid change,
    # which clears it).
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != CONFIG.get("parent_pid", os.getppid()):
        os._exit(0)  # the parent died before we asked
    mem = int(CONFIG["memory_mb"]) * MIB
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    fsize = int(CONFIG.get("fsize_mb", 1024)) * MIB
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nofile = min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    budget = int(CONFIG.get("cpu_budget_s", 3600))
    resource.setrlimit(resource.RLIMIT_CPU, (budget, budget + 5))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big file becomes an OSError, not a dead worker
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGPROF, _on_cpu)
    signal.signal(signal.SIGXCPU, _on_cpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the parent's terminal is the parent's business
    if CONFIG.get("seccomp", True):
        built = _load_sibling("_sandbox_seccomp").seccomp_program(MYPID)
        if built is not None:
            code, count = built
            buf = ctypes.create_string_buffer(code, len(code))

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            fprog = SockFprog(count, ctypes.addressof(buf))
            PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0:
                info["seccomp"] = True
            else:
                info["seccomp_error"] = os.strerror(ctypes.get_errno())
    if info["network"] == "open" and info["seccomp"]:
        info["network"] = "seccomp"  # no namespace, but the filter refuses every non-Unix socket
    if not info["seccomp"] and os.geteuid() != 0:
        try:  # the fallback without seccomp; it also stops threads, and root ignores it anyway
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
            info["nproc"] = 0
        except (ValueError, OSError):
            pass
    # ctypes stays importable (sympy imports it for sizeof); the audit hook blocks loading libraries,
    # calling C functions and touching raw addresses, which is how Python code escapes audit hooks.
    global _guard
    _guard = _load_sibling("_sandbox_guard")
    _guard.install(TMP, MYPID)
    info["audit_hook"] = True
    return info


# ---------------------------------------------------------------- running user code

class _Capture:
    """sys.stdout/sys.stderr while user code runs: keeps what it prints, up to a limit."""

    def __init__(self, limit):
        self.parts, self.size, self.limit = [], 0, limit

    def write(self, text):
        text = str(text)
        self.size += len(text)
        if self.size > self.limit:
            raise _OutputLimit()
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def getvalue(self):
        return "".join(self.parts)


_NULL = _Capture(0)
_NULL.write = lambda text: len(text)  # between calls, stray output goes nowhere


def _user_traceback(exc, filename):
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    where = ""
    mine = [f for f in frames if f.filename == filename]
    if mine:
        where = f" ({_limits['noun']} line {mine[-1].lineno})"
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(exc), exc))
    return where, text


def _run_user(fn, args, filename, max_output):
    """Call fn(*args) under the per-call limits. Returns (value, error, log)."""
    global _in_user_code
    cap = _Capture(max_output)
    sys.stdout = sys.stderr = cap
    value, error, tb = None, None, ""
    try:
        signal.setitimer(signal.ITIMER_PROF, _limits["cpu"])
        signal.setitimer(signal.ITIMER_REAL, _limits["timeout"])
        _in_user_code = True
        value = fn(*args)
    except _Limit as err:
        error = (err.kind, err.message)
    except _OutputLimit:
        error = ("runtime_error", f"{_limits['noun']} printed more than {max_output // 1024} kB; print less")
    except MemoryError:
        error = ("runtime_error", f"{_limits['noun']} ran out of memory (limit {CONFIG['memory_mb']} MB)")
    except SystemExit as err:
        error = ("runtime_error", f"{_limits['noun']} called sys.exit({err.code!r}); return "
                 f"{'text' if _limits['noun'] == 'tool' else 'a score'} instead")
    except BaseException as err:  # noqa: BLE001 - anything the user's code raises is a typed error
        where, tb = _user_traceback(err, filename)
        error = ("runtime_error", f"{type(err).__name__}: {err}{where}"[:2000])
    finally:
        _in_user_code = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        sys.stdout = sys.stderr = _NULL
    log = cap.getvalue()
    if tb:
        log = (log + ("\n" if log and not log.endswith("\n") else "") + tb)
    return value, error, log[: max_output + 4096]


def _check_score(value):
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, numbers.Real) and not isinstance(value, complex):
        try:
            score = float(value)
        except (TypeError, ValueError, OverflowError):
            score = math.nan
        if math.isfinite(score):
            return score, None
        return None, ("invalid_return", f"grade() returned {score!r}; return a finite number")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return None, ("invalid_return", f"grade() returned {type(value).__name__} {shown}; return a float")


def _tool_text(value, limit):
    """A tool's result as the text the model reads: strings as they are, anything else as JSON."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as err:
            return None, ("invalid_return", f"the tool returned {type(value).__name__}, which is not text or "
                          f"JSON ({err}); return a string")
    return value[:limit], None


_programs = {}  # gid -> (grade function or None, load error, filename)


def _load(gid, source, filename, load_timeout, max_output, entry="grade"):
    ns = {"__name__": "__grader__", "__file__": filename, "__builtins__": builtins}
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    def load():
        exec(compile(source, filename, "exec"), ns)  # compiled once per worker, then reused per call
        return ns.get(entry)

    saved = dict(_limits)
    _limits.update(timeout=load_timeout, cpu=load_timeout)
    fn, error, log = _run_user(load, (), filename, max_output)
    _limits.update(saved)
    if error:
        error = (error[0], f"loading the {_limits['noun']} failed: " + error[1])
    elif not callable(fn):
        what = "grade(sample, item)" if entry == "grade" else f"{entry}(...)"
        error, fn = ("runtime_error", f"the source defines no function {what}"), None
    _programs[gid] = (fn, error, filename)
    os.chdir(TMP)
    return error, log


def _send(fd, obj):
    data = (json.dumps(obj, default=str) + "\n").encode("utf-8", "surrogatepass")
    while data:
        data = data[os.write(fd, data):]


def _serve(fin, fout):
    while True:
        line = fin.readline()
        if not line:
            return
        msg = json.loads(line)
        if msg.get("op") == "exit":
            return
        gid, lim = msg["gid"], msg["limits"]
        _limits["noun"] = "tool" if msg.get("kind") == "tool" else "grader"
        _guard.set_read_dirs(msg.get("read_dirs"))
        max_output = int(lim.get("max_output", 65536))
        if "source" in msg:
            error, log = _load(gid, msg["source"], msg["filename"], float(lim.get("load_timeout", 60)),
                               max_output, msg.get("entry", "grade"))
            _send(fout, {"loaded": gid, "error": error, "log": log})
        fn, load_error, filename = _programs.get(gid, (None, ("runtime_error", "grader not loaded"), "?"))
        _limits.update(timeout=float(lim["timeout"]), cpu=float(lim["cpu"]))
        streak, max_streak = 0, int(lim.get("max_timeouts", 3))
        tool = msg.get("kind") == "tool"
        for i, (sample, item) in enumerate(msg["rows"]):
            if load_error:
                _send(fout, {"i": i, "s": None, "e": load_error, "l": ""})
                continue
            if streak >= max_streak:
                skipped = f"skipped: the {_limits['noun']} timed out on {streak} rows in a row in this batch"
                _send(fout, {"i": i, "s": None, "e": ["timeout", skipped], "l": ""})
                continue
            if tool:
                value, error, log = _run_user(lambda: fn(**sample), (), filename, max_output)
                if error is None:
                    value, error = _tool_text(value, max_output)
            else:
                value, error, log = _run_user(fn, (sample, item), filename, max_output)
                if error is None:
                    value, error = _check_score(value)
            streak = streak + 1 if error and error[0] == "timeout" else 0
            _send(fout, {"i": i, "s": value if error is None else None, "e": error, "l": log})
            if os.getcwd() != TMP:
                os.chdir(TMP)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _send(fout, {"done": True, "cpu": usage.ru_utime + usage.ru_stime})


def main():
    # The protocol keeps private copies of stdin/stdout; fds 0-2 become /dev/null so that user code
    # writing to them (os.write(1, ...), C libraries) cannot corrupt the protocol or the terminal.
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stdout = sys.stderr = _NULL
    os.chdir(TMP)
    started = time.monotonic()
    info = _lock_down()
    info["startup_s"] = round(time.monotonic() - started, 4)
    fin = os.fdopen(proto_in, "rb", buffering=1 << 16)
    _send(proto_out, {"ready": True, "info": info})
    _serve(fin, proto_out)


if __name__ == "__main__":
    main()
