"""Event-time windowing for the causality flow: buffers per (host, pid), a watermark, operation triggers.

Pure Python (no bytewax): the bytewax operator in dataflows/causality.py only
feeds rows in and takes analyses out, so this is testable on hand-made rows.

Why the state is per host with buffers per pid: explaining one pid needs its
neighbours on the same host (the preemptor's reclaim, the waker's own delays,
the socket peer), so the host is the unit of state (the bytewax key) and the
pid is the unit of storage and lookup.

Watermark (documented contract)
-------------------------------
* Event time of a row: ``end_ts`` when the row is an interval (it is only
  complete, and only emitted by the agent, at its end), else ``ts``; spans use
  ``end_ns``.
* ``watermark = max event time seen on the host - allowed_lateness_ns``
  (default 2 s: the agent's flush interval plus transport jitter).
* An operation (span, slow syscall, or one handed in) is analysed once the
  watermark passes its end, i.e. once rows up to its end can be assumed in.
* Rows may arrive in any order. A row older than the watermark is *late*: it is
  counted (``late``), still buffered, and every operation already analysed whose
  window it overlaps is analysed again (``refired``) and re-emitted; writes are
  idempotent per operation, so the result converges to what an in-order run
  gives. Only a row older than ``watermark - retention_ns`` (the buffer horizon)
  is dropped, and counted (``too_late``): never silently.
* A row that arrives after an operation it overlaps was analysed (late, or after
  an idle fire) re-opens that operation the same way.
* Idle input (a live flow whose sources went quiet): after ``idle`` processing
  time the flow fires operations that end before the newest event time seen
  (``ready(upto=max_event_ns)``) instead of waiting for rows that may never come.
* End of input moves the watermark to +infinity: everything pending fires.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kprobe.causal.graph import interval_op_id, span_op_id

SEC = 1_000_000_000

# Waits that are a process idling by design, not a slow operation.
IDLE_CALLS = frozenset({"nanosleep", "clock_nanosleep", "poll", "ppoll", "select", "pselect6", "epoll_wait",
                        "epoll_pwait", "epoll_pwait2", "pause", "wait4", "waitid", "rt_sigtimedwait",
                        "rt_sigsuspend", "accept", "accept4"})


def _i(v: Any) -> int:
    """JSONEachRow and Kafka decoders may hand 64-bit integers as strings."""
    return int(v) if v not in (None, "") else 0


@dataclass(frozen=True)
class Operation:
    """Something whose latency we explain: the analysis window is [start_ns, end_ns] of pid (thread tid)."""

    op_id: str
    kind: str            # span | syscall | interval
    name: str
    host: str
    pid: int
    tid: int | None
    start_ns: int
    end_ns: int


@dataclass
class WindowConfig:
    allowed_lateness_ns: int = 2 * SEC
    retention_ns: int = 60 * SEC          # buffer horizon behind the watermark; operations longer than this lose data
    slow_syscall_ns: int = 100_000_000    # a syscall at least this long (and not idle) is an operation
    watch_pids: frozenset[int] | None = None   # only these pids' syscalls become operations (None: all)


@dataclass
class WindowStats:
    rows: int = 0
    late: int = 0          # older than the watermark on arrival, still used
    too_late: int = 0      # older than the buffer horizon: dropped (counted here)
    malformed: int = 0     # rows without a usable ts/tgid: dropped (counted here)
    operations: int = 0
    fired: int = 0
    refired: int = 0

    def add(self, other: WindowStats) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def event_time(table: str, row: dict[str, Any]) -> int:
    if table == "spans":
        return _i(row.get("end_ns"))
    return max(_i(row.get("end_ts")), _i(row.get("ts")))


def _span(row: dict[str, Any], lo: str = "ts_ns", hi: str = "end_ns") -> tuple[int, int]:
    return _i(row.get(lo)), _i(row.get(hi))


def row_interval(table: str, row: dict[str, Any]) -> tuple[int, int]:
    if table == "spans":
        return _span(row)
    ts = _i(row.get("ts"))
    return ts, max(ts, _i(row.get("end_ts")))


def row_pid(table: str, row: dict[str, Any]) -> int:
    return _i(row.get("pid" if table == "spans" else "tgid"))


@dataclass
class HostWindow:
    """All buffered rows of one host, per pid and table, and the operations waiting for the watermark."""

    host: str
    config: WindowConfig = field(default_factory=WindowConfig)
    max_event_ns: int = 0
    rows: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    pending: dict[str, Operation] = field(default_factory=dict)
    fired: dict[str, Operation] = field(default_factory=dict)
    fired_max_end: int = 0
    evicted_at: int = 0          # watermark of the last eviction: evict every retention/4 of event time
    stats: WindowStats = field(default_factory=WindowStats)

    @property
    def watermark(self) -> int:
        return self.max_event_ns - self.config.allowed_lateness_ns

    def add_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        """Buffer rows (any order); spans and slow syscalls become pending operations."""
        horizon = self.watermark - self.config.retention_ns
        for r in rows:
            self.stats.rows += 1
            t = event_time(table, r)
            if t <= 0 or (table != "spans" and "tgid" not in r and table not in SYSTEM_TABLES):
                self.stats.malformed += 1
                continue
            if self.max_event_ns and t < self.watermark:
                self.stats.late += 1
                if t < horizon:
                    self.stats.too_late += 1
                    continue
            lo, hi = row_interval(table, r)
            if self.fired and lo <= self.fired_max_end:
                self._reopen(lo, hi)
            self.max_event_ns = max(self.max_event_ns, t)
            self.rows.setdefault(row_pid(table, r), {}).setdefault(table, []).append(r)
            op = self._operation(table, r)
            if op is not None:
                self.add_operation(op)

    def add_operation(self, op: Operation) -> None:
        if op.op_id in self.fired or op.op_id in self.pending:
            return
        self.stats.operations += 1
        self.pending[op.op_id] = op

    def _operation(self, table: str, r: dict[str, Any]) -> Operation | None:
        if table == "spans":
            a, b = _span(r)
            if b <= a:
                return None
            tid = _i(r.get("tid")) or None
            return Operation(span_op_id(str(r.get("trace_id", "")), str(r.get("span_id", ""))), "span",
                             str(r.get("name", "")), self.host, _i(r.get("pid")), tid, a, b)
        if table == "syscall":
            a, b = row_interval(table, r)
            name = str(r.get("syscall", ""))
            pid = _i(r.get("tgid"))
            w = self.config.watch_pids
            if b - a >= self.config.slow_syscall_ns and name not in IDLE_CALLS and (w is None or pid in w):
                tid = _i(r.get("tid"))
                fd = _i(r.get("fd")) if r.get("fd") not in (None, "") else -1
                return Operation(interval_op_id(self.host, pid, tid, a, b), "syscall",
                                 f"{name} fd={fd}" if fd >= 0 else name, self.host, pid, tid, a, b)
        return None

    def _reopen(self, lo: int, hi: int) -> None:
        for op_id, op in list(self.fired.items()):
            if op.start_ns <= hi and lo <= op.end_ns:
                del self.fired[op_id]
                self.pending[op_id] = op
                self.stats.refired += 1

    def ready(self, final: bool = False, upto: int | None = None) -> list[Operation]:
        """Operations whose end the watermark (or ``upto``) has passed (all when ``final``), oldest end first."""
        wm = self.watermark if upto is None else upto
        due = [op for op in self.pending.values() if final or op.end_ns <= wm]
        due.sort(key=lambda o: (o.end_ns, o.op_id))
        for op in due:
            del self.pending[op.op_id]
            self.fired[op.op_id] = op
            self.fired_max_end = max(self.fired_max_end, op.end_ns)
            self.stats.fired += 1
        return due

    def evict(self, force: bool = False) -> int:
        """Forget rows and analysed operations behind the buffer horizon; returns rows dropped.

        Runs at most once per quarter of the retention in event time (a full pass over the
        buffers per batch would make the step quadratic), unless ``force``.
        """
        if not force and self.watermark - self.evicted_at < self.config.retention_ns // 4:
            return 0
        self.evicted_at = self.watermark
        horizon = self.watermark - self.config.retention_ns
        oldest_pending = min((op.start_ns for op in self.pending.values()), default=horizon)
        cut = min(horizon, oldest_pending)
        n = 0
        for pid in list(self.rows):
            tables = self.rows[pid]
            for t in list(tables):
                keep = [r for r in tables[t] if event_time(t, r) >= cut]
                n += len(tables[t]) - len(keep)
                tables[t] = keep
                if not keep:
                    del tables[t]
            if not tables:
                del self.rows[pid]
        for op_id in [k for k, op in self.fired.items() if op.end_ns < horizon]:
            del self.fired[op_id]
        return n

    def table_rows(self, table: str, pids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Rows of one table, for some pids or (None) the whole host."""
        src = self.rows.values() if pids is None else (self.rows.get(p, {}) for p in pids)
        out: list[dict[str, Any]] = []
        for tables in src:
            out.extend(tables.get(table, ()))
        return out


# tables whose rows are about the whole host (reclaimers, block I/O issuers, retransmits) rather than a victim
SYSTEM_TABLES = frozenset({"reclaim", "block_io", "tcp_retrans", "oom", "memcg_members"})
