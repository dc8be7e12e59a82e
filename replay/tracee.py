"""The ptrace side of replay: spawn a command stopped under a seccomp filter, pinned to one CPU,
read and write its registers and memory, patch its vDSO.

Tracer and tracee share one CPU: a ptrace stop that crosses CPUs costs several times one that
stays on the CPU (FIELD-NOTES). Registers go through python-ptrace's bindings; memory through
/proc/<pid>/mem (one pread/pwrite per buffer instead of a PTRACE_PEEK per word). The compiled hot
path (fastpath.c) does the same in C and can take the hottest syscalls as seccomp notifications
(``spawn(notify=...)``), which cost about two thirds of a ptrace stop.

vDSO: clock_gettime, gettimeofday, time and getcpu are served in user space by the vDSO, which
syscall tracing never sees. After exec, their entry points are overwritten (ptrace may write to
read-only text) with ``mov eax, NR; syscall; ret`` so each call becomes a real syscall, which the
seccomp filter stops and replay answers with the replay clock.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import threading
from dataclasses import dataclass

from ptrace.binding import func as pt

from kprobe.replay import seccomp
from kprobe.replay.elfsym import dynamic_functions
from kprobe.schemas import syscall_table as ST

PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
EVENT_FORK, EVENT_VFORK, EVENT_CLONE, EVENT_EXEC, EVENT_SECCOMP = 1, 2, 3, 4, 7
PR_SET_TSC, PR_TSC_SIGSEGV = 26, 2
VDSO_PATCHES = {  # symbol -> syscall number it becomes
    f"__vdso_{name}": ST.nr(name) for name in ("clock_gettime", "gettimeofday", "time", "clock_getres", "getcpu")
}
WALL = 0x40000000
NR_PIDFD_GETFD = ST.nr("pidfd_getfd")
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)


def close_inherited_fds() -> None:
    """In a forked child about to exec: close every descriptor above 2. The recorded and the
    replayed process must start with the same fd table, or every fd number they are given shifts
    and the replay diverges at the first open; the parent may hold descriptors without
    close-on-exec (libraries leave some), and which ones differs between processes. closerange
    uses close_range(2), so the wide span costs nothing."""
    os.closerange(3, 1 << 20)


def spawn(argv: list[str], env: dict[str, str] | None, cpu: int, cwd: str | None = None,
          notify: frozenset[int] = frozenset()) -> tuple[int, int]:
    """Fork; the child pins itself, asks to be traced, stops, installs the filter and execs.

    Returns (pid, listener fd). With ``notify``, those syscalls reach the tracer as seccomp user
    notifications instead of ptrace stops (a fraction of the cost per syscall);
    the child stops once more after installing the filter so the tracer can take the listener fd
    (pidfd_getfd); the child's copy is close-on-exec. Without, the listener fd is -1.

    Notifications are only used when no other thread of this process could take SIGCHLD (one that
    does not block it): a ptrace stop announces itself by SIGCHLD, and another thread could take
    it before the tracer's poll sees it (each stop would then wait out a poll slice). The check
    runs after the fork because OpenBLAS (numpy) stops its worker threads at fork; the child
    learns the decision via a pipe."""
    os.sched_setaffinity(0, {cpu})
    libc = ctypes.CDLL(None, use_errno=True)
    decide_r, decide_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            if cwd:
                os.chdir(cwd)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            pt.ptrace_traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            os.close(decide_w)
            use_notify = os.read(decide_r, 1) == b"n"
            close_inherited_fds()
            environ = env if env is not None else dict(os.environ)
            if seccomp.install(libc, notify if use_notify else frozenset()) >= 0:
                os.kill(os.getpid(), signal.SIGSTOP)  # the tracer takes the listener fd now
            # last, right before exec: from here rdtsc faults (detected, answered), even in this Python
            libc.prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0)
            os.execve(argv[0], argv, environ)
        except BaseException as e:
            os.write(2, f"kprobe replay: cannot start {argv[0]}: {e}\n".encode())
            os._exit(127)
    os.close(decide_r)
    try:
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise OSError(f"tracee {pid} did not stop before exec (status {status:#x})")
        pt.ptrace_setoptions(pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC
                             | PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL | PTRACE_O_TRACEFORK
                             | PTRACE_O_TRACEVFORK)
        notify = notify if not _threads_taking_sigchld() else frozenset()
        os.write(decide_w, b"n" if notify else b"p")
    finally:
        os.close(decide_w)
    pt.ptrace_cont(pid, 0)
    return pid, (_take_listener(pid, libc) if notify else -1)


def _threads_taking_sigchld() -> list[int]:
    """Other threads of this process that do not block SIGCHLD (librdkafka's block everything)."""
    me, bit = threading.get_native_id(), 1 << (signal.SIGCHLD - 1)
    out = []
    for name in os.listdir("/proc/self/task"):
        if int(name) == me:
            continue
        try:
            with open(f"/proc/self/task/{name}/status") as f:
                blocked = next((int(line.split()[1], 16) for line in f if line.startswith("SigBlk:")), 0)
        except OSError:
            continue  # the thread ended meanwhile
        if not blocked & bit:
            out.append(int(name))
    return out


def _take_listener(pid: int, libc: ctypes.CDLL) -> int:
    """Resume the child through its pre-exec syscalls up to its SIGSTOP after installing the
    filter; copy its seccomp listener fd into this process (pidfd_getfd) and let it exec."""
    while True:
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise OSError(f"tracee {pid} ended before exec (status {status:#x})")
        if os.WSTOPSIG(status) == signal.SIGSTOP and status >> 16 == 0:
            break
        pt.ptrace_cont(pid, 0)  # a pre-exec seccomp stop (kill, ...)
    listener = -1
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:seccomp notify":
                listener = int(name)
        except OSError:
            continue
    if listener < 0:
        raise OSError(f"tracee {pid}: no seccomp listener fd after installing the filter")
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(NR_PIDFD_GETFD, pidfd, listener, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd(seccomp listener)")
    finally:
        os.close(pidfd)
    # wake the tracee on this CPU when answering (6.6+; best effort: it only saves time)
    libc.ioctl(fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SET_FLAGS), ctypes.c_ulong(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
    pt.ptrace_cont(pid, 0)  # swallow the SIGSTOP
    return fd


@dataclass
class Memory:
    """Read/write another process's memory through /proc/<pid>/mem."""

    pid: int

    def __post_init__(self) -> None:
        self.fd = os.open(f"/proc/{self.pid}/mem", os.O_RDWR)

    def read(self, addr: int, n: int) -> bytes:
        if n <= 0 or addr == 0:
            return b""
        return os.pread(self.fd, n, addr)

    def write(self, addr: int, data: bytes) -> None:
        if data and addr:
            os.pwrite(self.fd, data, addr)

    def u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def cstr(self, addr: int, limit: int = 4096) -> bytes:
        out = b""
        while len(out) < limit:
            page_left = 4096 - (addr + len(out)) % 4096
            chunk = self.read(addr + len(out), min(page_left, 256))
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            out += chunk
        return out

    def iovecs(self, iov: int, cnt: int) -> list[tuple[int, int]]:
        raw = self.read(iov, 16 * min(cnt, 1024))
        return [struct.unpack_from("<QQ", raw, 16 * i) for i in range(len(raw) // 16)]

    def close(self) -> None:
        os.close(self.fd)


def vdso_symbols(pid: int, mem: Memory) -> tuple[int, dict]:
    """The tracee's vDSO base address and its dynamic function symbols ((0, {}) without a vDSO)."""
    base = end = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if line.rstrip().endswith("[vdso]"):
                lo, hi = line.split()[0].split("-")
                base, end = int(lo, 16), int(hi, 16)
    if not base:
        return 0, {}
    return base, dynamic_functions(mem.read(base, end - base))


def patch_vdso(pid: int, mem: Memory) -> list[str]:
    """Turn the vDSO time functions into real syscalls; returns the symbols patched."""
    base, syms = vdso_symbols(pid, mem)
    patched = []
    for name, nr in VDSO_PATCHES.items():
        sym = syms.get(name)
        if sym is None:
            continue
        code = b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05\xc3"  # mov eax, nr; syscall; ret
        mem.write(base + sym.value, code)
        patched.append(name)
    return patched


def get_regs(tid: int):
    return pt.ptrace_getregs(tid)


def set_regs(tid: int, regs) -> None:
    pt.ptrace_setregs(tid, regs)


def cont(tid: int, sig: int = 0) -> None:
    pt.ptrace_cont(tid, sig)


def to_exit(tid: int) -> None:
    """Resume to the syscall-exit stop (to check or fix the result of a syscall that ran)."""
    pt.ptrace_syscall(tid, 0)


def event_msg(tid: int) -> int:
    return int(pt.ptrace_geteventmsg(tid))
