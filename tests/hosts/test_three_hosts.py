"""Three hosts (network namespaces joined by veths), one agent each limited to its namespace, publishing to the
stack's Kafka; the ingest dataflow fills ClickHouse; the cross-host `why` runs over a window copied from it.

client -> middle -> ledger; the middle's agent converts its times with an artificial +4 ms skew; a CPU hog
(SCHED_RR, the ledger's CPU) on the ledger host makes some requests slow. Ground truth: the client's own
send/answer times, the hog's pid, the skew we applied (every namespace shares one kernel clock, so the
true offset between two agents is exactly the difference of their artificial skews). Then the ledger's
agent is SIGKILLed while another hog makes a request slow: the answer must name the ledger host's missing
data instead of a cause.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOG, is_root
from tests.hosts.netns import Hosts, Ingest

pytestmark = [pytest.mark.servers, pytest.mark.kernel]

REPO = Path(__file__).resolve().parents[2]
CHAIN = Path(__file__).resolve().parents[1] / "workloads" / "hosts_chain.py"
SKEW_NS = 4_000_000            # the middle agent's artificial clock skew
LEDGER_CPU = "1"
# client and middle run SCHED_RR on the other CPU: the VM's other tenants (builds, tests) cannot preempt them,
# so the slow payment's cause is the hog on the ledger host and nothing of this VM's neighbours
FRONT = ("taskset", "-c", "0", "chrt", "-r", "40")
# the ledger and its hog share CPU 1 in SCHED_RR slices, at a priority above what the VM's other tests use
# (their own SCHED_RR hogs at 10 were named, rightly, as the ledger's preemptor when they shared CPU 1)
LEDGER_RR = ("chrt", "-r", "40")


class Agent:
    """`kprobe record --kafka ... --netns ... --host-name ...` as a child process."""

    def __init__(self, name: str, netns: str, data: Path, stack: dict[str, str], prefix: str, skew_ns: int = 0):
        self.name, self.log = name, data / "agent.log"
        data.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "kprobe", "record", "--data", str(data), "--kafka", stack["KAFKA_BOOTSTRAP"],
                "--kafka-prefix", prefix, "--netns", netns, "--host-name", name, "--sock-flush-ms", "0",
                "--flush-ms", "300", "--heartbeat-ms", "500", "--no-otlp", "--clock-skew-ns", str(skew_ns)]
        self.proc = subprocess.Popen(argv, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)

    def wait_recording(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "kprobe: recording" in self.log.read_text(errors="replace"):
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"agent {self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _in(ns: str, *argv: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)  # type: ignore[call-overload]


def _wait_line(p: subprocess.Popen, want: str, timeout: float = 20) -> None:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if want in line:
            return
    raise AssertionError(f"no {want!r} from {p.args}")


@pytest.fixture()
def world(kafka_clickhouse: dict[str, str], probes_built: None, tmp_path: Path) -> Iterator[dict]:
    if not is_root():
        pytest.skip("network namespaces and probes need root (CI runs as root)")
    from clickhouse_driver import Client

    from kprobe.topics.admin import delete_topics, ensure_topics
    from kprobe.topics.names import all_topics

    stack = kafka_clickhouse
    prefix = f"h{uuid.uuid4().hex[:8]}"
    database = f"kp_{prefix}"
    ensure_topics(stack["KAFKA_BOOTSTRAP"], prefix=prefix)
    hosts = Hosts()
    procs: list[subprocess.Popen] = []
    agents: list[Agent] = []
    ch = Client(stack["CLICKHOUSE_HOST"], port=int(stack["CLICKHOUSE_PORT"]))
    ctx = {"stack": stack, "prefix": prefix, "db": database, "hosts": hosts, "procs": procs, "agents": agents,
           "ch": ch, "tmp": tmp_path}
    try:
        yield ctx
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for a in agents:
            a.stop(signal.SIGKILL)
        hosts.close()
        if os.environ.get("KPROBE_TEST_KEEP_DATA") != "1":
            ch.execute(f"DROP DATABASE IF EXISTS {database}")
            delete_topics(stack["KAFKA_BOOTSTRAP"], [t.name for t in all_topics(prefix=prefix)])


def _client_run(ns: str, addr: str, n: int, gap_ms: int, procs: list) -> subprocess.Popen:
    c = _in(ns, *FRONT, sys.executable, str(CHAIN), "client", addr, "7000", str(n), str(gap_ms), stdout=subprocess.PIPE,
            text=True)
    procs.append(c)
    return c


def _slowest(c: subprocess.Popen, lo: int, hi: int) -> dict:
    """The slowest payment answered while the hog ran (between lo and hi)."""
    out, _ = c.communicate(timeout=120)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = [r for r in rows if r["answered"] >= lo and r["sent"] <= hi]
    assert rows, "no payment while the hog ran"
    return max(rows, key=lambda r: r["answered"] - r["sent"])


def test_chain_across_three_hosts_through_kafka_and_clickhouse(world: dict) -> None:
    from kprobe.causal.hosts import SharedSource, why_across
    from kprobe.sinks.chdb_store import ChdbStore
    from kprobe.sinks.clickhouse_window import copy_window

    hosts: Hosts = world["hosts"]
    procs, agents, tmp = world["procs"], world["agents"], world["tmp"]
    ns = {n: hosts.netns(n) for n in ("client", "middle", "ledger")}
    r = os.getpid() % 200 + 20
    c_addr, m_addr, m2_addr, l_addr = f"10.{r}.1.1", f"10.{r}.1.2", f"10.{r}.2.1", f"10.{r}.2.2"
    hosts.link(ns["client"], c_addr, ns["middle"], m_addr, 1)
    hosts.link(ns["middle"], m2_addr, ns["ledger"], l_addr, 2)
    t_begin = time.time_ns()
    for name in ("client", "middle", "ledger"):
        agents.append(Agent(name, hosts.path(ns[name]), tmp / name, world["stack"], world["prefix"],
                            SKEW_NS if name == "middle" else 0))
    for a in agents:
        a.wait_recording()
    ingest = Ingest(world["stack"], world["prefix"], world["db"], tmp / "flow").start()
    try:
        ledger = _in(ns["ledger"], "taskset", "-c", LEDGER_CPU, *LEDGER_RR, sys.executable, str(CHAIN), "ledger", l_addr,
                     "7100", "1", stdout=subprocess.PIPE, text=True)
        procs.append(ledger)
        _wait_line(ledger, "listening")
        middle = _in(ns["middle"], *FRONT, sys.executable, str(CHAIN), "middle", m_addr, "7000", l_addr, "7100",
                     stdout=subprocess.PIPE, text=True)
        procs.append(middle)
        _wait_line(middle, "listening")

        # phase 1: a hog on the ledger's CPU while the client pays
        client = _client_run(ns["client"], m_addr, 60, 15, procs)
        time.sleep(0.5)
        h0 = time.time_ns()
        hog = _in(ns["ledger"], "taskset", "-c", LEDGER_CPU, *LEDGER_RR, sys.executable, "-c", HOG.format(s=0.35))
        procs.append(hog)
        hog.wait(10)
        slow1 = _slowest(client, h0, time.time_ns())
        assert slow1["answered"] - slow1["sent"] > 30_000_000, slow1     # the hog made one slow

        # phase 2: the ledger's agent is killed while another hog makes a payment slow
        time.sleep(1.5)                    # heartbeats and rows of phase 1 out of the ledger's agent
        client2 = _client_run(ns["client"], m_addr, 40, 15, procs)
        time.sleep(0.3)
        h0 = time.time_ns()
        hog2 = _in(ns["ledger"], "taskset", "-c", LEDGER_CPU, *LEDGER_RR, sys.executable, "-c", HOG.format(s=0.35))
        procs.append(hog2)
        time.sleep(0.03)
        agents[2].stop(signal.SIGKILL)
        hog2.wait(10)
        slow2 = _slowest(client2, h0, time.time_ns())
        time.sleep(1.5)                    # the other hosts' heartbeats pass the window's end
        for a in agents[:2]:
            a.stop()
        # everything the live agents wrote (their final heartbeats last) is in ClickHouse
        ch, db = world["ch"], world["db"]
        deadline = time.monotonic() + 90
        finals: set = set()
        while time.monotonic() < deadline:
            try:
                finals = {h for (h,) in ch.execute(f"SELECT DISTINCT host FROM {db}.hosts WHERE final = 1")}
            except Exception:
                finals = set()
            if finals >= {"client", "middle"}:
                break
            time.sleep(1)
        assert finals >= {"client", "middle"}, (finals, ingest.log.read_text()[-3000:])
        time.sleep(2)                      # batches of other topics written in the same epochs
    finally:
        ingest.stop()

    store = ChdbStore(tmp / "window")
    try:
        copied = copy_window(world["ch"], world["db"], store, t_begin - 1_000_000_000, time.time_ns())
        assert copied.rows.get("offcpu") and copied.rows.get("sock_io") and copied.rows.get("hosts"), copied
        src = SharedSource(store)
        assert set(src.hosts()) >= {"client", "middle", "ledger"}
        t0 = time.perf_counter()
        cross = why_across(src, "client", client.pid, slow1["sent"], slow1["answered"])
        took = time.perf_counter() - t0
        print(cross.render_text())
        print(f"cross-host why: {took * 1000:.0f} ms")
        assert [h.host for h in cross.hops] == ["client", "middle", "ledger"], cross.render_text()
        assert cross.hops[1].pid == middle.pid and cross.hops[2].pid == ledger.pid
        root = cross.root_cause
        assert root is not None and root.kind == "cpu_preemption", cross.render_text()
        assert root.culprit.pid == hog.pid, (root.culprit, hog.pid)
        assert not cross.missing
        cm, ml = cross.skews
        assert (cm.host_a, cm.host_b, ml.host_a, ml.host_b) == ("client", "middle", "middle", "ledger")
        assert abs(cm.offset_ns - SKEW_NS) <= cm.bound_ns, cm      # the true offsets are within the bounds
        assert abs(ml.offset_ns + SKEW_NS) <= ml.bound_ns, ml
        assert cm.bound_ns < 2_000_000 and ml.bound_ns < 2_000_000, (cm, ml)   # and the bounds say something

        cross2 = why_across(src, "client", client2.pid, slow2["sent"], slow2["answered"])
        print(cross2.render_text())
        assert [h.host for h in cross2.hops] == ["client", "middle"], cross2.render_text()
        assert cross2.root_cause is None and [m.host for m in cross2.missing] == ["ledger"], cross2.render_text()
        assert "killed" in cross2.missing[0].reason and cross2.missing[0].address == f"{l_addr}:7100"
    finally:
        store.close()

    # the command line over the server: the same chain, and the heartbeats say who covered which window
    stack = world["stack"]
    base = [sys.executable, "-m", "kprobe", "hosts"]
    server = ["--clickhouse", f"{stack['CLICKHOUSE_HOST']}:{stack['CLICKHOUSE_PORT']}", "--database", world["db"]]
    win1 = ["--from", str(slow1["sent"]), "--to", str(slow1["answered"])]
    got = subprocess.run([*base, "why", *server, *win1, "--host", "client", "--pid", str(client.pid), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=180)
    assert got.returncode == 0, got.stderr
    ans = json.loads(got.stdout)
    assert ans["root_host"] == "ledger" and ans["root_cause"]["culprit"]["pid"] == hog.pid, ans["root_cause"]
    win2 = ["--from", str(slow2["sent"]), "--to", str(slow2["answered"])]
    got = subprocess.run([*base, "list", *server, *win2, "--json"], capture_output=True, text=True, cwd=REPO,
                         timeout=180)
    assert got.returncode == 0, got.stderr
    cover = {d["host"]: d["covers_window"] for d in json.loads(got.stdout)}
    assert cover == {"client": True, "middle": True, "ledger": False}, cover
