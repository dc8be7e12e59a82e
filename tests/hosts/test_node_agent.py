"""One agent per node (--netns): only that namespace's processes, every row named by the configured host,
a heartbeat row per interval; against the real kernel and a real embedded store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import is_root
from tests.hosts.netns import Hosts

pytestmark = pytest.mark.kernel

# sleeps 2 ms at a time: an off-CPU row per sleep for a watched process (threshold 20 µs below)
NAPPER = "import sys,time\ne=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<e: time.sleep(0.002)"


@pytest.fixture()
def hosts() -> Iterator[Hosts]:
    if not is_root():
        pytest.skip("network namespaces and probes need root (CI runs as root)")
    h = Hosts()
    try:
        yield h
    finally:
        h.close()


def test_netns_agent_records_only_its_namespace(hosts: Hosts, probes_built: None, tmp_path: Path) -> None:
    from kprobe.agent.node_filter import NodeFilter
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    a, b = hosts.netns("a"), hosts.netns("b")
    before = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", NAPPER, "6"])  # running at start
    other = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", NAPPER, "6"])
    root = subprocess.Popen([sys.executable, "-c", NAPPER, "6"])
    time.sleep(0.5)
    node = NodeFilter.of(Path(hosts.path(a)), None)
    assert node is not None and node.matches(before.pid) and not node.matches(other.pid)
    probes = ProbeConfig(filter_on=True, node=node, min_offcpu_ns=20_000, sock_flush_ms=0)
    session = EmbeddedSession(tmp_path, RecorderConfig(probes=probes, flush_ms=50, host="node-a",
                                                       heartbeat_ms=200)).start()
    try:
        time.sleep(0.3)
        # exec'd inside the namespace after the start, living less than the rescan interval apart from luck:
        # its exec row exists only if the probe's exec hook watched it at exec time
        later = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", NAPPER, "0.4"])
        for p in (before, other, root, later):
            p.wait(timeout=20)
        assert session.recorder.wait_drained(10)
        store = session.store
        tg = {int(r["tgid"]) for r in store.query_rows("SELECT DISTINCT tgid FROM offcpu")}
        assert before.pid in tg and later.pid in tg, (before.pid, later.pid, tg)
        assert other.pid not in tg and root.pid not in tg, "another namespace's process was recorded"
        execs = store.query_rows(f"SELECT count() AS n FROM proc WHERE tgid = {later.pid} AND kind = 'exec'")
        assert int(execs[0]["n"]) >= 1, "the exec hook did not watch a process exec'd in the namespace"
        hosts_seen = {r["host"] for r in store.query_rows("SELECT DISTINCT host FROM offcpu")}
        assert hosts_seen == {"node-a"}
        beats = store.query_rows("SELECT host, boot_id, filter, last_event_ts, ts FROM hosts ORDER BY ts")
        assert len(beats) >= 3, beats
        assert beats[-1]["host"] == "node-a" and a in beats[-1]["filter"]
        assert beats[-1]["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        from kprobe.schemas.tables import EVENT_TYPES

        newest = max(int(store.query_rows(f"SELECT max(ts) AS m FROM {et.name}")[0]["m"]) for et in EVENT_TYPES)
        assert 0 < int(beats[-1]["last_event_ts"]) <= newest
        assert session.recorder.stats.node_filter.get("rescans", 0) >= 1
    finally:
        session.stop()
        for p in (before, other, root):
            if p.poll() is None:
                p.kill()


def test_bad_node_filter_paths_are_refused_clearly(tmp_path: Path) -> None:
    from kprobe.agent.node_filter import NodeFilter, NodeFilterError

    with pytest.raises(NodeFilterError, match="--netns"):
        NodeFilter.of(tmp_path / "absent", None)
    (tmp_path / "plain").write_text("")
    with pytest.raises(NodeFilterError, match="not a network namespace"):
        NodeFilter.of(tmp_path / "plain", None)
    with pytest.raises(NodeFilterError, match="--cgroup"):
        NodeFilter.of(None, tmp_path / "nocg")
    assert NodeFilter.of(None, None) is None


def test_host_key_is_the_configured_name_or_the_hostname() -> None:
    from kprobe.agent.host_identity import HostIdentity, check_host_name

    h = HostIdentity.read()
    assert h.key("ledger-1") == "ledger-1" and h.key() == h.hostname
    k = h.boot_key()
    assert k.startswith(h.hostname + "-") and len(k) == len(h.hostname) + 9 and k == HostIdentity.read().boot_key()
    assert HostIdentity(h.hostname, h.host_id, "00000000-0000-0000-0000-000000000000").boot_key() != k
    for bad in ("", "a b", "x'; DROP", "-lead"):
        with pytest.raises(ValueError):
            check_host_name(bad)


def test_stats_name_the_host_key_beside_the_machine() -> None:
    from kprobe.query.stats import render_host

    lines = render_host({"key": "node-a", "hostname": "vm1", "host_id": "abc", "boot_id": "b-1",
                         "clock": {"describe": "wall clock synchronised"}})
    assert lines[0] == "host node-a (vm1, machine id abc, boot b-1)" and lines[1] == "  wall clock synchronised"


def test_cgroup_agent_records_only_its_cgroup(probes_built: None, tmp_path: Path) -> None:
    """--cgroup on the cgroup v2 hierarchy: a process exec'd inside a child of the cgroup is watched by the exec
    hook (ancestor id), one already inside at start by the /proc scan, one outside never."""
    if not is_root():
        pytest.skip("cgroups and probes need root (CI runs as root)")
    from kprobe.agent.node_filter import CGROUP2_MOUNTS, NodeFilter
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession

    root2 = next((m for m in CGROUP2_MOUNTS if (m / "cgroup.controllers").exists()), None)
    if root2 is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    node = root2 / f"kph-{os.getpid()}"
    child = node / "pod"
    child.mkdir(parents=True)
    into = "echo $$ > {}/cgroup.procs && exec {} -c '{}' {}"
    procs: list[subprocess.Popen] = []
    try:
        before = subprocess.Popen(["sh", "-c", into.format(node, sys.executable, NAPPER, 5)])
        outside = subprocess.Popen([sys.executable, "-c", NAPPER, "5"])
        procs += [before, outside]
        time.sleep(0.5)
        nf = NodeFilter.of(None, node)
        assert nf is not None and nf.cgroup_id == os.stat(node).st_ino and nf.cgroup_level == len(node.relative_to(root2).parts)
        assert nf.matches(before.pid) and not nf.matches(outside.pid)
        session = EmbeddedSession(tmp_path, RecorderConfig(
            probes=ProbeConfig(filter_on=True, node=nf, min_offcpu_ns=20_000), flush_ms=50, host="pod-node",
            heartbeat_ms=0)).start()
        try:
            time.sleep(0.3)
            later = subprocess.Popen(["sh", "-c", into.format(child, sys.executable, NAPPER, 0.4)])
            procs.append(later)
            for p in procs:
                p.wait(timeout=20)
            assert session.recorder.wait_drained(10)
            store = session.store
            tg = {int(r["tgid"]) for r in store.query_rows("SELECT DISTINCT tgid FROM offcpu")}
            assert before.pid in tg and later.pid in tg and outside.pid not in tg, (before.pid, later.pid, tg)
            execs = store.query_rows(f"SELECT count() AS n FROM proc WHERE tgid = {later.pid} AND kind = 'exec'")
            assert int(execs[0]["n"]) >= 1, "the exec hook did not watch a process exec'd in a child cgroup"
            assert not store.query_rows("SELECT 1 FROM hosts LIMIT 1"), "heartbeat_ms=0 writes none"
        finally:
            session.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for d in (child, node):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
