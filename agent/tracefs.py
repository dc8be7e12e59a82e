"""Make the kernel's trace event directory available for classic tracepoints.

The per-call syscall tracepoints (syscalls:sys_enter_fsync, ...) are attached by
their id under tracefs; BTF-typed tracepoints need no tracefs, so many hosts never
mounted it. Mounting it is harmless and what perf and bpftrace do too.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")


def events_dir() -> Path | None:
    for root in (TRACEFS, DEBUGFS_TRACING):
        if (root / "events").is_dir():
            return root / "events"
    return None


def ensure_mounted() -> str:
    """'' when trace events are reachable (mounting tracefs if needed), else why not."""
    if events_dir() is not None:
        return ""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) == 0 and events_dir() is not None:
        return ""
    err = ctypes.get_errno()
    return (f"tracefs is not mounted and mounting it at {TRACEFS} failed ({os.strerror(err)}): "
            f"mount it (mount -t tracefs nodev {TRACEFS}) or record with --detail full")
