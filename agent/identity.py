"""Process identity for enrichment: comm, exe, cmdline, cgroup, container id, service.

Looked up once per process (not per event) from /proc and cached; a process
that exited before we looked keeps the kernel's comm. The service name follows
the OpenTelemetry convention first (OTEL_SERVICE_NAME in the environment, the
same name its spans carry), then the container, then comm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_CONTAINER_RE = re.compile(r"([0-9a-f]{64})")
_POD_RE = re.compile(r"pod([0-9a-f_\-]{36})")


@dataclass(frozen=True)
class Identity:
    tgid: int
    comm: str
    exe: str = ""
    cmdline: str = ""
    cgroup: str = ""
    container_id: str = ""
    service: str = ""


def _read(path: Path, limit: int = 65536) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def read_identity(tgid: int, proc: Path = Path("/proc")) -> Identity | None:
    base = proc / str(tgid)
    comm = _read(base / "comm").decode(errors="replace").strip()
    if not comm:
        return None
    try:
        exe = str((base / "exe").readlink())
    except OSError:
        exe = ""
    cmdline = _read(base / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    cgroup = _read(base / "cgroup").decode(errors="replace").strip().split("\n")[-1].split(":", 2)[-1]
    m = _CONTAINER_RE.search(cgroup)
    container = m.group(1)[:12] if m else ""
    service = ""
    for kv in _read(base / "environ", 1 << 20).split(b"\0"):
        if kv.startswith(b"OTEL_SERVICE_NAME="):
            service = kv.split(b"=", 1)[1].decode(errors="replace")
            break
        if kv.startswith(b"OTEL_RESOURCE_ATTRIBUTES=") and not service:
            for part in kv.split(b"=", 1)[1].split(b","):
                if part.startswith(b"service.name="):
                    service = part.split(b"=", 1)[1].decode(errors="replace")
    if not service:
        pod = _POD_RE.search(cgroup)
        service = f"container:{container}" if container else (f"pod:{pod.group(1)[:8]}" if pod else comm)
    return Identity(tgid, comm, exe, cmdline, cgroup, container, service)


@dataclass
class IdentityCache:
    """tgid -> Identity, refreshed when a process execs (new image, maybe new service)."""

    proc: Path = Path("/proc")
    known: dict[int, Identity] = field(default_factory=dict)
    new: list[Identity] = field(default_factory=list)  # not yet written to the processes table

    def forget(self, tgids: np.ndarray) -> None:
        for t in np.unique(tgids).tolist():
            self.known.pop(int(t), None)

    def get(self, tgid: int, fallback_comm: str = "") -> Identity:
        ident = self.known.get(tgid)
        if ident is None:
            ident = read_identity(tgid, self.proc) or Identity(tgid, fallback_comm, service=fallback_comm)
            self.known[tgid] = ident
            self.new.append(ident)
        return ident

    def services(self, tgids: np.ndarray) -> np.ndarray:
        """Vectorised: one lookup per distinct tgid in the batch."""
        if tgids.size == 0:
            return np.empty(0, dtype=object)
        if tgids[0] == tgids.min() == tgids.max():  # one process: the common busy-batch case
            out = np.empty(tgids.size, dtype=object)
            out.fill(self.get(int(tgids[0])).service if tgids[0] else "")
            return out
        uniq, inverse = np.unique(tgids, return_inverse=True)
        names = np.array([self.get(int(t)).service if t else "" for t in uniq.tolist()], dtype=object)
        return names[inverse]

    def take_new(self) -> list[Identity]:
        out, self.new = self.new, []
        return out
