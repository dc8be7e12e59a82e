"""Real cgroups in the layouts of containerd, CRI-O and Docker under the kubelet, a real process
moved into them, and a kubelet pod list served over real HTTP: shared by the pod identity tests."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import is_root

CID = {"a": "4f1c" + "a" * 60, "b": "9e2d" + "b" * 60}
UID = "0b6f5c2e-3d4a-4e8f-9a1b-2c3d4e5f6a7b"
U_ = UID.replace("-", "_")


def _layout(runtime: str, driver: str, qos: str, cid: str, uid: str = UID) -> str:
    """The container's cgroup path as the kubelet and the runtime lay it out."""
    u_ = uid.replace("-", "_")
    if driver == "systemd":
        prefix = {"containerd": "cri-containerd-", "cri-o": "crio-", "docker": "docker-"}[runtime]
        if qos == "guaranteed":
            return f"kubepods.slice/kubepods-pod{u_}.slice/{prefix}{cid}.scope"
        return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u_}.slice/{prefix}{cid}.scope"
    leaf = f"crio-{cid}" if runtime == "cri-o" else cid
    return f"kubepods/pod{uid}/{leaf}" if qos == "guaranteed" else f"kubepods/{qos}/pod{uid}/{leaf}"


LAYOUTS = [(rt, drv, qos) for rt in ("containerd", "cri-o", "docker") for drv in ("systemd", "cgroupfs")
           for qos in ("burstable", "guaranteed")] + [("containerd", "systemd", "besteffort")]


def _mounts() -> tuple[Path | None, Path | None]:
    """(cgroup v2 mount, a v1 hierarchy mount) on this machine."""
    v2 = v1 = None
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, opts, *_ = line.split()
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(mnt)
        elif fstype == "cgroup" and v1 is None and "pids" in opts.split(","):
            v1 = Path(mnt)
    return v2, v1


@contextmanager
def in_cgroup(root: Path, rel: str, env: dict | None = None, argv: tuple[str, ...] = ("sleep", "120"),
              **popen) -> Iterator[subprocess.Popen]:
    """A real process moved into ROOT/REL (created for it), removed again afterwards."""
    made: list[Path] = []
    d = root
    for part in rel.split("/"):
        d = d / part
        if not d.exists():
            d.mkdir()
            made.append(d)
    proc = subprocess.Popen(list(argv), env=env, **popen)
    try:
        (d / "cgroup.procs").write_text(str(proc.pid))
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != Path(argv[0]).name:   # until it has exec'd
            assert time.monotonic() < deadline, "sleep did not start"
            time.sleep(0.005)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for m in reversed(made):
            for _ in range(50):   # the kernel frees an emptied cgroup asynchronously
                try:
                    m.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


@contextmanager
def cgroup_test_roots(tag: str) -> Iterator[dict[str, Path]]:
    """A fresh directory in the cgroup v2 tree and in a v1 hierarchy (when mounted), removed after."""
    if not is_root():
        pytest.skip("creating cgroups and moving processes into them needs root (CI runs as root)")
    v2, v1 = _mounts()
    roots = {}
    for name, mnt in (("v2", v2), ("v1", v1)):
        if mnt is not None:
            r = mnt / f"kprobe-test-{os.getpid()}-{tag}"
            r.mkdir()
            roots[name] = r
    assert "v2" in roots, "no cgroup2 mount on this machine"
    yield roots
    for r in roots.values():
        r.rmdir()


# -- the kubelet ------------------------------------------------------------------------------------

def _pod(uid: str, ns: str, name: str, labels: dict, owner: tuple[str, str] | None, containers: list,
         node: str = "node-1") -> dict:
    """One item of the kubelet's /pods (a v1 Pod, fields as the kubelet serves them)."""
    meta = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "4711",
            "creationTimestamp": "2026-12-07T10:00:00Z", "labels": labels,
            "annotations": {"kubernetes.io/config.seen": "2026-12-07T10:00:00.000000000Z"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "11111111-2222-3333-4444-555555555555", "controller": True,
                                    "blockOwnerDeletion": True}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": c[1], "image": "registry.example/app:1"} for c in containers]},
        "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": "10.0.0.5", "podIP": "10.244.1.7",
                   "containerStatuses": [{"name": c[1], "state": {"running": {"startedAt": "2026-12-07T10:00:01Z"}},
                                          "ready": True, "restartCount": 0, "image": "registry.example/app:1",
                                          "imageID": "registry.example/app@sha256:" + "c" * 64,
                                          "containerID": f"{c[2]}://{c[0]}", "started": True}
                                         for c in containers]},
    }


class Kubelet:
    """A real HTTP server answering GET /pods with a PodList, and 401 without the bearer token."""

    def __init__(self, token: str = "sa-token", tls: tuple[Path, Path] | None = None) -> None:
        self.pods: list[dict] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests += 1
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                   "items": outer.pods}).encode()
                self.send_response(200 if self.path == "/pods" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:   # (certificate, key): https like the kubelet's port 10250
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
