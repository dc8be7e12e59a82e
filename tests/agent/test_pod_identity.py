"""Pod identity from real cgroups: the test builds the hierarchies containerd, CRI-O and Docker
create under the kubelet (systemd and cgroupfs drivers), on this machine's cgroup v2 tree and a
v1 hierarchy, moves a real process into each container's cgroup (cgroup.procs) and checks what
the agent reads back from /proc/<pid>/cgroup; then names the pods through a kubelet pod list
served over real HTTP in the JSON shape of the kubelet's /pods.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kprobe.agent.identity import IdentityCache, processes_columns, read_identity
from kprobe.agent.pod_identity import KubeletConfig, PodDirectory, parse_path, parse_pod_list
from tests.agent.pod_cgroups import (
    CID,
    LAYOUTS,
    U_,
    UID,
    Kubelet,
    _layout,
    _pod,
    in_cgroup,
)


@pytest.mark.parametrize("runtime,driver,qos", LAYOUTS)
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_container_and_pod_from_a_real_cgroup(cgroup_roots, runtime, driver, qos, version):
    if version not in cgroup_roots:
        pytest.skip("no cgroup v1 pids hierarchy mounted here")
    rel = _layout(runtime, driver, qos, CID["a"])
    with in_cgroup(cgroup_roots[version], rel) as p:
        text = Path(f"/proc/{p.pid}/cgroup").read_text()
        assert rel in text, text      # the kernel really has it there
        ident = read_identity(p.pid)
    assert ident is not None and ident.comm == "sleep"
    assert ident.ref.container_id == CID["a"] and ident.container_id == CID["a"][:12]
    assert ident.ref.pod_uid == UID and ident.ref.qos == qos
    # a bare id (containerd or Docker with cgroupfs) says no runtime: the kubelet's containerID will
    bare = driver == "cgroupfs" and runtime != "cri-o"
    assert ident.ref.runtime == ("" if bare else runtime)
    assert ident.cgroup.endswith(rel)
    assert ident.service == f"container:{CID['a'][:12]}" and ident.pod is None


def test_paths_outside_kubernetes_and_other_shapes():
    assert parse_path(f"/system.slice/docker-{CID['a']}.scope").runtime == "docker"
    assert parse_path(f"/docker/{CID['a']}") .runtime == "docker"
    assert parse_path(f"/machine.slice/libpod-{CID['a']}.scope").runtime == "podman"
    assert parse_path(f"/system.slice/docker-{CID['a']}.scope").pod_uid == ""
    # the agent in its own cgroup namespace sees another pod relative to its own cgroup
    rel = "/../../" + _layout("containerd", "systemd", "besteffort", CID["b"])
    ref = parse_path(rel)
    assert (ref.container_id, ref.pod_uid, ref.qos) == (CID["b"], UID, "besteffort")
    # CRI-O's per-container monitor
    ref = parse_path(f"/kubepods.slice/kubepods-pod{U_}.slice/crio-conmon-{CID['a']}.scope")
    assert (ref.container_id, ref.runtime, ref.qos) == (CID["a"], "cri-o", "guaranteed")
    # a static pod's uid: 32 hex digits
    static = "6a2e8e0f0b8c2f1f5c5f0e5b7f1e2d3c"
    assert parse_path(f"/kubepods/burstable/pod{static}/{CID['a']}").pod_uid == static
    assert parse_path("/user.slice/user-0.slice/session-1.scope") == parse_path("/")
    assert parse_path("/kubepods.slice/kubepods-burstable.slice").pod_uid == ""


def _config(kubelet: Kubelet, tmp_path: Path, **kw) -> KubeletConfig:
    tok = tmp_path / "token"
    tok.write_text("sa-token\n")
    return KubeletConfig(kubelet.url, tok, None, **kw)


def test_kubelet_names_pod_namespace_labels_and_workload(cgroup_roots, kubelet, tmp_path):
    kubelet.pods = [
        _pod(UID, "payments", "settlement-7d4b9c8f5d-x2k9q", {"app": "settlement", "pod-template-hash": "7d4b9c8f5d"},
             ("ReplicaSet", "settlement-7d4b9c8f5d"), [(CID["a"], "svc", "containerd")]),
        _pod("1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "payments", "ledger-0", {"app": "ledger"},
             ("StatefulSet", "ledger"), [(CID["b"], "db", "containerd")]),
    ]
    counters: dict = {}
    cache = IdentityCache(pods=PodDirectory(_config(kubelet, tmp_path), counters), counters=counters)
    rel = _layout("containerd", "cgroupfs", "burstable", CID["a"])   # a bare id: the kubelet says containerd
    env = {"PATH": os.environ["PATH"]}
    with in_cgroup(cgroup_roots["v2"], rel, env) as p, \
            in_cgroup(cgroup_roots["v2"], _layout("docker", "systemd", "besteffort", CID["b"],
                                                   "1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
                      {**env, "OTEL_SERVICE_NAME": "ledger-db"}) as q:
        a, b = cache.get(p.pid), cache.get(q.pid)
    assert (a.namespace, a.pod_name, a.container, a.runtime) == ("payments", "settlement-7d4b9c8f5d-x2k9q", "svc",
                                                                 "containerd")
    assert a.pod is not None and (a.pod.workload, a.pod.workload_kind) == ("settlement", "Deployment")
    assert a.service == "settlement"                      # the workload, not container:<id>
    assert b.service == "ledger-db"                       # OTEL_SERVICE_NAME still wins
    assert b.pod is not None and (b.pod.workload, b.pod.workload_kind) == ("ledger", "StatefulSet")
    assert kubelet.requests == 1                          # one fetch named both
    cols = processes_columns(cache.take_new(), "node-1", 1)
    assert list(cols["pod"]) == ["settlement-7d4b9c8f5d-x2k9q", "ledger-0"]
    assert list(cols["workload"]) == ["settlement", "ledger"] and list(cols["qos"]) == ["burstable", "besteffort"]
    assert json.loads(cols["labels"][0]) == {"app": "settlement", "pod-template-hash": "7d4b9c8f5d"}
    assert list(cols["runtime"]) == ["containerd", "docker"]
    assert counters["processes_in_pods"] == 2 and counters["processes_named_by_kubelet"] == 2


def test_workload_of_cronjob_static_and_bare_pods():
    pods = parse_pod_list({"items": [
        _pod("u1", "batch", "nightly-29410560-abcde", {}, ("Job", "nightly-29410560"), []),
        _pod("u2", "kube-system", "etcd-node-1", {"component": "etcd"}, ("Node", "node-1"), []),
        _pod("u3", "default", "debug", {}, None, []),
        _pod("u4", "default", "web-abc", {}, ("ReplicaSet", "web-abc"), []),   # no pod-template-hash: a bare ReplicaSet
        {"metadata": {"name": "no-uid"}},
    ]})
    got = {uid: (p.workload, p.workload_kind) for uid, p in pods.items()}
    assert got == {"u1": ("nightly", "CronJob"), "u2": ("etcd", "Node"), "u3": ("debug", "Pod"),
                   "u4": ("web-abc", "ReplicaSet")}


def test_a_pod_listed_later_is_named_then(cgroup_roots, kubelet, tmp_path):
    """The process shows up before the kubelet lists its pod: named by the cgroup first, by the
    kubelet once it lists the pod, and a second processes row records the names."""
    counters: dict = {}
    cache = IdentityCache(pods=PodDirectory(_config(kubelet, tmp_path, unknown_refresh_s=0.0), counters),
                          counters=counters)
    with in_cgroup(cgroup_roots["v2"], _layout("cri-o", "systemd", "burstable", CID["a"])) as p:
        first = cache.get(p.pid)
        assert first.pod is None and first.service == f"container:{CID['a'][:12]}"
        kubelet.pods = [_pod(UID, "risk", "risk-engine-5f7c9-abcde", {"pod-template-hash": "5f7c9"},
                             ("ReplicaSet", "risk-engine-5f7c9"), [(CID["a"], "engine", "cri-o")])]
        later = cache.get(p.pid)
    assert later.service == "risk-engine" and later.pod_name == "risk-engine-5f7c9-abcde"
    assert [i.pod_name for i in cache.take_new()] == ["", "risk-engine-5f7c9-abcde"]
    assert counters["pod_uids_unknown_to_kubelet"] == 1


def test_unreachable_or_refusing_kubelet_is_counted_and_backs_off(cgroup_roots, kubelet, tmp_path):
    counters: dict = {}
    bad = tmp_path / "bad-token"
    bad.write_text("wrong")
    d = PodDirectory(KubeletConfig(kubelet.url, bad, None, unknown_refresh_s=60.0), counters)
    cache = IdentityCache(pods=d, counters=counters)
    with in_cgroup(cgroup_roots["v2"], _layout("docker", "cgroupfs", "burstable", CID["a"])) as p:
        ident = cache.get(p.pid)
        assert ident.pod is None and ident.ref.pod_uid == UID     # the cgroup's facts stay
        cache.forget(np.array([p.pid]))
        cache.get(p.pid)
    assert counters["kubelet_errors"] == 1 and "401" in counters["kubelet_last_error"]
    assert kubelet.requests == 1                                  # backed off: no second request
    # nothing listens: refused, counted
    port_free = PodDirectory(KubeletConfig("http://127.0.0.1:9", None, None, timeout_s=1.0), {})
    assert port_free.lookup(UID) is None and port_free.counters["kubelet_errors"] == 1


def test_pod_identity_and_capabilities_reach_the_agents_metrics():
    """Scraped on Kubernetes, where nobody runs `kprobe stats`: kubelet failures and degraded features."""
    from kprobe.agent.kafka_session import identity_metrics
    from kprobe.api.prometheus import render

    text = render(identity_metrics({
        "pod_identity": {"kubelet_errors": 3, "processes_in_pods": 5, "processes_named_by_kubelet": 4},
        "capabilities": {"missing": {"other processes' /proc details": ["SYS_PTRACE"]}}}))
    assert "kprobe_agent_kubelet_errors_total 3" in text
    assert 'kprobe_agent_processes_in_pods_total{named="false"} 1' in text
    assert ('kprobe_agent_capability_missing{capability="CAP_SYS_PTRACE",'
            'feature="other processes\' /proc details"} 1') in text


def test_https_kubelet_with_a_self_signed_certificate(tmp_path):
    """The chart's default: https on the kubelet port with the token; a self-signed serving
    certificate is refused unless its CA is given or verification is switched off."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make the test kubelet's certificate")
    cert, key = tmp_path / "kubelet.crt", tmp_path / "kubelet.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=node-1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    k = Kubelet(tls=(cert, key))
    try:
        k.pods = [_pod(UID, "payments", "web-1", {}, None, [(CID["a"], "web", "containerd")])]
        tok = tmp_path / "token"
        tok.write_text("sa-token")
        verified = PodDirectory(KubeletConfig(k.url, tok, cert), {})
        assert verified.lookup(UID) is not None and verified.by_uid[UID].name == "web-1"
        insecure = PodDirectory(KubeletConfig(k.url, tok, None, insecure_tls=True), {})
        assert insecure.lookup(UID) is not None
        strict = PodDirectory(KubeletConfig(k.url, tok, None), {})
        assert strict.lookup(UID) is None
        assert "CERTIFICATE_VERIFY_FAILED" in strict.counters["kubelet_last_error"]
    finally:
        k.close()
