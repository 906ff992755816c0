"""The seccomp filter for sandbox workers, as raw BPF (no libseccomp needed).

Loaded by `_sandbox_worker.py` from its own folder before any user code runs; standard library only.
The filter makes fork/exec fail (threads stay allowed), refuses sockets other than Unix sockets, signals to
other processes, ptrace, raising resource limits, io_uring and new namespaces. Each call is EPERM, so Python
raises a normal PermissionError.
"""

import os


def seccomp_program(libc_pid):
    """A BPF filter: no new processes, no non-Unix sockets, no signals to others, no ptrace, no raising
    limits, no namespaces. Returns (bytes, count) or None on CPUs we have no syscall table for."""
    import struct

    machine = os.uname().machine
    if machine == "x86_64":
        audit_arch = 0xC000003E
        nr = dict(fork=57, vfork=58, execve=59, execveat=322, clone=56, clone3=435, socket=41, kill=62,
                  tkill=200, tgkill=234, ptrace=101, process_vm_readv=310, process_vm_writev=311,
                  setrlimit=160, prlimit64=302, io_uring_setup=425, unshare=272, setns=308, mount=165,
                  pidfd_send_signal=424, pidfd_open=434)
    elif machine in ("aarch64", "arm64"):
        audit_arch = 0xC00000B7
        nr = dict(execve=221, execveat=281, clone=220, clone3=435, socket=198, kill=129, tkill=130,
                  tgkill=131, ptrace=117, process_vm_readv=270, process_vm_writev=271, setrlimit=164,
                  prlimit64=261, io_uring_setup=425, unshare=97, setns=268, mount=40,
                  pidfd_send_signal=424, pidfd_open=434)
    else:
        return None
    LD, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = []  # (code, jt, jf, k); jt/jf are label names or 0

    def ins(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    ins(LD, 4)                                   # seccomp_data.arch
    ins(JEQ, audit_arch, 0, "deny")              # a foreign ABI (e.g. int 0x80) gets nothing
    ins(LD, 0)                                   # seccomp_data.nr
    if machine == "x86_64":
        ins(JGE, 0x40000000, "deny", 0)          # the x32 ABI would bypass the numbers below
    for name in ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
                 "setrlimit", "io_uring_setup", "unshare", "setns", "mount", "pidfd_send_signal",
                 "pidfd_open"):
        if name in nr:
            ins(JEQ, nr[name], "deny", 0)
    ins(JEQ, nr["clone3"], "enosys", 0)          # clone3's flags sit behind a pointer: make libc use clone
    ins(JEQ, nr["clone"], "clone", 0)
    ins(JEQ, nr["socket"], "socket", 0)
    ins(JEQ, nr["prlimit64"], "prlimit", 0)
    for name in ("kill", "tkill", "tgkill"):
        ins(JEQ, nr[name], "pid", 0)
    ins(RET, ALLOW)
    labels = {}
    labels["clone"] = len(prog)
    ins(LD, 16)                                  # args[0] = flags: threads yes, processes no
    ins(JSET, 0x00010000, "allow", "deny")
    labels["socket"] = len(prog)
    ins(LD, 16)                                  # args[0] = domain
    ins(JEQ, 1, "allow", "deny")                 # AF_UNIX only (socketpair, asyncio self-pipe)
    labels["prlimit"] = len(prog)
    ins(LD, 32)                                  # args[2] = new limit pointer: reading limits is fine
    ins(JEQ, 0, 0, "deny")
    ins(LD, 36)
    ins(JEQ, 0, "allow", "deny")
    labels["pid"] = len(prog)
    ins(LD, 16)                                  # args[0] = target pid: only ourselves
    ins(JEQ, libc_pid, "allow", "deny")
    labels["allow"] = len(prog)
    ins(RET, ALLOW)
    labels["deny"] = len(prog)
    ins(RET, EPERM)
    labels["enosys"] = len(prog)
    ins(RET, ENOSYS)
    out = b""
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out += struct.pack("<HBBI", code, jt, jf, k)
    return out, len(prog)
