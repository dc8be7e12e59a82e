"""Embedded mode, two hosts: two `kprobe record` processes (each its own chDB store, one per network namespace)
answer one cross-host `why` together, each through its own recorder's query socket; the client host's agent
converts with no skew, the server's with +3 ms, and a CPU hog on the server's CPU makes a request slow.

Ground truth: the client's own send/answer times, the hog's pid, the skew applied."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOG, is_root
from tests.hosts.netns import Hosts
from tests.hosts.test_three_hosts import CHAIN, FRONT, LEDGER_RR, _in, _slowest, _wait_line

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
SKEW_NS = 3_000_000


class EmbeddedAgent:
    def __init__(self, name: str, netns: str, data: Path, skew_ns: int = 0):
        self.data, self.log = data, data.parent / f"{name}.log"
        argv = [sys.executable, "-m", "kprobe", "record", "--data", str(data), "--netns", netns, "--host-name", name,
                "--sock-flush-ms", "0", "--flush-ms", "1000", "--heartbeat-ms", "300", "--no-otlp",
                "--clock-skew-ns", str(skew_ns)]
        self.proc = subprocess.Popen(argv, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)

    def wait_recording(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "kprobe: recording" in self.log.read_text(errors="replace"):
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture()
def world(probes_built: None, tmp_path: Path) -> Iterator[dict]:
    if not is_root():
        pytest.skip("network namespaces and probes need root (CI runs as root)")
    hosts = Hosts()
    ctx: dict = {"hosts": hosts, "procs": [], "agents": [], "tmp": tmp_path}
    try:
        yield ctx
    finally:
        for p in ctx["procs"]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for a in ctx["agents"]:
            a.stop()
        hosts.close()


def test_two_embedded_agents_answer_one_why(world: dict) -> None:
    from kprobe.causal.hosts import SeparateSource, why_across
    from kprobe.query.client import RemoteStore

    hosts: Hosts = world["hosts"]
    procs, agents, tmp = world["procs"], world["agents"], world["tmp"]
    ns = {n: hosts.netns(n) for n in ("client", "server")}
    r = 230 + __import__("os").getpid() % 20
    c_addr, s_addr = f"10.{r}.5.1", f"10.{r}.5.2"
    hosts.link(ns["client"], c_addr, ns["server"], s_addr, 5)
    for name in ("client", "server"):
        agents.append(EmbeddedAgent(name, hosts.path(ns[name]), tmp / name, SKEW_NS if name == "server" else 0))
    for a in agents:
        a.wait_recording()
    server = _in(ns["server"], "taskset", "-c", "1", *LEDGER_RR, sys.executable, str(CHAIN), "ledger", s_addr, "7100", "1",
                 stdout=subprocess.PIPE, text=True)
    procs.append(server)
    _wait_line(server, "listening")
    client = _in(ns["client"], *FRONT, sys.executable, str(CHAIN), "client", s_addr, "7100", "60", "15",
                 stdout=subprocess.PIPE, text=True)
    procs.append(client)
    time.sleep(0.5)
    h0 = time.time_ns()
    hog = _in(ns["server"], "taskset", "-c", "1", *LEDGER_RR, sys.executable, "-c", HOG.format(s=0.35))
    procs.append(hog)
    hog.wait(10)
    slow = _slowest(client, h0, time.time_ns())
    assert slow["answered"] - slow["sent"] > 30_000_000, slow
    time.sleep(1.0)                       # both agents' heartbeats pass the window's end

    src = SeparateSource({a.data.name: RemoteStore(a.data / "kprobe.sock") for a in agents})
    cross = why_across(src, "client", client.pid, slow["sent"], slow["answered"])
    print(cross.render_text())
    assert [h.host for h in cross.hops] == ["client", "server"], cross.render_text()
    assert cross.hops[1].pid == server.pid
    root = cross.root_cause
    assert root is not None and root.kind == "cpu_preemption" and root.culprit.pid == hog.pid, cross.render_text()
    (sk,) = cross.skews
    assert abs(sk.offset_ns - SKEW_NS) <= sk.bound_ns < 2_000_000, sk

    # the same answer from the command line, and the hosts' heartbeats covering the window
    base = [sys.executable, "-m", "kprobe", "hosts"]
    dirs = [x for a in agents for x in ("--data", str(a.data))]
    win = ["--from", str(slow["sent"]), "--to", str(slow["answered"])]
    got = subprocess.run([*base, "why", *dirs, *win, "--host", "client", "--pid", str(client.pid), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert got.returncode == 0, got.stderr
    ans = json.loads(got.stdout)
    assert [h["host"] for h in ans["hops"]] == ["client", "server"] and ans["root_host"] == "server"
    assert ans["root_cause"]["kind"] == "cpu_preemption" and ans["root_cause"]["culprit"]["pid"] == hog.pid
    got = subprocess.run([*base, "list", *dirs, *win, "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert got.returncode == 0, got.stderr
    listed = {d["host"]: d for d in json.loads(got.stdout)}
    assert set(listed) == {"client", "server"} and all(d["covers_window"] for d in listed.values()), listed
    assert int(listed["server"]["skew"]) == SKEW_NS and listed["server"]["filter"].startswith("netns")
