"""The sandbox workers' audit hook: a Python-level guard on files, processes, network and ctypes.

Loaded by `_sandbox_worker.py` from its own folder and installed (`install`) after the OS-level lock-down,
just before user code runs; standard library only. Audit hooks cannot be removed, but native code can step
around them, which is why the seccomp filter and rlimits exist too (docs/graders.md says which is which).
Reads are allowed in the worker's temporary folder, the grader file's folder and Python's installation
(never secret-looking files); writes only in the temporary folder.
"""

import os
import sys


def _roots(paths):
    out = set()
    for p in paths:
        if p:
            out.add(os.path.realpath(p))
    return tuple(sorted(out))


TMP, MYPID = "", 0
_READ_ROOTS = ()
_READ_FILES = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/etc/localtime", "/etc/mime.types"}
_extra_read_roots = ()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_BLOCKED_IMPORTS = {"cffi", "_cffi_backend"}  # cffi calls C with no audit events at all


def _norm(path):
    if isinstance(path, int) or path is None:
        return None
    path = os.fsdecode(os.fspath(path))
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    return os.path.realpath(path)


def _under(path, roots):
    for root in roots:
        if path == root or path.startswith(root + os.sep) or root == os.sep:
            return True
    return False


# Refused even inside an allowed folder (a project folder next to a grader may hold these).
_SECRET_PARTS = {".env", ".netrc", ".npmrc", ".pypirc", ".git-credentials", ".ssh", ".aws", ".gnupg", ".docker",
                 ".kube", ".git", ".huggingface", "credentials", "token", ".boto", ".s3cfg"}


def _check_read(path):
    p = _norm(path)
    if p is None or p in _READ_FILES:
        return
    if (_under(p, _READ_ROOTS) or _under(p, _extra_read_roots)) and not _SECRET_PARTS.intersection(p.split(os.sep)):
        return
    raise PermissionError(f"the grader sandbox does not allow reading {p} (only the grader's own folder, "
                          "its temporary folder and installed Python packages)")


def _check_write(path):
    p = _norm(path)
    if p is None or p == "/dev/null" or _under(p, (TMP,)):
        return
    raise PermissionError(f"the grader sandbox only allows writing inside its temporary folder, not {p}")


def _on_open(args):
    path, mode, flags = args
    if isinstance(path, int):
        return
    writing = bool((flags or 0) & _WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
    (_check_write if writing else _check_read)(path)


def _blocked(event):
    def handler(args):
        raise PermissionError(f"{event} is not allowed in the grader sandbox")
    return handler


def _on_import(args):
    if args[0].partition(".")[0] in _BLOCKED_IMPORTS:
        raise ImportError(f"{args[0]} is disabled in the grader sandbox (it can bypass the sandbox's limits)")


def _on_kill(args):
    if args[0] != MYPID:
        raise PermissionError("sending signals to other processes is not allowed in the grader sandbox")


def _on_socket(args):
    if args[1] not in (1, -1):  # AF_UNIX, or a socket object wrapping an existing fd
        raise PermissionError("network access is not allowed in the grader sandbox")


def _paths(*read_idx, write=(0,)):
    def handler(args):
        for i in read_idx:
            _check_read(args[i])
        for i in write:
            if i < len(args):
                _check_write(args[i])
    return handler


_HANDLERS = {
    "open": _on_open,
    "import": _on_import,
    "os.kill": _on_kill,
    "socket.__new__": _on_socket,
    "os.listdir": lambda a: _check_read(a[0] if a[0] not in (None, ".") else "."),
    "os.scandir": lambda a: _check_read(a[0] if a[0] not in (None, ".") else "."),
    "os.remove": _paths(), "os.rmdir": _paths(), "os.mkdir": _paths(), "os.chmod": _paths(),
    "os.chown": _paths(), "os.truncate": _paths(), "os.utime": _paths(), "os.chflags": _paths(),
    "os.rename": _paths(write=(0, 1)), "os.replace": _paths(write=(0, 1)), "os.link": _paths(write=(0, 1)),
    "os.symlink": _paths(write=(1,)), "shutil.rmtree": _paths(), "shutil.copyfile": _paths(0, write=(1,)),
    "shutil.copytree": _paths(0, write=(1,)), "shutil.move": _paths(write=(0, 1)),
}
for _event in ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.killpg",
               "subprocess.Popen", "pty.spawn", "os.startfile", "webbrowser.open", "socket.connect",
               "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname",
               "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo", "http.client.connect",
               "ftplib.connect", "smtplib.connect", "urllib.Request", "resource.setrlimit", "resource.prlimit",
               "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata",
               "ctypes.string_at", "ctypes.wstring_at", "ctypes.PyObj_FromPtr", "signal.pthread_kill"):
    _HANDLERS[_event] = _blocked(_event)


def set_read_dirs(dirs):
    """Folders the current program may also read (a file grader's own folder)."""
    global _extra_read_roots
    _extra_read_roots = _roots(dirs or [])


def install(tmp, mypid):
    """Add the audit hook; from now on every audited operation of this process goes through it."""
    global TMP, MYPID, _READ_ROOTS
    TMP, MYPID = tmp, mypid
    _READ_ROOTS = _roots([tmp, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                          os.path.dirname(os.__file__), "/usr/share/zoneinfo", "/usr/lib/python3", f"/proc/{mypid}"]
                         + [p for p in sys.path if p and os.path.isabs(p)])
    handlers = _HANDLERS

    def hook(event, args):
        handler = handlers.get(event)
        if handler is not None:
            handler(args)

    sys.addaudithook(hook)
