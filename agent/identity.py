"""Process identity for enrichment: comm, exe, cmdline, cgroup, container, pod, service.

Looked up once per process (not per event) from /proc and cached; a process
that exited before we looked keeps the kernel's comm. The service name follows
the OpenTelemetry convention first (OTEL_SERVICE_NAME in the environment, the
same name its spans carry), then the pod's workload (agent/pod_identity.py: the
cgroup path gives the pod's uid, the kubelet's pod list its names), then the
container or pod id, then comm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kprobe.agent.pod_identity import CgroupRef, PodDirectory, PodInfo, parse_proc_cgroup


@dataclass(frozen=True)
class Identity:
    tgid: int
    comm: str
    exe: str = ""
    cmdline: str = ""
    cgroup: str = ""
    container_id: str = ""     # the first 12 hex digits, as `docker ps` and `crictl ps` show them
    service: str = ""
    otel_service: str = ""     # from the process's environment, when it says
    ref: CgroupRef = CgroupRef()
    pod: PodInfo | None = None  # from the kubelet, when reachable and it lists the pod
    container: str = ""        # the container's name in its pod (kubelet)

    @property
    def namespace(self) -> str:
        return self.pod.namespace if self.pod else ""

    @property
    def pod_name(self) -> str:
        return self.pod.name if self.pod else ""

    @property
    def runtime(self) -> str:
        if self.ref.runtime:
            return self.ref.runtime
        return self.pod.container(self.ref.container_id)[1] if self.pod else ""


def _read(path: Path, limit: int = 65536) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def _otel_service(environ: bytes) -> str:
    service = ""
    for kv in environ.split(b"\0"):
        if kv.startswith(b"OTEL_SERVICE_NAME="):
            return kv.split(b"=", 1)[1].decode(errors="replace")
        if kv.startswith(b"OTEL_RESOURCE_ATTRIBUTES=") and not service:
            for part in kv.split(b"=", 1)[1].split(b","):
                if part.startswith(b"service.name="):
                    service = part.split(b"=", 1)[1].decode(errors="replace")
    return service


def service_name(ident: Identity) -> str:
    """OTEL_SERVICE_NAME, else the pod's workload, else container:<id>/pod:<uid>, else comm."""
    if ident.otel_service:
        return ident.otel_service
    if ident.pod is not None and ident.pod.workload:
        return ident.pod.workload
    if ident.container_id:
        return f"container:{ident.container_id}"
    if ident.ref.pod_uid:
        return f"pod:{ident.ref.pod_uid[:8]}"
    return ident.comm


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
    cgroups = _read(base / "cgroup").decode(errors="replace")
    ref = parse_proc_cgroup(cgroups)
    cgroup = ref.path or cgroups.strip().split("\n")[-1].split(":", 2)[-1]
    ident = Identity(tgid, comm, exe, cmdline, cgroup, ref.container_id[:12],
                     otel_service=_otel_service(_read(base / "environ", 1 << 20)), ref=ref)
    return replace(ident, service=service_name(ident))


def with_pod(ident: Identity, pod: PodInfo) -> Identity:
    """The identity named after its pod (and its container's name in it)."""
    out = replace(ident, pod=pod, container=pod.container(ident.ref.container_id)[0])
    return replace(out, service=service_name(out))


