"""`kprobe export --perfetto` on the demo's recording, parsed with Perfetto's own compiled .proto.

Perfetto's trace processor cannot run here (its Python package downloads the binary on first use,
and this machine reaches no such host), so the file is decoded with ``perfetto_trace_pb2`` from the
same package: Perfetto's published TracePacket definitions. Tracks, slices and flows are compared
with the store: one thread track per thread, one off-CPU slice per off-CPU row, one flow per wake-up
by another thread, every slice closed on its own track, every flow with both ends.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.api.conftest import HANDLER, SERVICE, Demo

pytestmark = pytest.mark.kernel

pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")


def _parse(path: Path):
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    return trace


def test_export_matches_the_store(demo_recording: Demo, tmp_path: Path) -> None:
    demo = demo_recording
    out = tmp_path / "incident.pftrace"
    pids = [demo.pid(SERVICE), demo.pid(HANDLER)]
    run = subprocess.run([sys.executable, "-m", "kprobe", "export", "--data", str(demo.data), "--perfetto", str(out),
                          "--pid", *map(str, pids)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ui.perfetto.dev" in run.stderr
    trace = _parse(out)

    from kprobe.sinks.chdb_store import ChdbStore

    store = ChdbStore(demo.data)
    try:
        ids = ", ".join(map(str, pids))
        offcpu = store.query_rows(f"SELECT tgid, tid, waker_tgid, waker_tid, wake_ts FROM offcpu WHERE tgid IN ({ids})")
        counts = {t: int(store.query_rows(f"SELECT count() AS n FROM {t} WHERE tgid IN ({ids})")[0]["n"])
                  for t in ("syscall", "reclaim", "block_io")}
        spans = int(store.query_rows(f"SELECT count() AS n FROM spans WHERE pid IN ({ids})")[0]["n"])
    finally:
        store.close()

    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet if p.HasField("track_descriptor")}
    threads = {(t.thread.pid, t.thread.tid) for t in tracks.values() if t.HasField("thread")}
    processes = {t.process.pid for t in tracks.values() if t.HasField("process")}
    woke = {(int(r["tgid"]), int(r["tid"])) for r in offcpu}
    wakers = {(int(r["waker_tgid"]), int(r["waker_tid"])) for r in offcpu
              if int(r["wake_ts"]) and int(r["waker_tid"]) and r["waker_tid"] != r["tid"]}
    assert woke <= threads and threads == woke | wakers, (threads, woke, wakers)
    assert set(pids) <= processes
    for t in tracks.values():
        assert not t.parent_uuid or t.parent_uuid in tracks        # every child under a described track

    events = [p.track_event for p in trace.packet if p.HasField("track_event")]
    assert all(p.trusted_packet_sequence_id == 1 for p in trace.packet)
    begins = Counter(e.categories[0] for e in events if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN)
    assert begins["offcpu"] == len(offcpu)
    for table, n in counts.items():
        assert begins[table] == n, (table, begins, counts)
    assert begins["span"] == spans >= 1
    # every slice is closed on its own track, and never before it began (packets are in time order)
    depth: Counter[int] = Counter()
    stamps = [p.timestamp for p in trace.packet if p.HasField("track_event")]
    assert stamps == sorted(stamps)
    for e in events:
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            depth[e.track_uuid] += 1
        elif e.type == pb.TrackEvent.TYPE_SLICE_END:
            depth[e.track_uuid] -= 1
            assert depth[e.track_uuid] >= 0
    assert not +depth
    # off-CPU slices carry reason and preemptor/waker as args
    off = [e for e in events if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN and e.categories[0] == "offcpu"]
    names = [{a.name for a in e.debug_annotations} for e in off]
    assert all({"reason", "runq_ns", "cpu_off"} <= n for n in names)
    assert any("preemptor" in n for n in names) and any("waker" in n for n in names)
    # one flow per wake-up by another thread: starts on the waker's track, ends on the sleeper's
    starts = Counter(f for e in events for f in e.flow_ids)
    ends = Counter(f for e in events for f in e.terminating_flow_ids)
    want = sum(1 for r in offcpu if int(r["wake_ts"]) and int(r["waker_tid"]) and r["waker_tid"] != r["tid"])
    assert want > 0 and sum(starts.values()) == want and set(starts) == set(ends)
    assert all(n == 1 for n in starts.values()) and all(n == 1 for n in ends.values())


def test_export_of_the_failed_trace_crosses_to_the_culprit(demo_recording: Demo, tmp_path: Path) -> None:
    demo = demo_recording
    out = tmp_path / "trace.pftrace"
    run = subprocess.run([sys.executable, "-m", "kprobe", "export", "--data", str(demo.data), "--perfetto", str(out),
                          "--trace", demo.failed["trace_id"]], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    trace = _parse(out)
    procs = {p.track_descriptor.process.pid for p in trace.packet
             if p.HasField("track_descriptor") and p.track_descriptor.HasField("process")}
    # the payment handler (the span), the uninstrumented service and the batch job named by `why`
    assert {demo.pid(HANDLER), demo.pid(SERVICE), demo.pid("nightly-recon")} <= procs, procs
    bad = subprocess.run([sys.executable, "-m", "kprobe", "export", "--data", str(demo.data), "--perfetto",
                          str(out), "--trace", "xyz"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "trace id" in bad.stderr
