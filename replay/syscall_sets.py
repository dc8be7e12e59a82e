"""Which syscalls fall in which of replay's classes, derived from schemas/syscall_table.py.

Each set answers one question the engine, the compiled hot path (fastpath.py) and the seccomp
filter ask about a syscall number; nothing here spells a number.
"""

from __future__ import annotations

from kprobe.schemas.syscall_table import BY_NR, TABLE, Buf, Rule, nr, numbers

RULE: dict[int, Rule] = {s.nr: s.rule for s in TABLE}  # undeclared calls: Rule.PASS
# nr -> how its data buffer is given (Buf codes: 1 plain, -1 iovec array, -2 msghdr)
READS: dict[int, int] = {s.nr: int(s.buf) for s in TABLE if s.rule is Rule.READ and s.buf is not None}
WRITES: dict[int, int] = {s.nr: int(s.buf) for s in TABLE if s.rule is Rule.WRITE and s.buf is not None}
CLOCKS = numbers(lambda s: s.rule is Rule.CLOCK)
FD_CREATORS = numbers(lambda s: s.rule is Rule.NEW_FD)    # socket, accept(4), epoll, eventfd, timerfd, ...
INPUT_WAITS = numbers(lambda s: s.waits)
DUPS = numbers(lambda s: s.rule is Rule.DUP)
OPENS = numbers(lambda s: s.rule is Rule.OPEN)
CLONES = numbers(lambda s: s.rule is Rule.CLONE)
# pipe, pipe2, socketpair: made for real (the tracee holds both fds at their recorded numbers), then
# answered from the log like a socket: a thread reading a pipe never waits for a sibling, and what
# goes through it is compared byte for byte. nr -> argument holding the int[2]
FD_PAIRS: dict[int, int] = {s.nr: s.pair_arg for s in TABLE if s.rule is Rule.PAIR}
KEYED = numbers(lambda s: s.keyed)                       # args[0] is an fd the recorded event must match
ON_FD = numbers(lambda s: s.rule is Rule.ON_FD)          # answered from the log on an emulated fd
FD_SHOWN = KEYED | numbers(lambda s: s.rule in (Rule.ON_FD, Rule.MMAP))  # messages show args[0] as an fd
# futex (and futex_waitv/wake/wait/requeue) and sched_yield: hand-overs between threads. Answered
# with the recorded result: the thread order already put the waker's block before the waiter's
# return, so nothing is left to wait for (glibc re-checks the lock word after every wake-up).
THREAD_SYNC = numbers(lambda s: s.sync)
# answered from the log whatever the fd
ALWAYS_ANSWERED = numbers(lambda s: s.rule is Rule.LOG or s.answered)
EXTERNAL_NRS = numbers(lambda s: s.external)             # wait for the outside by their nature
# what the compiled loop never answers itself (Python decides: fds, threads, the process's end)
BARRIERS = numbers(lambda s: s.rule in (Rule.OPEN, Rule.CLOSE, Rule.MMAP, Rule.CLONE, Rule.NEW_FD, Rule.DUP,
                                        Rule.PAIR, Rule.EXIT_GROUP))
# nr -> {recorded out-region: argument index it is written to}
TARGETS: dict[int, dict[int, int]] = {s.nr: dict(s.out) for s in TABLE if s.out}

NR_FUTEX = nr("futex")
NR_FCNTL = nr("fcntl")
NR_CLONE = nr("clone")
NR_CLONE3 = nr("clone3")
NR_OPENAT = nr("openat")
NR_SOCKET = nr("socket")
NR_SOCKETPAIR = nr("socketpair")
NR_ACCEPT = nr("accept")
NR_ACCEPT4 = nr("accept4")
NR_RECVFROM = nr("recvfrom")
NR_EVENTFD2 = nr("eventfd2")
NR_EXIT_GROUP = nr("exit_group")
NR_TIME = nr("time")
NR_GETTIMEOFDAY = nr("gettimeofday")
NR_CLOCK_GETTIME = nr("clock_gettime")
ACCEPTS = frozenset({NR_ACCEPT, NR_ACCEPT4})

F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030  # fcntl commands that make an fd
FCNTL_DUPFD = frozenset({F_DUPFD, F_DUPFD_CLOEXEC})
CLONE_THREAD = 0x10000
SOCK_CLOEXEC = 0o2000000  # = O_CLOEXEC = EFD_CLOEXEC
# futex operations the kernel itself writes memory for (PI ownership, FUTEX_WAKE_OP's atomic
# op): run for real, in the recorded order, where none of them blocks
FUTEX_WAKE_OP, FUTEX_LOCK_PI, FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI = 5, 6, 7, 8
FUTEX_WAIT_REQUEUE_PI, FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI2 = 11, 12, 13
FUTEX_KERNEL_WRITES = frozenset({FUTEX_WAKE_OP, FUTEX_LOCK_PI, FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI,
                                 FUTEX_WAIT_REQUEUE_PI, FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI2})
FUTEX_CMD_MASK = 0x7F  # the operation without FUTEX_PRIVATE_FLAG / FUTEX_CLOCK_REALTIME


def futex_runs_for_real(nr: int, args: tuple[int, ...]) -> bool:
    return nr == NR_FUTEX and (args[1] & FUTEX_CMD_MASK) in FUTEX_KERNEL_WRITES


def sysname(nr: int) -> str:
    s = BY_NR.get(nr)
    return s.name if s is not None else _other_name(nr)


def _other_name(nr: int) -> str:
    from ptrace.syscall.names import SYSCALL_NAMES  # calls the table does not declare

    return SYSCALL_NAMES.get(nr, f"syscall_{nr}")


def describe(nr: int, args: tuple[int, ...], ret: int | None = None) -> str:
    fd = f"fd={args[0] if args[0] < 1 << 31 else args[0] - (1 << 64)}"
    core = f"{sysname(nr)}({fd}, ...)" if nr in FD_SHOWN else f"{sysname(nr)}(...)"
    return core + (f" = {ret}" if ret is not None else "")


__all__ = ["Buf", "Rule"]
