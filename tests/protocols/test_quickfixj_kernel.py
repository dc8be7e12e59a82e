"""A real FIX engine: QuickFIX/J (Maven Central) acceptor and initiator exchanging orders over
loopback in a watched JVM. Every order's lifecycle is reconstructed from the kernel-captured
bytes, and the decoded order-to-ack latency is set against the engine's own stamps.

Two sets of engine stamps: the order's SendingTime and the instant the initiator's application got
the ack include QuickFIX/J's thread hand-offs on both sides of the wire (the order is stamped, then
queued to MINA's I/O thread; the ack is read there, then queued to QuickFIX/J's message processor):
milliseconds on a loaded host, so the decoded latency is only bounded by them. Within 50 µs is
checked against the engine's own transport stamps: a filter at the head of the initiator's MINA
chain stamps when the order's bytes were written and when the ack's bytes were read. Those stamps
trail the kernel's by MINA's own work after each syscall, and by the time MINA's I/O thread was off
its CPU in between (other tests share this host): the recorder's off-CPU rows of that thread say
how long, and that is taken out before comparing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import pytest

from kprobe.protocols.capture import PayloadCapture

pytestmark = pytest.mark.kernel
M2 = Path.home() / ".m2" / "repository"
JARS = ("org/quickfixj/quickfixj-all/2.3.1/quickfixj-all-2.3.1.jar", "org/apache/mina/mina-core/2.1.4/mina-core-2.1.4.jar",
        "org/slf4j/slf4j-api/1.7.36/slf4j-api-1.7.36.jar")
N = 30


def _classpath() -> str:
    """QuickFIX/J and its two dependencies, fetched from Maven Central into ~/.m2 when missing."""
    if shutil.which("mvn") is None or shutil.which("javac") is None:
        pytest.skip("needs Maven and a JDK (apt-get install maven default-jdk-headless)")
    for coords in ("org.quickfixj:quickfixj-all:2.3.1", "org.apache.mina:mina-core:2.1.4", "org.slf4j:slf4j-api:1.7.36"):
        jar = M2 / JARS[["quickfixj", "mina", "slf4j"].index(next(k for k in ("quickfixj", "mina", "slf4j") if k in coords))]
        if not jar.exists():
            r = subprocess.run(["mvn", "-q", "-B", "dependency:get", f"-Dartifact={coords}", "-Dtransitive=false"],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                pytest.skip(f"cannot fetch {coords} from Maven Central: {r.stdout[-300:]}{r.stderr[-300:]}")
    return ":".join(str(M2 / j) for j in JARS)


def _cpu_times() -> tuple[int, int]:
    """(all CPU time, steal) in jiffies from /proc/stat: how much the hypervisor took meanwhile."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f), f[7]


