"""Pure parts of span lookup and incidents: id formats, which span of a trace is explained, the chain head."""

from __future__ import annotations

import pytest

from kprobe.causal.incidents import parse_incident_id
from kprobe.causal.span_chain import SpanRef, hex_id, pick_span


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


def test_incidents_that_matter_come_first_with_repeats_grouped_and_root_causes(tmp_path) -> None:
    """A failed span first; then the serving process's wait that stood out against its own usual waits, although a
    batch job's longer wait is newer; three waits of the serving process behind the same hog are one group; the top
    ones are explained by the real analysis; and the first n do not depend on the limit."""
    from kprobe.causal.impact import ranked_incidents
    from kprobe.sinks.chdb_store import ChdbStore

    store = ChdbStore(tmp_path / "store")
    try:
        t0, ms = 1_700_000_000_000_000_000, 1_000_000
        cols = "(tgid, tid, comm, reason, ts, end_ts, cpu_off, cpu_on, preemptor_tgid, preemptor_tid, preemptor_comm)"
        rows = [(7, 7, "settle", "preempted", t0 + k * 1000 * ms, t0 + (k * 1000 + 400) * ms, 0, 0, 50, 50, "hog")
                for k in range(3)]                                                       # three waits behind one hog
        rows += [(7, 7, "settle", "preempted", t0 + (5000 + 10 * k) * ms, t0 + (5000 + 10 * k + 2) * ms, 0, 0, 60, 60,
                  "kworker/0:1") for k in range(20)]                                   # its usual waits: 2 ms
        rows += [(9, 9, "batch", "preempted", t0 + 8000 * ms, t0 + 8900 * ms, 1, 1, 61, 61, "other")]   # newest
        rows += [(9, 9, "batch", "preempted", t0 + (7000 + 10 * k) * ms, t0 + (7000 + 10 * k + 600) * ms, 1, 1, 61,
                  61, "other") for k in range(3)]                                      # batch's usual: 600 ms
        values = ", ".join("(" + ", ".join(repr(v) for v in r) + ")" for r in rows)
        store.query(f"INSERT INTO offcpu {cols} VALUES {values}")
        store.query(f"INSERT INTO sock_io (tgid, tid, ts, dir, bytes) VALUES (7, 7, {t0}, 'recv', 100)")
        store.query("INSERT INTO spans (ts_ns, end_ns, duration_ns, span_id, name, service, pid, tid, status_code, "
                    f"status_message) VALUES ({t0}, {t0 + 200 * ms}, {200 * ms}, '00000000000000aa', 'POST /pay', "
                    f"'payments', 8, 8, 2, 'timeout')")
        rk = ranked_incidents(store, 100 * ms, 10, analyse=2)
        ids = [r.incident.id for r in rk.items]
        assert ids[0] == "span-00000000000000aa" and rk.items[0].to_json()["tier"] == "failed span"
        settle = rk.items[1]
        assert settle.incident.pid == 7 and len(settle.repeats) == 2 and settle.baseline_ns == 2 * ms, settle
        assert settle.outlier > 100 and settle.to_json()["tier"] == "kernel, serving process"
        assert settle.analysed and settle.root_cause is not None, settle
        assert settle.root_cause["kind"] == "cpu_preemption" and settle.root_cause["culprit"]["pid"] == 50
        # the batch job's waits are its usual ones, and it serves nobody: last, though the newest and longest
        assert rk.items[-1].incident.pid == 9 and rk.analysed == 2 and rk.candidates == 8
        for n in (1, 2, 3):
            assert [r.incident.id for r in ranked_incidents(store, 100 * ms, n, analyse=2).items] == ids[:n]
        # one root cause, one line: a wait of another process behind the same hog is a repeat of the first
        store.query(f"INSERT INTO offcpu {cols} VALUES (12, 12, 'settle2', 'preempted', {t0 + 9000 * ms}, "
                    f"{t0 + 9900 * ms}, 0, 0, 50, 50, 'hog')")
        store.query(f"INSERT INTO sock_io (tgid, tid, ts, dir, bytes) VALUES (12, 12, {t0}, 'recv', 100)")
        again = ranked_incidents(store, 100 * ms, 10, analyse=3)
        hog = [r for r in again.items if r.root_cause and r.root_cause["culprit"]["pid"] == 50]
        assert len(hog) == 1 and len(hog[0].repeats) == 3, [r.to_json() for r in again.items]
    finally:
        store.close()
