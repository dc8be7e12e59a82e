"""The capture loop: drain rings -> columnar batches -> enrich -> sink.

Two threads so a slow sink never stalls draining: the drain thread polls every
ring on a short timer (the probes submit without wakeups) and hands record
arrays to the writer through a bounded queue; the writer converts, enriches and
writes. If the writer falls behind, the queue fills, draining slows, and the
kernel's per-CPU drop counters say exactly how much was lost: never silent.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.agent import clock, code_pages, heap_trim, row_checks
from kprobe.agent.block_sums import BlockSums
from kprobe.agent.cgroup_cpu import CgroupCpu
from kprobe.agent.cpu_irq import CpuIrq
from kprobe.agent.fd_paths import FdPaths
from kprobe.agent.heartbeat import DEFAULT_INTERVAL_MS, Heartbeat
from kprobe.agent.host_identity import HostIdentity
from kprobe.agent.identity import IdentityCache, processes_columns
from kprobe.agent.memcg_members import MemcgMembers
from kprobe.agent.node_filter import RESCAN_S
from kprobe.agent.pod_identity import KubeletConfig, pod_directory
from kprobe.agent.probeset import ProbeConfig, ProbeSet
from kprobe.agent.ring_wait import RingWaiter
from kprobe.agent.ringbuf import RingReader
from kprobe.agent.self_cost import SelfCost
from kprobe.agent.status import RecorderStats
from kprobe.masking import mask_columns
from kprobe.schemas import layouts as L
from kprobe.schemas.store_tables import CGROUP_CPU_TABLE, CPU_IRQ_TABLE, HOSTS_TABLE, MEMCG_MEMBERS_TABLE
from kprobe.schemas.tables import BY_NAME, EventType, load_converters
from kprobe.sinks.sink import Sink

log = logging.getLogger("kprobe.agent")


def constant_column(n: int, value: str) -> np.ndarray:
    """An object column holding one str object n times. ``np.full(n, s, dtype=object)`` casts
    through a unicode array and makes n distinct str objects (30x slower, and the Kafka sink's
    encoder groups rows by object identity)."""
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def join_records(parts: list[np.ndarray]) -> np.ndarray:
    """One array of the drained pieces of a ring (a piece per drain tick: thousands per flush).

    Why bytes: ``np.concatenate`` promotes structured dtypes field by field in Python for every
    piece (89 ms for 3000 pieces of off-CPU records, a third of the drain thread's CPU under
    pgbench); the pieces share one dtype, so their bytes are simply laid end to end (4 ms)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(parts[0].dtype)


#: Store batch interval of an embedded recording: each chDB insert costs the same whatever its size.
EMBEDDED_FLUSH_MS = 15000.0
#: With Kafka the dataflows' freshness waits on the batch interval.
KAFKA_FLUSH_MS = 1000.0
#: A small table waits this many batch intervals (a query still flushes everything first).
HOLD_FLUSHES = 4


