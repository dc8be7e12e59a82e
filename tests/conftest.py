"""Shared fixtures: a real recorder on the real kernel, writing to a temporary chDB store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack_fixtures import stack  # noqa: F401  (the servers' session fixture, for every folder)

WORKLOADS = Path(__file__).parent / "workloads"
REPO = Path(__file__).resolve().parent.parent
HOG = "import time\ne=time.monotonic()+{s}\nwhile time.monotonic()<e: pass"   # python -c: spin {s} seconds
RR = ("chrt", "-r", "10")          # SCHED_RR prefix: a hog and its victim share a CPU in fixed slices


def pytest_configure(config: pytest.Config) -> None:
    """`kprobe run`/`record` under test take any free OTLP ports: 4317/4318 may belong to the host's own
    collector or to a recorder someone runs beside the suite. The tests about those defaults clear this."""
    os.environ.setdefault("KPROBE_OTLP_GRPC_PORT", "0")
    os.environ.setdefault("KPROBE_OTLP_HTTP_PORT", "0")


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def probes_built() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "probes")], check=True)


class Capture:
    """A running embedded session that watches only the pids a test hands it."""

    def __init__(self, data: Path, flush_ms: int = 50, drain_s: float = 10.0, **probe_overrides: object):
        from kprobe.agent.probeset import ProbeConfig
        from kprobe.agent.recorder import RecorderConfig
        from kprobe.embedded import EmbeddedSession

        probes = ProbeConfig(filter_on=True, min_offcpu_ns=20_000, fault_sample_every=64)
        for k, v in probe_overrides.items():
            setattr(probes, k, v)
        self.data = data
        self.drain_s = drain_s
        self.session = EmbeddedSession(data, RecorderConfig(probes=probes, flush_ms=flush_ms)).start()

    def spawn(self, *argv: str, **kw: object) -> subprocess.Popen:
        """Start a workload that waits on stdin until it is watched, so nothing it does is missed."""
        p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, **kw)  # type: ignore[call-overload]
        self.session.recorder.watch_pid(p.pid)
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
        return p

    def workload(self, name: str, *args: str, **kw: object) -> subprocess.Popen:
        return self.spawn(sys.executable, str(WORKLOADS / name), *args, **kw)

    def settle(self) -> None:
        assert self.session.recorder.wait_drained(self.drain_s), f"recorder did not drain in {self.drain_s} s"

    def rows(self, sql: str) -> list[dict]:
        self.settle()
        return self.session.store.query_rows(sql)

    def stop(self) -> None:
        self.session.stop()


@pytest.fixture
def capture(tmp_path: Path, probes_built: None) -> Iterator[Capture]:
    if not is_root():
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    c = Capture(tmp_path / "data")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def otel_session(tmp_path: Path, probes_built: None):
    """The embedded recorder with its OTLP gRPC receiver, as `kprobe record` runs it (spans + kernel events)."""
    from kprobe.agent.probeset import ProbeConfig
    from kprobe.agent.recorder import RecorderConfig
    from kprobe.embedded import EmbeddedSession
    from kprobe.otel.config import OtlpConfig

    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    s = EmbeddedSession(tmp_path / "data", RecorderConfig(probes=ProbeConfig(filter_on=True, min_offcpu_ns=20_000),
                                                          flush_ms=300), OtlpConfig(grpc_port=0, http_port=None)).start()
    try:
        yield s
    finally:
        s.stop()


def graph_counts(data: Path) -> tuple[int, int]:
    """(nodes, edges) in the embedded causal graph under a data directory."""
    from kprobe.sinks.graph_ladybug import LadybugGraph

    g = LadybugGraph.in_data_dir(data)
    try:
        return (g.query("MATCH (n) RETURN count(n) AS c")[0]["c"],
                g.query("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"])
    finally:
        g.close()


def otel_span_beside_hog(session, hog_s: float = 20.0) -> tuple[dict, int, int]:
    """A 400 ms OTel span (tests/workloads/otel_cpu_victim.py, real SDK) whose thread shares the last CPU
    with a SCHED_RR hog, recorded by ``session``: (the victim's truth line, the hog's pid, how long the
    span waited for the CPU by its own clock). The hog outlives the victim and is killed right after."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: the recorder must not share the hog's CPU")
    cpu = str(cpus[-1])
    hog = subprocess.Popen([*RR, "taskset", "-c", cpu, sys.executable, "-c", HOG.format(s=hog_s)])
    try:
        # only the span's thread joins the hog's CPU (the SDK's gRPC threads stay off it)
        victim = subprocess.Popen([*RR, sys.executable, str(WORKLOADS / "otel_cpu_victim.py"),
                                   session.receiver.grpc_endpoint, "400", cpu],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        session.recorder.watch_pid(victim.pid)
        out, _ = victim.communicate("go\n", timeout=30)
        assert victim.returncode == 0
    finally:
        hog.kill()
        hog.wait(5)
    truth = json.loads(out)
    waited = (truth["end_ns"] - truth["start_ns"]) - truth["cpu_ns"]
    assert waited > 150_000_000, "hog did not share the CPU; the test proves nothing"
    return truth, hog.pid, waited
