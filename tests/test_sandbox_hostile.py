"""Hostile Python graders: each ends in a typed error, and the pool keeps serving afterwards."""

import os
import socket
import threading

import pytest

from graders.sandbox import Program, SandboxPool

GOOD = Program("def grade(sample, item):\n    return 0.75\n", "<good>")


@pytest.fixture(scope="module")
def pool():
    os.environ["FINETUNER_TEST_SECRET"] = "s3cret-token-value"  # workers start after this: must not see it
    p = SandboxPool(workers=2)
    yield p
    p.close()
    os.environ.pop("FINETUNER_TEST_SECRET", None)


def run(pool, body, rows=2, **limits):
    limits.setdefault("timeout_s", 1.0)
    source = "import os, sys, signal, time\n\ndef grade(sample, item):\n" + "".join(
        f"    {line}\n" for line in body.splitlines())
    results = pool.run(Program(source, "<hostile>", **limits), [({"output_text": "x"}, {})] * rows)
    # whatever happened, the pool still serves a good grader
    assert [r["score"] for r in pool.run(GOOD, [({}, {})] * 3)] == [0.75] * 3
    return results


def error_of(results):
    assert results[0]["score"] is None, results[0]
    return results[0]["error"]


@pytest.mark.parametrize("body,kind,needle", [
    ("while True: pass", "timeout", "longer than 1 s"),
    ("time.sleep(60)", "timeout", "longer than 1 s"),
    ("x = bytearray(10 ** 11)", "runtime_error", "out of memory"),
    ("x = []\nwhile True: x.append(bytes(10 ** 9))", "runtime_error", "out of memory"),
    ("while True: os.fork()", "runtime_error", "not allowed"),
    ("return os.system('echo pwned > /tmp/pwned')", "runtime_error", "not allowed"),
    ("import subprocess\nreturn subprocess.run(['id']).returncode", "runtime_error", "not allowed"),
    ("import multiprocessing\np = multiprocessing.Process(target=print)\np.start()", "runtime_error", ""),
    ("return len(open('/etc/passwd').read())", "runtime_error", "does not allow reading /etc/passwd"),
    (f"return len(open({__file__!r}).read())", "runtime_error", "does not allow reading"),
    ("return len(open(os.path.expanduser('~root/.netrc')).read())", "runtime_error", "does not allow reading"),
    ("return len(open(f'/proc/{os.getppid()}/environ').read())", "runtime_error", "does not allow reading"),
    ("return len(os.listdir('/'))", "runtime_error", "does not allow reading /"),
    ("open('/tmp/finetuner-escape.txt', 'w').write('x')", "runtime_error", "only allows writing inside"),
    ("print('y' * 10 ** 7)", "runtime_error", "printed more than 64 kB"),
    ("sys.stdout.write('z' * 10 ** 6)\nreturn 1", "runtime_error", "printed more than"),
    ("sys.exit(0)", "runtime_error", "sys.exit(0)"),
    ("raise SystemExit('bye')", "runtime_error", "sys.exit"),
    ("import ctypes\nctypes.string_at(0)", "runtime_error", ""),
    ("import ctypes\nreturn ctypes.CDLL(None).getpid()", "runtime_error", "not allowed"),
    ("os.kill(os.getppid(), signal.SIGKILL)", "runtime_error", "other processes"),
    ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "runtime_error", "not allowed"),
    ("import cffi", "runtime_error", "disabled in the grader sandbox"),
    ("return float('nan')", "invalid_return", "nan"),
    ("return float('inf')", "invalid_return", "inf"),
    ("return '0.5'", "invalid_return", "returned str '0.5'"),
    ("return None", "invalid_return", "NoneType"),
    ("return [1.0]", "invalid_return", "list"),
    ("return 1j", "invalid_return", "complex"),
])
def test_hostile_grader_gets_typed_error(pool, body, kind, needle):
    error = error_of(run(pool, body))
    assert error[0] == kind and needle in error[1], error


def test_escape_attempt_left_nothing_behind():
    assert not os.path.exists("/tmp/pwned") and not os.path.exists("/tmp/finetuner-escape.txt")


def test_environment_is_scrubbed(pool):
    results = run(pool, "print(sorted(os.environ))\nreturn float(any('s3cret' in v for v in os.environ.values()))")
    assert results[0]["score"] == 0.0
    assert "FINETUNER_TEST_SECRET" not in results[0]["log"] and "HOME" in results[0]["log"]


def test_network_is_blocked(pool):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        body = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\nreturn 1"
        error = error_of(run(pool, body))
        assert error[0] == "runtime_error" and ("not allowed" in error[1] or "Errno" in error[1])
        with pytest.raises(OSError):  # nothing ever connected
            listener.accept()
    finally:
        listener.close()


def test_os_level_layer_blocks_processes_without_the_audit_hook(pool):
    if not pool.info().get("seccomp"):
        pytest.skip("seccomp is not available here")
    # _posixsubprocess raises no audit event: only the seccomp filter stands in the way
    body = ("import _posixsubprocess\nr, w = os.pipe()\n"
            "return _posixsubprocess.fork_exec([b'/bin/true'], [b'/bin/true'], True, (), None, None, -1, -1, -1,"
            " -1, -1, -1, r, w, True, False, 0, None, None, None, -1, None, False)")
    error = error_of(run(pool, body))
    assert error[0] == "runtime_error" and "Operation not permitted" in error[1]


@pytest.mark.parametrize("body,needle", [
    ("os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV"),
    ("os._exit(3)", "exited with code 3"),
    ("os.abort()", "SIGABRT"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
])
def test_dying_worker_is_replaced(pool, body, needle):
    before = pool.restarts
    error = error_of(run(pool, body))
    assert error[0] == "runtime_error" and needle in error[1] and "replaced" in error[1]
    assert pool.restarts > before


def test_crash_in_c_code_that_ignores_signals_is_killed(pool):
    # sum() over a range runs in C without checking signals: only the parent's deadline can stop it
    error = error_of(run(pool, "return float(sum(range(10 ** 13)))", rows=1))
    assert error[0] == "timeout" and "worker was stopped" in error[1]  # how fast: benchmarks/sandbox.py


def test_grader_swallowing_our_timeout_is_killed(pool):
    error = error_of(run(pool, "while True:\n    try:\n        time.sleep(10)\n    except BaseException:\n"
                               "        pass", rows=1))
    assert error[0] == "timeout"


def test_repeated_crashes_skip_the_rest_of_the_batch(pool):
    results = run(pool, "os._exit(1)", rows=10)
    assert all(r["error"][0] == "runtime_error" for r in results)
    assert sum("skipped" in r["error"][1] for r in results) >= 2


def test_repeated_timeouts_skip_the_rest_of_the_batch(pool):
    results = run(pool, "while True: pass", rows=8, timeout_s=0.3)
    assert all(r["error"][0] == "timeout" for r in results)
    assert any("skipped" in r["error"][1] for r in results)


def test_hanging_module_code_times_out_once_for_the_batch(pool):
    source = "while True:\n    pass\ndef grade(s, i):\n    return 1\n"
    results = pool.run(Program(source, "<hang>", timeout_s=0.5, load_timeout_s=0.5), [({}, {})] * 10)
    assert all(r["error"][0] == "timeout" and "loading" in r["error"][1] for r in results)


def test_pool_serves_concurrent_callers(pool):
    out = []

    def call():
        out.append([r["score"] for r in pool.run(GOOD, [({}, {})] * 50)])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == [[0.75] * 50] * 4