@dataclass
class RecorderConfig:
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    poll_ms: float = 5.0      # shortest ring polling interval (used while rings fill fast)
    max_poll_ms: float = 250.0  # longest sleep while rings are quiet; a ring 1/8 full wakes the drain at once
    flush_ms: float = EMBEDDED_FLUSH_MS  # `kprobe record`'s default; KAFKA_FLUSH_MS with --kafka
    flush_rows: int = 1_000_000
    # A table with fewer than hold_rows pending rows waits for a flush at most hold_ms apart instead of
    # every flush_ms: each insert costs the embedded engine the same whatever its size, and most tables
    # get a few rows a second. A query's flush request writes everything. 0: every flush writes all.
    hold_ms: float | None = None   # None: HOLD_FLUSHES batch intervals
    hold_rows: int = 5000
    writer_nice: int = 0      # >0: the writer yields the CPU to the service it observes (lags on a saturated host)
    queue_batches: int = 64
    retention_s: float | None = 6 * 3600
    retention_bytes: int | None = 2 << 30
    # how often retention looks at the store's parts: each pass is a system.parts query (50-100 ms of the
    # engine's CPU), ~0.5 % of a core every 10 s; a minute overshoots the size cap by a minute of rows at most
    retention_check_s: float = 60.0
    status_path: Path | None = None
    kubelet: KubeletConfig | None = None   # names processes' pods (agent/pod_identity.py); None: cgroup ids only
    # the shared objects' start-up code, run once, is unmapped this long after start and then at this
    # interval (agent/code_pages.py): the resident set is then the code in use; the C heap's free pages
    # are released on the same tick (agent/heap_trim.py). 0: never. Each minute, not each five: with
    # trims only at start-up, pgbench's code paths made the libraries' code resident 45 -> 164 MB within a
    # minute (4 min: median 298 MB against 241 MB), for the same recorder CPU (2.2 -> 2.3 % on average)
    trim_code_s: float = 60.0
    trim_first_s: float = 5.0
    # the ``host`` on every row (agent/host_identity.py HostIdentity.key): the configured name, or "" for the
    # hostname (machine and boot id are in every heartbeat row)
    host: str = ""
    heartbeat_ms: int = DEFAULT_INTERVAL_MS   # a ``hosts`` row this often (agent/heartbeat.py); 0: none
    # added to every UTC time this agent writes: an artificial clock skew, for tests of cross-host clock
    # alignment (causal/hosts.py estimates it back); 0 in production
    clock_skew_ns: int = 0

    @property
    def hold_s(self) -> float:
        """How long a small table's rows may wait: HOLD_FLUSHES batch intervals unless set."""
        return (HOLD_FLUSHES * self.flush_ms if self.hold_ms is None else self.hold_ms) / 1000

    @property
    def drains_early(self) -> bool:
        """False when the polling interval is set above the quiet maximum: the caller asks for no
        drain between polls (neither ring wake-ups nor flush deadlines), as the drop tests do."""
        return self.poll_ms <= self.max_poll_ms


@dataclass
class Batch:
    et: EventType
    records: np.ndarray
    clock_offset_ns: int


@dataclass
class MemcgRequest:
    """Memcgs found in reclaim by the drain thread; the writer lists their members (two /proc reads per
    member, ~0.07 ms each here, that would otherwise hold up draining)."""

    memcg_ids: list[int]
    ts_ns: int
    mono_ns: int


INFLIGHT_SCAN_NS = 100_000_000    # the in-flight reclaim map is listed at most this often
INFLIGHT_MAX = 1024


@dataclass
class HeartbeatDue:
    """The drain thread's tick for a ``hosts`` row: the writer builds it then, and stores it with the side tables
    at the next complete flush (or a query's): an embedded insert costs ~15 ms of CPU whatever its size, so a
    beat every 5 s written alone would cost the recorder more than its ring draining on a quiet host."""

    ts_ns: int
    final: bool = False


@dataclass
class SideRows:
    """Samples read by the drain thread (CPU quota counters, interrupt time) for the writer to store
    with the next complete flush."""

    table: str
    cols: dict[str, np.ndarray]


