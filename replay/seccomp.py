"""A seccomp filter that lets memory, signal and thread bookkeeping run at full speed and stops
(SECCOMP_RET_TRACE) on every other syscall, installed in the child before exec.

Why a filter instead of PTRACE_SYSCALL: every ptrace stop costs ~15 µs even on one CPU (two
stops per syscall with PTRACE_SYSCALL), and a program's start-up is dominated by mmap/mprotect/brk
that replay never needs to see. The same predicate (:func:`trapped`) decides which recorded
events the replay expects, so log and tracee always agree on what is compared.
"""

from __future__ import annotations

import ctypes
import struct

from kprobe.schemas import syscall_table as ST
from kprobe.schemas.syscall_table import NR_MAX, Rule, numbers

# never stop: the kernel does these for real and replay does not need to see them. futex and
# sched_yield do stop: they are where threads hand over to each other (replay/order.py orders them
# like every other trapped call; replay answers them from the log, so none ever blocks); so does
# exit_group, which ends every thread: not before the siblings did what the recording shows
ALLOWED = numbers(lambda s: s.rule is Rule.RUN)
NR_MMAP = ST.nr("mmap")
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_SET_MODE_FILTER = 1
PR_SET_NO_NEW_PRIVS = 38
NR_SECCOMP = ST.nr("seccomp")


# clock reads trap (the vDSO is patched) but are not where threads hand over: they belong to a
# thread's run of user code (replay/order.py)
CLOCK_READS = numbers(lambda s: s.rule is Rule.CLOCK)
NR_URETPROBE = ST.nr("uretprobe")  # the kernel's uretprobe trampoline (the recorder's time uprobes), never replayed


def hand_over(nr: int, args: tuple[int, ...]) -> bool:
    """Does replay order threads at this syscall? The recording probe is told the same numbers
    (capture.py fills its kp_rordered map from :func:`hand_over_numbers`)."""
    return trapped(nr, args) and nr not in CLOCK_READS and nr != NR_URETPROBE


def hand_over_numbers(limit: int = NR_MAX) -> list[int]:
    """Syscall numbers below ``limit`` that are hand-overs (mmap: decided by its fd in the probe)."""
    return [nr for nr in range(limit) if hand_over(nr, (0, 0, 0, 0, 1, 0))]


def trapped(nr: int, args: tuple[int, ...]) -> bool:
    """Does this syscall stop the tracee? mmap only when it maps a file (the fd may be recorded)."""
    if nr == NR_MMAP:
        return (args[4] & 0xFFFFFFFF) != 0xFFFFFFFF
    return nr not in ALLOWED


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build_filter(notify: frozenset[int] = frozenset()) -> bytes:
    """cBPF: check arch; mmap with fd -1 -> allow; allowed numbers -> allow; ``notify`` numbers ->
    a seccomp user notification (answered through the listener fd, no ptrace stop); else trace."""
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    prog = [
        _ins(ld_w_abs, 0, 0, 4),                       # arch
        _ins(jeq_k, 1, 0, AUDIT_ARCH_X86_64),
        _ins(ret_k, 0, 0, SECCOMP_RET_KILL_PROCESS),
        _ins(ld_w_abs, 0, 0, 0),                       # nr
        _ins(jeq_k, 0, 4, NR_MMAP),                    # not mmap: to the allow list
        _ins(ld_w_abs, 0, 0, 16 + 4 * 8),              # args[4] low word (fd)
        _ins(jeq_k, 0, 1, 0xFFFFFFFF),
        _ins(ret_k, 0, 0, SECCOMP_RET_ALLOW),
        _ins(ret_k, 0, 0, SECCOMP_RET_TRACE),
    ]
    allowed = sorted(ALLOWED)
    notified = sorted(set(notify) - ALLOWED - {NR_MMAP})
    for i, nr in enumerate(allowed):
        # jump to the ALLOW at the end if equal
        prog.append(_ins(jeq_k, len(allowed) + len(notified) - i, 0, nr))
    for j, nr in enumerate(notified):
        # jump to the USER_NOTIF after it
        prog.append(_ins(jeq_k, len(notified) - j + 1, 0, nr))
    prog.append(_ins(ret_k, 0, 0, SECCOMP_RET_TRACE))
    prog.append(_ins(ret_k, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(_ins(ret_k, 0, 0, SECCOMP_RET_USER_NOTIF))
    return b"".join(prog)


def install(libc: ctypes.CDLL, notify: frozenset[int] = frozenset()) -> int:
    """In the child, right before exec. Raises OSError if the kernel refuses. With ``notify``,
    returns the listener fd (close-on-exec: the program never sees it), else -1."""
    filt = build_filter(notify)
    buf = ctypes.create_string_buffer(filt, len(filt))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(filt) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER if notify else 0
    fd = libc.syscall(NR_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")
    return fd if notify else -1