@dataclass
class IdentityCache:
    """tgid -> Identity, refreshed when a process execs (new image, maybe new service).

    With a pod directory (the kubelet's pod list), a process whose cgroup names a pod is named
    after it as soon as the kubelet lists the pod: then a new row goes to the processes table.
    """

    proc: Path = Path("/proc")
    pods: PodDirectory | None = None
    counters: dict = field(default_factory=dict)   # processes seen in containers / pods / named pods
    known: dict[int, Identity] = field(default_factory=dict)
    new: list[Identity] = field(default_factory=list)  # not yet written to the processes table

    def forget(self, tgids: np.ndarray) -> None:
        for t in np.unique(tgids).tolist():
            self.known.pop(int(t), None)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _resolve_pod(self, ident: Identity) -> Identity:
        if self.pods is None or not ident.ref.pod_uid or ident.pod is not None:
            return ident
        info = self.pods.lookup(ident.ref.pod_uid)
        if info is None:
            return ident
        self._count("processes_named_by_kubelet")
        return with_pod(ident, info)

    def get(self, tgid: int, fallback_comm: str = "") -> Identity:
        ident = self.known.get(tgid)
        if ident is None:
            ident = read_identity(tgid, self.proc) or Identity(tgid, fallback_comm, service=fallback_comm)
            if ident.ref.container_id:
                self._count("processes_in_containers")
            if ident.ref.pod_uid:
                self._count("processes_in_pods")
            ident = self._resolve_pod(ident)
            self.known[tgid] = ident
            self.new.append(ident)
        elif ident.ref.pod_uid and ident.pod is None and self.pods is not None:
            named = self._resolve_pod(ident)   # the kubelet listed the pod after we first saw the process
            if named is not ident:
                self.known[tgid] = ident = named
                self.new.append(named)
        return ident

    def enrich(self, tgids: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
        """The per-event identity columns (schemas/tables.py ENRICH_COLUMNS after host), one lookup
        per distinct tgid in the batch."""
        names = ("service", "namespace", "pod")
        if tgids is None or tgids.size == 0:
            return {k: _constant(n, "") for k in names}
        if tgids[0] == tgids.min() == tgids.max():  # one process: the common busy-batch case
            ident = self.get(int(tgids[0])) if tgids[0] else None
            vals = (ident.service, ident.namespace, ident.pod_name) if ident else ("", "", "")
            return {k: _constant(tgids.size, v) for k, v in zip(names, vals, strict=True)}
        uniq, inverse = np.unique(tgids, return_inverse=True)
        idents = [self.get(int(t)) if t else None for t in uniq.tolist()]
        out = {}
        for k, attr in zip(names, ("service", "namespace", "pod_name"), strict=True):
            vals = [getattr(i, attr) if i else "" for i in idents]
            if len(set(vals)) == 1:   # outside Kubernetes namespace and pod are '' throughout: no gather
                out[k] = _constant(tgids.size, vals[0])
            else:
                out[k] = np.array(vals, dtype=object)[inverse]
        return out

    def services(self, tgids: np.ndarray) -> np.ndarray:
        """Vectorised: one lookup per distinct tgid in the batch."""
        return self.enrich(tgids, len(tgids))["service"]

    def take_new(self) -> list[Identity]:
        out, self.new = self.new, []
        return out


def _constant(n: int, value: str) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def processes_columns(new: list[Identity], host: str, now_ns: int) -> dict[str, np.ndarray]:
    """Rows of the processes table (schemas/store_tables.py PROCESSES_COLUMNS, in its order)."""
    def col(values: list) -> np.ndarray:
        return np.array(values, dtype=object)

    return {
        "ts": np.full(len(new), now_ns, dtype=np.uint64),
        "host": np.full(len(new), host, dtype=object),
        "tgid": np.array([i.tgid for i in new], dtype=np.uint32),
        "comm": col([i.comm for i in new]),
        "exe": col([i.exe for i in new]),
        "cmdline": col([i.cmdline for i in new]),
        "cgroup": col([i.cgroup for i in new]),
        "container_id": col([i.container_id for i in new]),
        "service": col([i.service for i in new]),
        "runtime": col([i.runtime for i in new]),
        "pod_uid": col([i.ref.pod_uid for i in new]),
        "qos": col([i.ref.qos for i in new]),
        "namespace": col([i.namespace for i in new]),
        "pod": col([i.pod_name for i in new]),
        "container": col([i.container for i in new]),
        "workload": col([i.pod.workload if i.pod else "" for i in new]),
        "workload_kind": col([i.pod.workload_kind if i.pod else "" for i in new]),
        "labels": col([json.dumps(dict(i.pod.labels), sort_keys=True) if i.pod and i.pod.labels else ""
                       for i in new]),
    }
