"""Event-time windowing of the causality flow (pure): watermark, out-of-order and late rows."""

from __future__ import annotations

import random

from kprobe.dataflows.causal_step import CausalityState, EventBatch
from kprobe.dataflows.windowing import SEC, HostWindow, WindowConfig

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
HOST = "h1"


def offcpu(tgid, tid, a, b, reason="preempted", p=(0, 0, ""), w=(0, 0, ""), wake=0, comm="victim"):
    return {"ts": T0 + a * MS, "end_ts": T0 + b * MS, "wake_ts": T0 + wake * MS if wake else 0, "tgid": tgid,
            "tid": tid, "comm": comm, "reason": reason, "cpu_off": 1, "cpu_on": 1, "preemptor_tgid": p[0],
            "preemptor_tid": p[1], "preemptor_comm": p[2], "waker_tgid": w[0], "waker_tid": w[1],
            "waker_comm": w[2], "host": HOST}


def syscall(tgid, tid, name, a, b, fd=-1):
    return {"ts": T0 + a * MS, "end_ts": T0 + b * MS, "tgid": tgid, "tid": tid, "syscall": name, "fd": fd,
            "ret": 0, "bytes": 0, "host": HOST}


def tick(at_ms):
    """A row from an unrelated process that only moves event time forward."""
    return ("offcpu", offcpu(999, 999, at_ms - 1, at_ms, comm="ticker"))


def lock_scenario():
    """Victim 10 blocks 300 ms in futex, woken by holder 20 (another process) -> lock_contention by 20."""
    return [
        ("syscall", syscall(10, 10, "futex", 100, 400)),
        ("offcpu", offcpu(10, 10, 101, 399, reason="sleep", wake=398, w=(20, 20, "holder"))),
        ("offcpu", offcpu(20, 20, 50, 390, reason="sleep", wake=389, w=(20, 20, "holder"), comm="holder")),
        ("syscall", syscall(20, 20, "nanosleep", 50, 389)),
    ]


def feed(state, items):
    out = []
    for table, row in items:
        out += state.on_rows(EventBatch(HOST, table, (row,)))
    return out


def cfg(**kw):
    return WindowConfig(allowed_lateness_ns=kw.pop("lateness", 1 * SEC), retention_ns=kw.pop("retention", 10 * SEC),
                        **kw)


def test_operation_fires_only_when_the_watermark_passes_its_end():
    st = CausalityState.new(HOST, cfg())
    assert feed(st, lock_scenario()) == []                       # watermark = 400 ms - 1 s: nothing yet
    assert st.window.pending and not st.window.fired
    assert feed(st, [tick(1300)]) == []                          # 1300 - 1000 = 300 < 400
    out = feed(st, [tick(1401)])                                 # 401 >= 400: fires
    assert [r.op.name for r in out] == ["futex"]
    rc = out[0].analysis.root_cause
    assert rc.kind == "lock_contention" and rc.culprit.pid == 20 and rc.delay_ns == 297 * MS      # blocked 101 ms .. wake-up at 398 ms
    assert out[0].delta.op_id == out[0].op.op_id == out[0].row["op_id"]
    assert st.window.stats.late == 0 and st.window.stats.fired == 1


def test_out_of_order_within_lateness_gives_the_in_order_answer():
    ref = CausalityState.new(HOST, cfg())
    want = feed(ref, lock_scenario()) + ref.on_end()
    for seed in range(5):
        items = lock_scenario()
        random.Random(seed).shuffle(items)
        st = CausalityState.new(HOST, cfg())
        got = feed(st, items) + st.on_end()
        assert [r.row for r in got] == [r.row for r in want]
        assert st.window.stats.late == 0 and st.window.stats.too_late == 0


def test_late_row_is_counted_and_reopens_the_analysed_operation():
    items = lock_scenario()
    late = items.pop(1)                                          # the victim's off-CPU interval comes late
    st = CausalityState.new(HOST, cfg())
    first = feed(st, items + [tick(1500)])
    assert len(first) == 1
    assert first[0].analysis.root_cause is None or first[0].analysis.root_cause.kind != "lock_contention"
    again = feed(st, [late])
    assert st.window.stats.late == 1 and st.window.stats.refired == 1 and st.window.stats.too_late == 0
    assert len(again) == 1 and again[0].op.op_id == first[0].op.op_id
    assert again[0].analysis.root_cause.kind == "lock_contention"
    assert again[0].row["digest"] != first[0].row["digest"]


def test_row_behind_the_buffer_horizon_is_dropped_and_counted():
    st = CausalityState.new(HOST, cfg(lateness=1 * SEC, retention=2 * SEC))
    feed(st, [tick(10_000)])
    feed(st, lock_scenario())                                    # 9.6 s behind the newest row: past the horizon
    s = st.window.stats
    assert s.late == 4 and s.too_late == 4 and s.operations == 0
    assert st.on_end() == []


def test_end_of_input_fires_pending_and_no_data_is_counted():
    st = CausalityState.new(HOST, cfg())
    feed(st, lock_scenario())
    st.window.add_operation(st.window._operation("syscall", syscall(77, 77, "read", 0, 500)))
    out = st.on_end()
    assert sorted(r.op.pid for r in out) == [10, 77]
    assert st.no_data == 1 and st.emitted == 1
    assert [r.analysis is None for r in out if r.op.pid == 77] == [True]


def test_idle_and_unwatched_syscalls_are_not_operations():
    w = HostWindow(HOST, cfg(watch_pids=frozenset({10})))
    w.add_rows("syscall", [syscall(10, 10, "epoll_wait", 0, 900), syscall(11, 11, "read", 0, 900),
                           syscall(10, 10, "read", 0, 50), syscall(10, 10, "write", 0, 150, fd=3)])
    assert [op.name for op in w.pending.values()] == ["write fd=3"]


def test_eviction_keeps_rows_needed_by_pending_operations():
    st = CausalityState.new(HOST, cfg(lateness=1 * SEC, retention=1 * SEC))
    feed(st, lock_scenario())
    st.window.add_rows("spans", [{"ts_ns": T0 + 100 * MS, "end_ns": T0 + 5000 * MS, "trace_id": "ab" * 16,
                                  "span_id": "cd" * 8, "name": "POST /pay", "pid": 10, "tid": 10}])
    out = feed(st, [tick(4000)])      # futex op fires; span (ends at 5 s) pending keeps rows from 100 ms
    assert [r.op.kind for r in out] == ["syscall"]
    assert st.window.table_rows("offcpu", [10])
    out = feed(st, [tick(6100)])
    assert [r.op.kind for r in out] == ["span"] and out[0].analysis.root_cause.kind == "lock_contention"
