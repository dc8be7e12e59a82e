"""Small process helpers shared by the demo workloads (each runs as `python -m kprobe.demo.<name>`)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def set_comm(name: str) -> None:
    """Name this process (and its main thread) as the kernel reports it: comm, at most 15 bytes."""
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/comm", "w") as f:
        f.write(name[:15])


def emit(**fields: Any) -> None:
    """One JSON line on stdout: how a workload reports what it did to the orchestrator or a test."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    """Block until the orchestrator says go (after it has put us on the recorder's watch list)."""
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)


def now_ns() -> int:
    return time.time_ns()
