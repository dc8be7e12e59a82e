"""The syscalls the agent traces, by x86_64 number, and how to read their arguments.

Only calls that explain latency in a financial service are traced: ledger I/O
(write family, fsync), socket I/O, connection set-up, futex waits, sleeps and
polls (blocked time with an obvious reason), and openat (fd -> path).
"""

from __future__ import annotations

import numpy as np

# name -> (nr, arg0 is an fd, returns a byte count)
X86_64: dict[str, tuple[int, bool, bool]] = {
    "read": (0, True, True),
    "write": (1, True, True),
    "close": (3, True, False),
    "poll": (7, False, False),
    "pread64": (17, True, True),
    "pwrite64": (18, True, True),
    "readv": (19, True, True),
    "writev": (20, True, True),
    "select": (23, False, False),
    "nanosleep": (35, False, False),
    "connect": (42, True, False),
    "accept": (43, True, False),
    "sendto": (44, True, True),
    "recvfrom": (45, True, True),
    "sendmsg": (46, True, True),
    "recvmsg": (47, True, True),
    "fsync": (74, True, False),
    "fdatasync": (75, True, False),
    "futex": (202, False, False),
    "epoll_wait": (232, False, False),
    "clock_nanosleep": (230, False, False),
    "openat": (257, False, False),
    "pselect6": (270, False, False),
    "ppoll": (271, False, False),
    "sync_file_range": (277, True, False),
    "epoll_pwait": (281, False, False),
    "accept4": (288, True, False),
    "preadv": (295, True, True),
    "pwritev": (296, True, True),
    "recvmmsg": (299, True, False),
    "sendmmsg": (307, True, False),
    "preadv2": (327, True, True),
    "pwritev2": (328, True, True),
    "openat2": (437, False, False),
}

NR_MAX = 512

# Names of other calls a thread may block in (not traced on their own; the sched probe reads the
# call from a blocking thread's registers, so any of them can name an off-CPU interval).
NAMED_ONLY: dict[str, int] = {
    "open": 2, "stat": 4, "fstat": 5, "lstat": 6, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11,
    "brk": 12, "ioctl": 16, "pipe": 22, "sched_yield": 24, "msync": 26, "madvise": 28, "dup": 32,
    "dup2": 33, "pause": 34, "sendfile": 40, "socket": 41, "shutdown": 48, "bind": 49, "listen": 50,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60, "wait4": 61, "kill": 62,
    "msgsnd": 69, "msgrcv": 70, "fcntl": 72, "flock": 73, "truncate": 76, "ftruncate": 77,
    "getdents": 78, "getdents64": 217, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "unlink": 87,
    "ptrace": 101, "rt_sigtimedwait": 128, "rt_sigsuspend": 130, "sync": 162, "io_getevents": 208,
    "io_submit": 209, "semtimedop": 220, "exit_group": 231, "waitid": 247, "newfstatat": 262,
    "unlinkat": 263, "renameat": 264, "splice": 275, "tee": 276, "epoll_wait_old": 215,
    "fallocate": 285, "signalfd4": 289, "eventfd2": 290, "dup3": 292, "pipe2": 293,
    "syncfs": 306, "renameat2": 316, "getrandom": 318, "copy_file_range": 326, "statx": 332,
    "io_pgetevents": 333, "io_uring_enter": 426, "clone3": 435, "epoll_pwait2": 441,
    "futex_waitv": 449, "semop": 65,
}


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = np.array([""] * NR_MAX, dtype=object)
    is_fd = np.zeros(NR_MAX, dtype=bool)
    is_bytes = np.zeros(NR_MAX, dtype=bool)
    for name, nr in NAMED_ONLY.items():
        names[nr] = name
    for name, (nr, fd, nbytes) in X86_64.items():
        names[nr] = name
        is_fd[nr] = fd
        is_bytes[nr] = nbytes
    return names, is_fd, is_bytes


NAMES, ARG0_IS_FD, RETURNS_BYTES = _tables()


def numbers(selected: list[str] | None = None) -> list[int]:
    """Syscall numbers to trace; ``selected`` names a subset (unknown names are an error)."""
    if not selected:
        return [nr for nr, _, _ in X86_64.values()]
    unknown = sorted(set(selected) - set(X86_64))
    if unknown:
        raise ValueError(f"unknown or untraceable syscalls: {', '.join(unknown)} (known: {', '.join(X86_64)})")
    return [X86_64[n][0] for n in selected]