def _ns(sending_time: str) -> int:
    dt = datetime.strptime(sending_time, "%Y%m%d-%H:%M:%S.%f").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def test_quickfixj_orders_reconstructed_and_timed_from_the_kernel(capture, tmp_path) -> None:
    cp = _classpath()
    src = Path(__file__).parent / "quickfixj" / "FixPair.java"
    subprocess.run(["javac", "-cp", cp, "-d", str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = capture.session
    payload = PayloadCapture(session.recorder.probes, write=session.store.write).start()
    try:
        steal0 = _cpu_times()
        jvm = capture.spawn("java", "-cp", f"{tmp_path}:{cp}", "FixPair", str(port), str(N), stdout=subprocess.PIPE)
        out, _ = jvm.communicate(timeout=120)
        assert jvm.returncode == 0, out[-2000:]
        steal1 = _cpu_times()
        steal_pct = 100 * (steal1[1] - steal0[1]) / max(1, steal1[0] - steal0[0])
        time.sleep(0.2)
        capture.settle()
        payload.flush()
        rows = session.store.query_rows("SELECT name, kind, tid, ts_ns, end_ns, attributes FROM spans ORDER BY ts_ns")
        offcpu = session.store.query_rows(f"SELECT tid, ts, end_ts FROM offcpu WHERE tgid = {jvm.pid}")
        stats = payload.protocol_stats()
    finally:
        payload.stop()
    engine = {d["cl"]: d for d in (json.loads(line) for line in out.decode().splitlines() if line.startswith("{"))}
    assert len(engine) == N
    spans = [(r, json.loads(r["attributes"])) for r in rows]
    fix = [(r, a) for r, a in spans if a.get("protocol") == "fix"]
    orders = {a["fix.cl_ord_id"]: r for r, a in fix if r["name"] == "NewOrderSingle" and int(r["kind"]) == 3}
    acceptor_side = {a["fix.cl_ord_id"] for r, a in fix if r["name"] == "NewOrderSingle" and int(r["kind"]) == 2}
    cancels = [a for r, a in fix if r["name"] == "OrderCancelRequest" and int(r["kind"]) == 3]
    assert set(orders) == set(engine) == acceptor_side  # every order, seen from both ends
    assert sorted(a["fix.orig_cl_ord_id"] for a in cancels) == sorted(f"QFJ-{k}" for k in range(0, N, 3))
    assert all(a["fix.exec_type"] == "4" for a in cancels)
    assert stats["fix"]["malformed"] == 0 and stats["fix"]["unanswered"] == 0
    diffs, wire, preempted = [], [], []
    for cl, e in list(engine.items())[N // 3:]:  # after the JIT has compiled the order path
        o = orders[cl]
        ours = int(o["end_ns"]) - int(o["ts_ns"])
        theirs = e["ack_received_ns"] - _ns(e["sending_time"])
        diffs.append(ours - theirs)
        assert e["wire_order_sent_ns"] and e["wire_ack_read_ns"], e
        hops = ((int(o["ts_ns"]), e["wire_order_sent_ns"]), (int(o["end_ns"]), e["wire_ack_read_ns"]))
        off_send, off_ack = (sum(max(0, min(b, int(r["end_ts"])) - max(a, int(r["ts"]))) for r in offcpu
                                 if int(r["tid"]) == int(o["tid"])) for a, b in hops)
        d = ours - (e["wire_ack_read_ns"] - e["wire_order_sent_ns"])
        # off-CPU after the write delays the filter's send stamp (wire latency shorter), after the read
        # its ack stamp (longer): the kernel's own off-CPU rows say by how much
        (preempted if off_send or off_ack else wire).append((d, off_send, off_ack, d - off_send + off_ack))
    diffs.sort()
    wire = sorted(d for d, *_ in wire)
    print("quickfixj: orders whose I/O thread was off-CPU between syscall and filter (decoded minus filter, "
          "off-CPU after the write, after the read, difference less those), µs:",
          [tuple(round(x / 1e3, 1) for x in t) for t in preempted])
    print(f"quickfixj: decoded minus engine order-to-ack (SendingTime to application), µs: median "
          f"{median(diffs) / 1e3:.1f}, min {diffs[0] / 1e3:.1f}, max {diffs[-1] / 1e3:.1f}")
    if wire:  # none when the I/O thread was off-CPU around every order (a busy host)
        print(f"quickfixj: decoded minus engine order-to-ack (I/O filter stamps), µs: median {median(wire) / 1e3:.1f}, "
              f"min {wire[0] / 1e3:.1f}, max {wire[-1] / 1e3:.1f}, all {[round(w / 1e3, 1) for w in wire]}")
    # every order, less the off-CPU time the kernel recorded between syscall and filter: 10 µs apart at
    # the median, and within 50 µs but for one in four at most: what the guest kernel cannot see as
    # off-CPU (the hypervisor's steal, printed; waits under the recorder's 20 µs threshold, interrupts,
    # JVM safepoints) still lands between a syscall and the filter on a loaded shared host
    agreed = sorted(sorted(t[3] for t in preempted) + wire)
    print(f"quickfixj: host steal during the run {steal_pct:.1f} % of CPU time; agreed, µs: "
          f"{[round(x / 1e3, 1) for x in agreed]}")
    assert abs(median(agreed)) <= 10_000, agreed
    assert sum(abs(x) <= 50_000 for x in agreed) >= 0.75 * len(agreed), agreed
    # the wire sees the order after the engine stamped it and the ack before the application does:
    # decoded latency is the engine's less those two in-process hops, never more (50 µs for clocks)
    assert diffs[-1] <= 50_000, diffs
