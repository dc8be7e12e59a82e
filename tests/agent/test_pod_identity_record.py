"""End to end: `kprobe record` names the pod of a process in a container's cgroup.

A real process in the cgroup containerd creates for a pod's container (systemd driver, cgroup
v2), a kubelet pod list over real HTTP, the real recorder and probes; the pod's namespace and
name must be on every event row of the process (`kprobe events`), its workload the service, the
pod's labels and owner in the processes table, and the counts in `kprobe stats`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.agent.pod_cgroups import CID, UID, _layout, _pod, in_cgroup

pytestmark = pytest.mark.kernel
KPROBE = [sys.executable, "-m", "kprobe"]


def kp(*args: str) -> str:
    r = subprocess.run([*KPROBE, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_recorded_events_carry_the_pod(cgroup_roots, kubelet, probes_built, tmp_path):
    kubelet.pods = [_pod(UID, "payments", "settlement-7d4b9c8f5d-x2k9q",
                         {"app": "settlement", "pod-template-hash": "7d4b9c8f5d"},
                         ("ReplicaSet", "settlement-7d4b9c8f5d"), [(CID["a"], "svc", "containerd")])]
    tok = tmp_path / "token"
    tok.write_text("sa-token")
    data = tmp_path / "d"
    # alive until the recorder has stopped: the agent names a process from /proc when it writes its rows
    script = "read go; i=0; while [ $i -lt 20 ]; do sleep 0.02; i=$((i+1)); done; echo done; read end"
    rel = _layout("containerd", "systemd", "burstable", CID["a"])
    with in_cgroup(cgroup_roots["v2"], rel, None, ("sh", "-c", script), stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True) as work:
        rec = subprocess.Popen([*KPROBE, "record", "--data", str(data), "--no-otlp", "--flush-ms", "500",
                                "--watch-pid", str(work.pid), "--kubelet-url", kubelet.url,
                                "--kubelet-token-file", str(tok)], stderr=subprocess.PIPE, text=True)
        try:
            line = rec.stderr.readline()
            while not line.startswith("kprobe: recording "):
                assert line, "recorder exited before recording"
                line = rec.stderr.readline()
            work.stdin.write("go\n")
            work.stdin.flush()
            assert work.stdout.readline() == "done\n"
        finally:
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
        work.communicate("end\n", timeout=60)
        assert work.returncode == 0
    assert rec.returncode == 0
    events = json.loads(kp("events", "--data", str(data), "--pid", str(work.pid), "--json"))
    assert len(events) >= 3, events
    assert {(e["namespace"], e["pod"], e["service"]) for e in events} == {
        ("payments", "settlement-7d4b9c8f5d-x2k9q", "settlement")}, events[:3]
    text = kp("events", "--data", str(data), "--pid", str(work.pid))
    assert "[pod payments/settlement-7d4b9c8f5d-x2k9q]" in text, text
    rows = [json.loads(line) for line in kp(
        "sql", "--data", str(data), "--format", "JSONEachRow",
        f"SELECT pod_uid, namespace, pod, container, workload, workload_kind, labels, runtime, qos "
        f"FROM processes WHERE tgid = {work.pid} ORDER BY ts DESC LIMIT 1").splitlines() if line.strip()]
    assert rows and rows[0] | {"labels": json.loads(rows[0]["labels"])} == {
        "pod_uid": UID, "namespace": "payments", "pod": "settlement-7d4b9c8f5d-x2k9q", "container": "svc",
        "workload": "settlement", "workload_kind": "Deployment", "runtime": "containerd", "qos": "burstable",
        "labels": {"app": "settlement", "pod-template-hash": "7d4b9c8f5d"}}
    stats = kp("stats", "--data", str(data))
    assert "named by the kubelet" in stats and "0 failed" in stats, stats
