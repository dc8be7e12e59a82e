"""Which container and Kubernetes pod a process belongs to: its cgroup path, then the kubelet.

The cgroup path alone gives the container id, the runtime and the pod's uid and QoS class; the
names (namespace, pod, container, labels, owning workload) come from the kubelet's pod list when
it is reachable, and are simply absent when it is not: never required.

Cgroup path conventions (cgroup v2 unified line ``0::PATH`` and every v1 hierarchy line
``N:controllers:PATH``; the first line that names a container wins):

| runtime | kubelet cgroup driver | leaf of the container's cgroup |
| --- | --- | --- |
| containerd | systemd | ``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`` |
| containerd | cgroupfs | ``kubepods/<qos>/pod<uid>/<id>`` |
| CRI-O | systemd | ``.../kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope`` (its monitor: ``crio-conmon-<id>.scope``) |
| CRI-O | cgroupfs | ``kubepods/<qos>/pod<uid>/crio-<id>`` |
| Docker (cri-dockerd) | systemd | ``.../kubepods-<qos>-pod<uid_>.slice/docker-<id>.scope`` |
| Docker (cri-dockerd) | cgroupfs | ``kubepods/<qos>/pod<uid>/<id>`` |

Guaranteed pods have no ``<qos>`` level; a systemd slice writes the uid's dashes as underscores;
static pods' uids are 32 hex digits without dashes. A bare 64-hex leaf is containerd's or
Docker's: the kubelet's ``containerID`` (``containerd://``, ``docker://``, ``cri-o://``) tells.
Outside Kubernetes ``docker-<id>.scope``, ``/docker/<id>`` and podman's ``libpod-<id>.scope`` give
a container without a pod. An agent in its own cgroup namespace sees other pods' paths relative
to its own (``/../../kubepods-...``): the patterns match anywhere in the path.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_POD_RE = re.compile(rf"(?:^|[/-])pod({_UID})(?:\.slice)?(?=/|$)")
_QOS_RE = re.compile(r"kubepods[-/](burstable|besteffort)(?:[./-]|$)")
# prefix of the container's cgroup leaf -> runtime
_LEAF_RE = re.compile(r"^(cri-containerd-|crio-conmon-|crio-|docker-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")
_PREFIX_RUNTIME = {"cri-containerd-": "containerd", "containerd-": "containerd", "crio-": "cri-o",
                   "crio-conmon-": "cri-o", "docker-": "docker", "libpod-": "podman"}
_RUNTIME_SCHEMES = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker", "podman": "podman"}


@dataclass(frozen=True)
class CgroupRef:
    """What a cgroup path says about a process: empty strings for what it does not say."""

    path: str = ""           # the path the facts came from
    container_id: str = ""   # 64 hex digits
    runtime: str = ""        # containerd | cri-o | docker | podman | "" (a bare id: containerd or docker)
    pod_uid: str = ""        # with dashes, as the API server writes it
    qos: str = ""            # guaranteed | burstable | besteffort, for pods


def parse_path(path: str) -> CgroupRef:
    """One cgroup path (no hierarchy prefix)."""
    container, runtime = "", ""
    parts = [p for p in path.split("/") if p]
    for part in reversed(parts):
        m = _LEAF_RE.match(part)
        if m:
            container, runtime = m.group(2), _PREFIX_RUNTIME.get(m.group(1) or "", "")
            break
    pod = _POD_RE.search(path)
    uid = pod.group(1).replace("_", "-") if pod else ""   # a static pod's 32-digit uid has none to restore
    if not container and not uid:
        return CgroupRef()
    if not runtime and container and not uid and ("/docker/" in f"/{path}/" or path.startswith("docker/")):
        runtime = "docker"
    qos = ""
    if uid:
        q = _QOS_RE.search(path)
        qos = q.group(1) if q else "guaranteed"
    return CgroupRef(path, container, runtime, uid, qos)


def parse_proc_cgroup(text: str) -> CgroupRef:
    """``/proc/<pid>/cgroup``: the unified (v2) line first, then each v1 hierarchy, first match wins."""
    lines = [ln.split(":", 2) for ln in text.splitlines() if ln.count(":") >= 2]
    lines.sort(key=lambda parts: parts[0] != "0")     # "0::/..." is the v2 line
    best = CgroupRef()
    for parts in lines:
        ref = parse_path(parts[2])
        if ref.container_id:
            return ref
        if ref.pod_uid and not best.pod_uid:
            best = ref      # a pod-level cgroup (the pause process on some set-ups): keep looking for a container
    return best


# -- the kubelet's pod list -----------------------------------------------------------------------

@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    workload: str = ""           # the owning workload's name (Deployment, not its ReplicaSet)
    workload_kind: str = ""      # Deployment | StatefulSet | DaemonSet | Job | CronJob | ReplicaSet | Node | Pod
    containers: tuple[tuple[str, str, str], ...] = ()   # (container id, name, runtime)

    def container(self, container_id: str) -> tuple[str, str]:
        """(name, runtime) of one of its containers, ('', '') if not listed."""
        for cid, name, runtime in self.containers:
            if cid == container_id:
                return name, runtime
        return "", ""


def _workload(meta: dict, spec: dict) -> tuple[str, str]:
    """The pod's top owner, from its controller reference and the naming rules of the controllers
    (a Deployment's ReplicaSet is ``<deployment>-<pod-template-hash>``, a CronJob's Job
    ``<cronjob>-<scheduled minutes>``, a static pod is ``<name>-<node>``)."""
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")] or meta.get("ownerReferences") or []
    if not owners:
        return meta.get("name", ""), "Pod"
    kind, name = owners[0].get("kind", ""), owners[0].get("name", "")
    if kind == "ReplicaSet":
        h = (meta.get("labels") or {}).get("pod-template-hash", "")
        if h and name.endswith("-" + h):
            return name[: -len(h) - 1], "Deployment"
    if kind == "Job":
        base, _, suffix = name.rpartition("-")
        if base and suffix.isdigit() and len(suffix) >= 8:
            return base, "CronJob"
    if kind == "Node":
        node, pod = spec.get("nodeName", ""), meta.get("name", "")
        if node and pod.endswith("-" + node):
            return pod[: -len(node) - 1], "Node"
    return name, kind


def parse_pod_list(doc: dict) -> dict[str, PodInfo]:
    """A v1 PodList (the kubelet's ``/pods``) -> pods by uid. Items without a uid are skipped."""
    out: dict[str, PodInfo] = {}
    for item in doc.get("items") or []:
        meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        uid = meta.get("uid", "")
        if not uid:
            continue
        containers = []
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                scheme, _, cid = (cs.get("containerID") or "").partition("://")
                if cid:
                    containers.append((cid, cs.get("name", ""), _RUNTIME_SCHEMES.get(scheme, scheme)))
        workload, kind = _workload(meta, spec)
        out[uid] = PodInfo(uid, meta.get("namespace", ""), meta.get("name", ""),
                           tuple(sorted((meta.get("labels") or {}).items())), workload, kind, tuple(containers))
    return out


SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeletConfig:
    """Where the node's kubelet serves its pod list, and how to authenticate.

    ``https://NODE_IP:10250`` needs a bearer token whose identity may get ``nodes/proxy`` (or, with
    the kubelet's fine-grained authorization, ``nodes/pods``); ``http://NODE_IP:10255`` is the
    read-only port, off on most clusters.
    """

    url: str
    token_file: Path | None = SA_DIR / "token"
    ca_file: Path | None = SA_DIR / "ca.crt"
    insecure_tls: bool = False       # kubelet serving certificates are often self-signed
    timeout_s: float = 2.0
    refresh_s: float = 30.0          # re-read at least this often (pods come and go)
    unknown_refresh_s: float = 2.0   # a pod uid not in the list: re-read at most this often
    max_backoff_s: float = 300.0     # failures back off exponentially up to this


@dataclass
class PodDirectory:
    """The kubelet's pod list, re-read when it is stale or a process of an unknown pod shows up.

    Called from the agent's writer thread (one dict lookup per new process); a fetch blocks it for
    at most ``timeout_s``, and failures back off so an unreachable kubelet costs nothing.
    Counters go to ``counters`` (the recorder's stats: `kprobe stats`).
    """

    config: KubeletConfig
    counters: dict = field(default_factory=dict)
    by_uid: dict[str, PodInfo] = field(default_factory=dict)
    _last_ok: float = float("-inf")
    _next_try: float = 0.0
    _failures: int = 0

    def lookup(self, uid: str) -> PodInfo | None:
        now = time.monotonic()
        stale = now - self._last_ok >= self.config.refresh_s
        if (stale or uid not in self.by_uid) and now >= self._next_try:
            self.refresh(now)
        info = self.by_uid.get(uid)
        if info is None:
            self.counters["pod_uids_unknown_to_kubelet"] = self.counters.get("pod_uids_unknown_to_kubelet", 0) + 1
        return info

    def refresh(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.counters["kubelet_fetches"] = self.counters.get("kubelet_fetches", 0) + 1
        try:
            self.by_uid = parse_pod_list(self._fetch())
        except (OSError, ValueError) as e:   # urllib's URLError and HTTPError are OSErrors
            self._failures += 1
            self._next_try = now + min(self.config.max_backoff_s, self.config.unknown_refresh_s * 2 ** self._failures)
            self.counters["kubelet_errors"] = self.counters.get("kubelet_errors", 0) + 1
            self.counters["kubelet_last_error"] = f"{self.config.url}/pods: {e}"
            return False
        self._failures = 0
        self._last_ok = now
        self._next_try = now + self.config.unknown_refresh_s
        self.counters["kubelet_pods"] = len(self.by_uid)
        return True

    def _fetch(self) -> dict:
        # here, not at the top: ssl and urllib are a quarter of every `kprobe` command's start-up
        # (the CLI imports this module for the kubelet options' defaults), and only a fetch needs them
        import ssl
        import urllib.request

        c = self.config
        req = urllib.request.Request(c.url.rstrip("/") + "/pods", headers={"Accept": "application/json"})
        if c.token_file is not None and c.token_file.exists():
            req.add_header("Authorization", "Bearer " + c.token_file.read_text().strip())  # re-read: tokens rotate
        ctx = None
        if c.url.startswith("https:"):
            if c.insecure_tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                cafile = str(c.ca_file) if c.ca_file is not None and c.ca_file.exists() else None
                ctx = ssl.create_default_context(cafile=cafile)
        with urllib.request.urlopen(req, timeout=c.timeout_s, context=ctx) as resp:
            return json.loads(resp.read())


def pod_directory(config: KubeletConfig | None, counters: dict) -> PodDirectory | None:
    return PodDirectory(config, counters) if config is not None else None
