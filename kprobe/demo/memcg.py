"""A throw-away memory cgroup with a hard limit (cgroup v2 or v1), for a process that should feel memory pressure."""

from __future__ import annotations

import time
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


class MemcgError(RuntimeError):
    """No writable memory controller (not root, or cgroups not mounted)."""


class Memcg:
    def __init__(self, name: str, limit_bytes: int):
        if (_ROOT / "cgroup.controllers").exists():  # v2
            self.path = _ROOT / name
            limit_file = "memory.max"
        else:
            self.path = _ROOT / "memory" / name
            limit_file = "memory.limit_in_bytes"
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / limit_file).write_text(str(limit_bytes))
        except OSError as e:
            raise MemcgError(f"cannot create memory cgroup {self.path}: {e}") from e
        self.limit_bytes = limit_bytes

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the cgroup once its processes have exited (retries briefly: exit is asynchronous)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
