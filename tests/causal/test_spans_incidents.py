"""Pure parts of span lookup and incidents: id formats, which span of a trace is explained, the chain head."""

from __future__ import annotations

import pytest

from kprobe.causal.incidents import parse_incident_id
from kprobe.causal.spans import SpanRef, hex_id, pick_span


def _span(sid: str, pid: int = 10, status: int = 0, dur: int = 1000, name: str = "op") -> SpanRef:
    return SpanRef(sid, "t" * 32, "", name, "payment-handler", "h", pid, 11, 5_000, 5_000 + dur, status, "")


def test_incident_ids_round_trip_and_refuse_garbage() -> None:
    assert parse_incident_id("span-0123456789abcdef") == ("span", "0123456789abcdef")
    assert parse_incident_id(" SPAN-0123456789ABCDEF ") == ("span", "0123456789abcdef")
    assert parse_incident_id("k-812-813-100-200") == ("kernel", (812, 813, 100, 200))
    for bad in ("", "span-123", "k-1-2-3", "k-1-2-300-200", "k-a-b-c-d", "span-0123456789abcdef0"):
        with pytest.raises(ValueError):
            parse_incident_id(bad)


def test_ids_are_hex_only_before_reaching_sql() -> None:
    assert hex_id("0123456789ABCDEF", 16, "span id") == "0123456789abcdef"
    for bad in ("0123456789abcdeg", "' OR 1=1 --'", "0123"):
        with pytest.raises(ValueError):
            hex_id(bad, 16, "span id")


def test_trace_explains_its_failed_span_then_the_longest_joinable_one() -> None:
    ok_long = _span("a" * 16, dur=9_000)
    failed = _span("b" * 16, status=2, dur=2_000)
    no_pid = _span("c" * 16, pid=0, status=2, dur=50_000)
    assert pick_span([ok_long, failed, no_pid]) is failed
    assert pick_span([ok_long, _span("d" * 16, dur=100)]) is ok_long


def test_span_head_reads_like_the_incident() -> None:
    s = _span("a" * 16, status=2, dur=1_620_000_000, name="POST /pay")
    assert s.head() == "payment-handler span POST /pay 1.62 s ERROR"
    j = s.to_json()
    assert j["kind"] == "span" and j["status"] == "ERROR" and j["duration_ns"] == 1_620_000_000


def test_kernel_threads_waiting_for_work_are_not_incidents_but_user_waits_are() -> None:
    from kprobe.causal.incidents import idle_kernel_wait

    # what a 4-minute recording of a pgbench host listed first: kernel threads idling uninterruptibly
    for comm in ("kdamond.0", "kworker/0:1", "rcu_preempt", "jbd2/vda-8"):
        assert idle_kernel_wait("uninterruptible", "", comm, None, None), comm
        assert idle_kernel_wait("uninterruptible", "", "renamed", "", ""), "no exe, no cmdline: a kernel thread"
    # a database waiting on the disk: in a syscall, or in a page fault (no syscall) but with an exe
    assert not idle_kernel_wait("uninterruptible", "fsync", "postgres", "/usr/lib/postgresql/15/bin/postgres", "x")
    assert not idle_kernel_wait("uninterruptible", "", "postgres", "/usr/lib/postgresql/15/bin/postgres", "postgres")
    assert not idle_kernel_wait("uninterruptible", "", "kworker-like-app", "/opt/app", "app")
    assert not idle_kernel_wait("preempted", "", "kworker/0:1", None, None), "a preempted kworker delays work"
    assert not idle_kernel_wait("uninterruptible", "", "settlement-svc", None, None)


def test_the_first_n_incidents_do_not_depend_on_the_limit(tmp_path) -> None:
    """The API pages with small limits: dropped rows (idle kernel threads) must not hide an older incident.

    A recording whose newest long intervals are kernel threads idling (dropped) and whose only real
    incident is older: limit 1 must still find it (the CI run where page 3 of the demo was empty).
    """
    from kprobe.causal.incidents import incidents
    from kprobe.sinks.chdb_store import ChdbStore

    store = ChdbStore(tmp_path / "store")
    try:
        t0, ms = 1_700_000_000_000_000_000, 1_000_000
        rows = [(100 + i, 100 + i, f"kworker/0:{i}", "uninterruptible", t0 + (20 + i) * ms, t0 + (900 + i) * ms)
                for i in range(12)]
        rows += [(7, 8, "settle", "preempted", t0, t0 + 400 * ms), (9, 9, "batch", "preempted", t0, t0 + 300 * ms)]
        values = ", ".join(f"({a}, {b}, '{c}', '{r}', {lo}, {hi})" for a, b, c, r, lo, hi in rows)
        store.query(f"INSERT INTO offcpu (tgid, tid, comm, reason, ts, end_ts) VALUES {values}")
        full = [i.id for i in incidents(store, 100 * ms, 50)]
        assert full == [f"k-7-8-{t0}-{t0 + 400 * ms}", f"k-9-9-{t0}-{t0 + 300 * ms}"]
        for n in (1, 2, 3):
            assert [i.id for i in incidents(store, 100 * ms, n)] == full[:n]
    finally:
        store.close()