@dataclass
class Recorder:
    config: RecorderConfig
    sink: Sink
    retention: Callable[[int | None, int | None, int], int] | None = None
    stats: RecorderStats = field(default_factory=RecorderStats)
    host: str = ""
    probes: ProbeSet | None = None
    _readers: dict[str, RingReader] = field(default_factory=dict)
    _queue: queue.Queue = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _drained_all: threading.Event = field(default_factory=threading.Event)
    _flush_req: threading.Event = field(default_factory=threading.Event)
    _identities: IdentityCache = field(default_factory=IdentityCache)
    _clock: clock.ClockSync = field(default_factory=clock.sample)
    _waiter: RingWaiter | None = None
    _memcgs: MemcgMembers = field(default_factory=MemcgMembers)
    _inflight_scan_ns: int = 0
    _self_cost: SelfCost = field(default_factory=SelfCost)
    _cgroup_cpu: CgroupCpu = field(default_factory=CgroupCpu)
    _cpu_irq: CpuIrq = field(default_factory=CpuIrq)
    _block_sums: BlockSums | None = None
    _fd_paths: FdPaths | None = None
    _heartbeat: Heartbeat | None = None
    _node_watched: set[int] = field(default_factory=set)
    _node_scan_ns: int = 0

    def __post_init__(self) -> None:
        ident = HostIdentity.read()
        self.host = self.host or ident.key(self.config.host or None)
        node = self.config.probes.node
        self._heartbeat = Heartbeat(self.host, ident, self.config.heartbeat_ms, self.config.clock_skew_ns,
                                    node.describe() if node is not None else "")
        self.stats.host_key = self.host
        self._queue = queue.Queue(maxsize=self.config.queue_batches)
        counters = self.stats.pod_identity
        self._identities = IdentityCache(pods=pod_directory(self.config.kubelet, counters), counters=counters)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, probes: ProbeSet | None = None) -> Recorder:
        """Start draining ``probes`` (opened here when not given: a caller that gives up privileges
        opens them first, drops, and only then starts what runs in threads)."""
        self.probes = probes if probes is not None else ProbeSet(self.config.probes).open()
        for et in self.probes.loaded_event_types():
            m = self.probes.ring_map(et)
            self._readers[et.name] = RingReader(m.fd, m.max_entries, et.record, et.name)
        self._waiter = RingWaiter(r.map_fd for r in self._readers.values() if self.config.drains_early)
        self._block_sums = self.probes.block_sums()
        self._fd_paths = None if self.probes.config.traces_opens else FdPaths()
        self.stats.set_probes(self.probes, self._clock)
        self._threads = [
            threading.Thread(target=self._drain_loop, name="kprobe-drain", daemon=True),
            threading.Thread(target=self._write_loop, name="kprobe-write", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def watch_pid(self, pid: int) -> None:
        assert self.probes is not None
        self.probes.watch_pid(pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Final drain, flush everything queued, detach. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._waiter is not None:
            self._waiter.poke()
        for t in getattr(self, "_threads", []):
            t.join(timeout)
        # the last status shows the memory split as of the end (every insert done, rings still mapped),
        # whatever the split's refresh interval
        self.stats.resources = self._self_cost.sample(sum(self.stats.drained.values()), breakdown=True)
        if self.probes is not None:
            self.stats.update_kernel(self.probes)
            for r in self._readers.values():
                r.close()
            self._readers.clear()
            self.probes.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.close()
        self.stats.finished = True
        self._write_status()

    def wait_drained(self, timeout: float = 5.0) -> bool:
        """Block until everything committed to the rings before this call is in the sink."""
        deadline = time.monotonic() + timeout
        target = time.monotonic_ns()
        self._flush_req.set()
        if self._waiter is not None:
            self._waiter.poke()
        while time.monotonic() < deadline:
            # The marker of a flush that started after `target` follows every record committed
            # before it; newer batches still queued behind it do not matter (a slow writer on a
            # loaded host never sees an empty queue).
            if self.stats.last_written_mono_ns >= target:
                return True
            time.sleep(0.01)
        return False

    def fresh(self, max_lag_s: float = 0.25, timeout: float = 5.0) -> bool:
        """Make the store at most ``max_lag_s`` behind the rings before a query reads it.

        Flushes are infrequent (each insert has a fixed cost); a query asks for one only
        when the last one is older than the lag it tolerates, so a burst of queries
        (``kprobe why`` sends several) pays for at most one flush.
        """
        if time.monotonic_ns() - self.stats.last_written_mono_ns <= max_lag_s * 1e9:
            return True
        return self.wait_drained(timeout)

    # -- threads -------------------------------------------------------------------------------
    def _drain_loop(self) -> None:
        """Drain every ring, then sleep: short while a ring fills fast, up to max_poll_ms while all
        are quiet, and never past the next flush.

        A quiet host costs a few wake-ups a second; a burst does not wait for the timer: the
        kernel wakes this thread once a ring is 1/8 full (RingWaiter), and while one was more than
        1/16 full when last drained the interval stays at its shortest.
        """
        min_poll = self.config.poll_ms / 1000
        max_poll = max(min_poll, self.config.max_poll_ms / 1000)
        poll = min_poll
        flush_every = self.config.flush_ms / 1000
        pending: dict[str, list[np.ndarray]] = {}
        full: list[int] = []       # memcg ids of the memcg reclaim stalls drained this tick
        rows = 0
        last_flush = last_status = last_sums = last_complete = time.monotonic()
        hold_every = max(flush_every, self.config.hold_s)
        while True:
            stopping = self._stop.is_set()
            flush_req = self._flush_req.is_set()
            if flush_req:  # consumed here, where it was seen: a request set later gets its own pass
                self._flush_req.clear()
            tick_mono = time.monotonic_ns()
            fullest = 0.0
            for name, reader in self._readers.items():
                fullest = max(fullest, reader.pending_bytes() / reader.size)
                recs = reader.drain()
                if recs.size:
                    pending.setdefault(name, []).append(recs)
                    rows += len(recs)
                    self.stats.drained[name] = self.stats.drained.get(name, 0) + len(recs)
                    if name == "reclaim":
                        full.extend(recs["cgroup_id"][recs["kind"] == L.KP_RECLAIM_MEMCG].tolist())
                    elif name == "offcpu" and self._fd_paths is not None:
                        rows += self._name_files(recs, pending)
            self._snapshot_memcgs(full, tick_mono)
            if self._cgroup_cpu.due(tick_mono):       # CPU quota throttling counters (agent/cgroup_cpu.py)
                self._sample_cgroup_cpu(tick_mono)
            if self._cpu_irq.due(tick_mono):          # interrupt time per CPU (agent/cpu_irq.py)
                self._sample_cpu_irq()
            self._rescan_node(tick_mono)
            if self._heartbeat is not None and self._heartbeat.due(tick_mono):
                self._queue.put(HeartbeatDue(self._wall_ns()))
            full = []
            now = time.monotonic()
            if self._block_sums is not None and (stopping or flush_req or now - last_sums >= 1.0):
                last_sums = now
                sums = self._read_block_sums()
                if sums.size:
                    pending.setdefault("block_io", []).append(sums)
                    rows += len(sums)
            if stopping or flush_req or now - last_flush >= flush_every or rows >= self.config.flush_rows:
                self._clock = clock.sample(16)
                everything = stopping or flush_req or now - last_complete >= hold_every
                for name in list(pending):
                    lst = pending[name]
                    recs = join_records(lst)
                    if not everything and len(recs) < self.config.hold_rows:
                        pending[name] = [recs]     # a small batch waits for the next complete flush
                        continue
                    self._queue.put(Batch(BY_NAME[name], recs, self._clock.offset_ns + self.config.clock_skew_ns))
                    del pending[name]
                rows = sum(len(x) for lst in pending.values() for x in lst)
                if everything:
                    self._queue.put(tick_mono)  # marks "everything drained before this instant is queued"
                    last_complete = now
                last_flush = now
            if now - last_status >= 1.0 and self.probes is not None:
                self.stats.update_kernel(self.probes)
                self.stats.clock = self._clock
                self.stats.resources = self._self_cost.sample(sum(self.stats.drained.values()))
                last_status = now
            if stopping:
                if self._heartbeat is not None and self._heartbeat.interval_ms > 0:
                    self._queue.put(HeartbeatDue(self._wall_ns(), final=True))
                self._queue.put(None)
                return
            poll = min_poll if fullest > 1 / 16 else min(max_poll, poll * 2)
            assert self._waiter is not None
            sleep = poll
            if self.config.drains_early:
                sleep = min(poll, max(0.0, last_flush + flush_every - time.monotonic()))
            self._waiter.wait(sleep)

    def _name_files(self, offcpu: np.ndarray, pending: dict[str, list[np.ndarray]]) -> int:
        """fd_open rows for the files blocked calls waited on (named by the kernel: agent/fd_paths.py)."""
        assert self._fd_paths is not None
        named = self._fd_paths.rows(offcpu)
        if named.size:
            pending.setdefault("fd_open", []).append(named)
        self.stats.file_names = {"by_path": self._fd_paths.resolved, "by_inode": self._fd_paths.unresolved}
        return len(named)

    def _read_block_sums(self) -> np.ndarray:
        """The kernel's sums of fast block requests (one generation a second), as block_io records."""
        assert self._block_sums is not None
        try:
            recs = self._block_sums.tick()
        except Exception as e:     # counted and shown; the requests stay in the map for the next tick
            self.stats.last_error = f"block request sums: {e}"
            log.error("reading the block request sums failed: %s", e)
            return np.empty(0, dtype=L.KP_BLOCK_IO)
        self.stats.block_sums["rows"] = self.stats.block_sums.get("rows", 0) + len(recs)
        self.stats.block_sums["requests"] = self._block_sums.requests_read
        self.stats.block_sums["deferred"] = self._block_sums.deferred
        return recs

    def _snapshot_memcgs(self, finished: list[int], now_mono: int) -> None:
        """Ask the writer for the members of the memcgs in reclaim: those stalled now (the probe's
        in-flight map, listed every INFLIGHT_SCAN_NS) and those whose stall just ended; each memcg
        at most once a second.

        The in-flight list is what catches a long stall while it lasts: its row only
        arrives when it ends, and by then whoever filled the cgroup may have left it.
        """
        ids = list(finished)
        if now_mono - self._inflight_scan_ns >= INFLIGHT_SCAN_NS and self.probes is not None \
                and "memory" in self.probes.objects:
            self._inflight_scan_ns = now_mono
            try:
                m = self.probes.objects["memory"].map("reclaim_state")
                _, st = m.entries(np.dtype(np.uint32), L.KP_RECLAIM_INFLIGHT, INFLIGHT_MAX)
                ids.extend(st["cgroup_id"][st["kind"] == L.KP_RECLAIM_MEMCG].tolist())
            except Exception as e:     # a best effort: never stop the drain for it
                self.stats.last_error = f"reclaim in-flight map: {e}"
        due = self._memcgs.due(ids, now_mono) if ids else []
        if due:
            self._queue.put(MemcgRequest(due, self._wall_ns(), now_mono))

    def _write_loop(self) -> None:
        try:  # this thread only (Linux: a tid is a "process" for setpriority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.writer_nice)
        except OSError as e:
            log.warning("cannot lower the writer's priority: %s", e)
        load_converters()     # start-up cost at start-up, before the first trim of library code
        last_retention = time.monotonic()
        next_trim = last_retention + self.config.trim_first_s
        last_status = 0.0
        # samples of the side tables wait for the complete flush (or a query's): an insert costs the
        # embedded engine ~15 ms whatever its size, and they come every second while they matter
        side: dict[str, list[dict[str, np.ndarray]]] = {}
        while True:
            item = self._queue.get()
            if item is None:
                self._write_side(side)
                return
            if isinstance(item, int):
                self._write_side(side)
                self.stats.last_written_mono_ns = item
            elif isinstance(item, MemcgRequest):
                self._write_memcg_members(item)
            elif isinstance(item, SideRows):
                side.setdefault(item.table, []).append(item.cols)
            elif isinstance(item, HeartbeatDue):
                row = self._heartbeat_row(item)
                if row is not None:
                    side.setdefault(HOSTS_TABLE, []).append(row)
            else:
                self._write_batch(item)
            now = time.monotonic()
            if now - last_status >= 1.0:
                self._write_status()
                last_status = now
            if self.retention is not None and now - last_retention >= self.config.retention_check_s:
                last_retention = now
                self._apply_retention()
            if self.config.trim_code_s and now >= next_trim:
                next_trim = now + self.config.trim_code_s
                self.stats.code_trimmed_mb = round(code_pages.trim(code_pages.SHARED_OBJECTS) / 1024, 1)
                heap_trim.trim()

    def _write_batch(self, batch: Batch) -> None:
        et = batch.et
        bad = row_checks.impossible(batch.records)
        if bad.any():
            n_bad = int(bad.sum())
            self.stats.rejected[et.name] = self.stats.rejected.get(et.name, 0) + n_bad
            log.warning("rejected %d %s rows with impossible times or ids (kprobe stats: rejected): %s", n_bad,
                        et.name, row_checks.sample(batch.records[bad]))
            batch = Batch(et, batch.records[~bad], batch.clock_offset_ns)
            if not len(batch.records):
                return
        try:
            # a file path named after a card number is masked before any sink (store or Kafka) sees it
            cols = mask_columns(et.columns(batch.records, batch.clock_offset_ns))
            if et.name == "proc":
                execs = cols["tgid"][cols["kind"] == "exec"]
                self._identities.forget(execs)
            tg = cols.get("tgid", cols.get("victim_pid"))
            cols["host"] = constant_column(len(batch.records), self.host)
            if "ts" in cols and len(cols["ts"]):
                self.stats.last_event_ts = max(self.stats.last_event_ts, int(cols["ts"].max()))
            cols.update(self._identities.enrich(tg, len(batch.records)))  # service, namespace, pod
            n = self.sink.write(et.name, cols)
            self.stats.written[et.name] = self.stats.written.get(et.name, 0) + n
            self._write_identities()
        except Exception as e:  # a failed write is counted and logged, never silent
            self.stats.write_errors[et.name] = self.stats.write_errors.get(et.name, 0) + len(batch.records)
            self.stats.last_error = f"{et.name}: {e}"
            log.error("write of %d %s events failed: %s", len(batch.records), et.name, e)

    def _wall_ns(self) -> int:
        """UTC now as this agent writes it (with the configured artificial skew, like its event rows)."""
        return time.time_ns() + self.config.clock_skew_ns

    def _rescan_node(self, now_mono: int) -> None:
        """One agent per node: watch the node's processes the exec hook cannot see (already running at start,
        entered by setns without exec, moved into a cgroup v1), every node_filter.RESCAN_S."""
        node = self.config.probes.node
        if node is None or self.probes is None or now_mono - self._node_scan_ns < RESCAN_S * 1e9:
            return
        self._node_scan_ns = now_mono
        try:
            pids = set(node.scan())
            for pid in pids - self._node_watched:
                self.probes.watch_pid(pid)
            self._node_watched = pids
            self.stats.node_filter["processes"] = len(pids)
            self.stats.node_filter["rescans"] = self.stats.node_filter.get("rescans", 0) + 1
        except Exception as e:     # a best effort: a /proc read must never stop the drain
            self.stats.last_error = f"node filter rescan: {e}"

    def _heartbeat_row(self, due: HeartbeatDue) -> dict[str, np.ndarray] | None:
        """This agent's ``hosts`` row: recording, how far its rows reached, its clock (agent/heartbeat.py)."""
        assert self._heartbeat is not None
        try:
            return self._heartbeat.row(due.ts_ns, self._clock.error_ns, self.stats.last_event_ts,
                                       sum(self.stats.written.values()), self.stats.total_drops(), due.final)
        except Exception as e:     # counted like a failed write: the beat is lost, never the drain
            self.stats.write_errors[HOSTS_TABLE] = self.stats.write_errors.get(HOSTS_TABLE, 0) + 1
            self.stats.last_error = f"{HOSTS_TABLE}: {e}"
            return None

    def _write_memcg_members(self, req: MemcgRequest) -> None:
        cols = self._memcgs.snapshot(req.memcg_ids, req.ts_ns, self.host, req.mono_ns)
        s, table = self.stats.memcg_snapshots, MEMCG_MEMBERS_TABLE
        s["snapshots"] = s.get("snapshots", 0) + len(req.memcg_ids)
        s["truncated_members"] = self._memcgs.truncated
        s["unresolved_memcgs"] = self._memcgs.unresolved
        if cols is None:
            return
        s["member_rows"] = s.get("member_rows", 0) + len(cols["tgid"])
        self._write_table(table, cols)

    def _write_table(self, table: str, cols: dict[str, np.ndarray]) -> None:
        """A side table's rows (memcg members, CPU quota counters), counted and logged like an event batch."""
        n = len(next(iter(cols.values()), ()))
        try:
            self.stats.written[table] = self.stats.written.get(table, 0) + self.sink.write(table, cols)
        except Exception as e:
            self.stats.write_errors[table] = self.stats.write_errors.get(table, 0) + n
            self.stats.last_error = f"{table}: {e}"
            log.error("write of %d %s rows failed: %s", n, table, e)

    def _sample_cgroup_cpu(self, now_mono: int) -> None:
        """Read the counters now, on the drain thread: their time must be when they were read, and the
        writer can be seconds behind (a cpu.stat read is ~10 µs; members are read only while throttled)."""
        try:
            cols = self._cgroup_cpu.sample(self._wall_ns(), self.host, now_mono)
        except Exception as e:     # a best effort: a cgroup file read must never stop the drain
            self.stats.last_error = f"{CGROUP_CPU_TABLE}: {e}"
            return
        finally:
            self.stats.cgroup_cpu = dict(self._cgroup_cpu.stats)
        if cols is not None:
            self._queue.put(SideRows(CGROUP_CPU_TABLE, cols))

    def _sample_cpu_irq(self) -> None:
        """Read the per-CPU interrupt counters now, on the drain thread (two small /proc reads)."""
        try:
            cols = self._cpu_irq.sample(self._wall_ns(), self.host)
        except Exception as e:     # a best effort: a /proc read must never stop the drain
            self.stats.last_error = f"{CPU_IRQ_TABLE}: {e}"
            return
        finally:
            self.stats.cpu_irq = dict(self._cpu_irq.stats)
        if cols is not None:
            self._queue.put(SideRows(CPU_IRQ_TABLE, cols))

    def _write_side(self, side: dict[str, list[dict[str, np.ndarray]]]) -> None:
        """The side tables' held samples (CPU quota counters, interrupt time), one insert per table."""
        for table, parts in side.items():
            cols = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            self._write_table(table, cols)
        side.clear()

    def _write_identities(self) -> None:
        new = self._identities.take_new()
        if not new:
            return
        # a command line can carry anything its caller typed, card numbers included
        self.sink.write("processes", mask_columns(processes_columns(new, self.host, self._wall_ns()),
                                                  ("cmdline", "exe", "comm")))

    def _apply_retention(self) -> None:
        c = self.config
        try:
            assert self.retention is not None
            dropped = self.retention(
                int(c.retention_s * 1e9) if c.retention_s else None, c.retention_bytes, time.time_ns()
            )
            self.stats.partitions_dropped += dropped
        except Exception as e:
            self.stats.last_error = f"retention: {e}"
            log.warning("retention failed: %s", e)

    def _write_status(self) -> None:
        """status.json; a failure (disk full, a value that does not encode) is logged and shown in
        last_error, never allowed to stop the writer thread and with it every insert."""
        if self.config.status_path is None:
            return
        try:
            self.stats.save(self.config.status_path)
        except Exception as e:
            self.stats.status_errors += 1
            self.stats.last_error = f"status.json: {e}"
            if self.stats.status_errors == 1:
                log.error("cannot write %s (counted in status_errors): %s", self.config.status_path, e)
