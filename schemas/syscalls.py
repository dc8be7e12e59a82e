"""The syscalls the agent traces, and how to read their arguments (from schemas/syscall_table.py).

Only calls that explain latency in a financial service are traced (the table's ``capture``):
ledger I/O (write family, fsync), socket I/O, connection set-up, futex waits, sleeps and polls
(blocked time with an obvious reason), and openat (fd -> path). Every declared call has a name:
the sched probe reads the call a blocked thread is in, so any of them can name an off-CPU interval.
"""

from __future__ import annotations

import numpy as np

from kprobe.schemas.syscall_table import NR_MAX, TABLE, Capture

# name -> (nr, arg0 is an fd, returns a byte count), for the traced calls
X86_64: dict[str, tuple[int, bool, bool]] = {
    s.name: (s.nr, s.fd0, s.returns_bytes) for s in TABLE if s.capture is not None
}
# traced calls recorded whatever their duration (filter value KP_SYS_ALWAYS)
ALWAYS: frozenset[str] = frozenset(s.name for s in TABLE if s.capture is Capture.ALWAYS)


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = np.array([""] * NR_MAX, dtype=object)
    is_fd = np.zeros(NR_MAX, dtype=bool)
    is_bytes = np.zeros(NR_MAX, dtype=bool)
    for s in TABLE:
        if s.nr < NR_MAX:
            names[s.nr] = s.name
    for nr, fd, nbytes in X86_64.values():
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
