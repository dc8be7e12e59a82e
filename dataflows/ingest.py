"""Ingest dataflow: kprobe topics -> ClickHouse server, exactly once, with a dead-letter topic.

    Kafka (kprobe.events.*) ──► decode (wire format) ──► ClickHouse sink ──► tables + batch ledger
                                       │ undecodable            │ unstorable
                                       └────────► kprobe.dlq ◄──┘

Exactly-once = at-least-once + idempotent sink: the source's offsets are part of bytewax's recovery
snapshot and only ever cover messages the sink acknowledged (kafka_io.Acked); a restarted flow
re-reads what was in flight, and :class:`kprobe.sinks.clickhouse_server.ServerSink` stores each batch id
once (ledger + row check, see there). A malformed message goes to the DLQ (and is counted) and
the flow keeps going; a ClickHouse outage blocks the flow (the write is retried with backoff, the
epoch never commits, Kafka keeps the data) and it resumes where it stopped.

Run it with ``kprobe dataflow ingest`` (several worker threads and/or processes).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import numpy as np
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import ServerException

from kprobe.dataflows.kafka_io import Acked, DeadLetters, KafkaConfig, KafkaPartitionSource, RawMessage
from kprobe.dataflows.metrics import FlowMetrics
from kprobe.schemas.store_tables import AGENT_TABLES
from kprobe.sinks.clickhouse_server import InsertRefused, ServerSink
from kprobe.topics import wire
from kprobe.topics.malloc import keep_freed_memory
from kprobe.topics.names import PREFIX, data_topics, dlq_topic

log = logging.getLogger("kprobe.dataflow")


@dataclass
class IngestConfig:
    brokers: str
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000
    clickhouse_http_port: int = 8123  # rows are inserted over HTTP (Native format), see sinks/clickhouse_server
    database: str = "kprobe"
    prefix: str = PREFIX
    workers: int = 2  # per process
    processes: int = 1
    process_id: int | None = None  # set in each child of a multi-process run
    base_port: int = 2101  # timely cluster addresses: base_port + process id
    state_dir: Path = field(default_factory=lambda: Path("/var/lib/kprobe/dataflow"))
    epoch_s: float = 1.0
    metrics_port: int | None = None  # + process id; None: no endpoint
    metrics_bind: str = "127.0.0.1"
    # Write rounds: ClickHouse 18.16 spends ~2.7 us of CPU a row on 32k-row INSERTs (new parts, then
    # their merges) and ~0.6 us on 1M-row ones, so the writer waits up to insert_linger_s for
    # insert_min_rows before writing (a quiet stream pays the linger in freshness; a busy one fills
    # rounds at once) and takes at most insert_rows (the server squashes to ~1M-row parts anyway).
    insert_rows: int = 1_048_576
    insert_min_rows: int = 262_144
    insert_linger_s: float = 0.3
    writers: int = 2  # concurrent write rounds per worker (each its own connection), acknowledged in order
    queue_bytes: int = 256 << 20  # messages handed to the writer, not yet stored; beyond this the flow waits
    batch_key: bytes | None = None  # the deployment's batch key: batches without a valid HMAC go to the DLQ


@dataclass
class Decoded:
    raw: RawMessage
    header: wire.BatchHeader | None
    batch: pa.RecordBatch | None
    error: str = ""


def _rows(d: Decoded) -> int:
    return d.header.rows if d.header is not None else 0


def decode(raw: RawMessage, key: bytes | None = None) -> Decoded:
    try:
        header, rb = wire.decode(raw.value, key)
        return Decoded(raw, header, rb)
    except wire.WireError as e:
        return Decoded(raw, None, None, f"decode: {e}")
    except Exception as e:  # anything odd in a message is the message's fault, never the flow's
        return Decoded(raw, None, None, f"decode: {type(e).__name__}: {e}")


def _batch_id(d: Decoded) -> int | None:
    return d.header.batch_id if d.header is not None else None


@dataclass
class RoundOrder:
    """Write rounds numbered in reading order, released for acknowledgement strictly in that order.

    ``begin`` numbers a round and marks its batch ids in flight; ``finish`` returns the rounds
    (oldest first) whose messages may now be acknowledged: the finished one and any later ones
    that were waiting for it, or nothing while an earlier round is still being written.
    """

    next_round: int = 0
    next_release: int = 0
    in_flight: dict[int, list] = field(default_factory=dict)
    in_flight_ids: set[int] = field(default_factory=set)
    finished: dict[int, list] = field(default_factory=dict)

    def begin(self, items: list, batch_ids: list[int | None]) -> int:
        number = self.next_round
        self.next_round += 1
        self.in_flight[number] = items
        self.in_flight_ids.update(b for b in batch_ids if b is not None)
        return number

    def finish(self, number: int, batch_ids: list[int | None]) -> list[list]:
        self.finished[number] = self.in_flight.pop(number)
        for b in batch_ids:
            self.in_flight_ids.discard(b)  # type: ignore[arg-type]
        out = []
        while self.next_release in self.finished:
            out.append(self.finished.pop(self.next_release))
            self.next_release += 1
        return out


class _Writer:
    """One writer thread's connections: its own ServerSink (clickhouse-driver is not thread-safe)
    and dead-letter producer. Stores a round of messages; the caller acknowledges them."""

    def __init__(self, cfg: IngestConfig, metrics: FlowMetrics):
        self.cfg = cfg
        self.metrics = metrics
        self.dlq = DeadLetters(cfg.brokers, dlq_topic(cfg.prefix), metrics)
        self.sink = self._connect()

    def _connect(self) -> ServerSink:
        delay = 0.5
        while True:
            try:
                return ServerSink(self.cfg.clickhouse_host, self.cfg.clickhouse_port, self.cfg.database,
                                  http_port=self.cfg.clickhouse_http_port).connect()
            except (ClickHouseError, OSError, EOFError) as e:
                self.metrics.incr("sink_errors")
                self.metrics.last_error = f"clickhouse connect: {e}"
                log.warning("ClickHouse not reachable (%s), retrying in %.1f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def handle(self, items: list[Decoded]) -> None:
        """Store or dead-letter every message of the round; returns once all are durable."""
        good = []
        for d in items:
            if d.header is None or d.batch is None:
                self.dlq.send(d.raw, d.error)
                continue
            problem = self.sink.check(d.header, d.batch)
            if problem:
                self.dlq.send(d.raw, f"schema: {problem}")
                continue
            good.append(d)
        if good:
            self._write(good)
        self.dlq.flush()

    def _write(self, good: list[Decoded]) -> None:
        delay = 0.5
        while True:
            try:
                self._store([(d.header, d.batch) for d in good])  # type: ignore[misc]
                break
            except (ServerException, InsertRefused) as e:  # the server refused data: find the culprit(s)
                self.metrics.incr("sink_errors")
                self.metrics.last_error = f"clickhouse: {e}"
                if len(good) == 1:
                    self.dlq.send(good[0].raw, f"clickhouse: {str(e)[:300]}")
                    break
                for d in good:
                    self._write([d])
                return
            except (ClickHouseError, OSError, EOFError) as e:  # server gone: wait for it, never skip
                self.metrics.incr("sink_errors")
                self.metrics.last_error = f"clickhouse: {e}"
                log.warning("ClickHouse write failed (%s), retrying in %.1f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                self.sink.close()
                self.sink = self._connect()
        now = time.time_ns()
        newest = max((d.header.produced_ns for d in good if d.header), default=0)
        if newest:
            self.metrics.freshness_s = max(0.0, (now - newest) / 1e9)
        for d in good:  # per event: when it happened in the kernel (end of an interval) -> now queryable
            if d.header is None or d.batch is None or d.header.table in AGENT_TABLES:
                continue
            names = d.batch.schema.names
            col = "end_ts" if "end_ts" in names else "ts" if "ts" in names else None
            if col is not None and d.batch.num_rows:
                ts = d.batch.column(col).to_numpy(zero_copy_only=False)
                ts = ts[ts > 0].astype(np.int64)
                self.metrics.observe_freshness((now - ts) / 1e9)

    def _store(self, batches: list[tuple[wire.BatchHeader, pa.RecordBatch]]) -> None:
        res = self.sink.write_batches(batches)
        self.metrics.incr("write_rounds")
        self.metrics.incr("insert_requests", len(res.tables))
        for table, n in res.tables.items():
            self.metrics.add("rows_written", table, n)
        if res.duplicate_rows:
            self.metrics.incr("duplicate_rows", res.duplicate_rows)
            self.metrics.incr("repaired_batches", res.repaired_batches)

    def close(self) -> None:
        self.sink.close()


class _ClickHousePartition(StatelessSinkPartition[Decoded]):
    """Hands messages to writer threads, so reading Kafka and writing ClickHouse overlap.

    Why threads: a bytewax worker runs its operators one after the other, so with the write in
    ``write_batch`` the worker could not poll Kafka while an INSERT ran, and whatever piled up
    meanwhile became one huge next write (seconds of nothing, then everything: freshness suffered
    and ClickHouse sat idle half the time). A writer takes the oldest queued messages as a round
    (up to ``insert_rows``) and stores it (one round of the batch ledger, one INSERT per table).
    With ``writers`` > 1 a second round starts while one is in flight once ``insert_min_rows`` are
    queued, so ClickHouse (one core per INSERT) can use two cores on a backlog. Rounds are numbered
    in reading order and acknowledged to the source strictly in that order (a round that finishes
    early waits for the ones before it), so a recovery snapshot never covers a message that is not
    stored. Two copies of one batch id (an agent re-send) are never in flight at once: the ledger's
    exactly-once check assumes one writer per batch. The queue is bounded (``queue_bytes``): when
    ClickHouse is slow or down, ``write_batch`` blocks and the flow stops reading.
    """

    def __init__(self, cfg: IngestConfig, metrics: FlowMetrics, acked: Acked):
        self.cfg = cfg
        self.metrics = metrics
        self.acked = acked
        self._queue: deque[tuple[Decoded, float]] = deque()  # (message, when queued)
        self._queued_bytes = 0  # queued or in flight
        self._queued_rows = 0  # queued only
        self._rounds = RoundOrder()
        self._closing = False  # close() called: write what is queued without lingering
        self._done = False  # ... and then stop
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self._writers = [_Writer(cfg, metrics) for _ in range(max(1, cfg.writers))]
        self._threads = [threading.Thread(target=self._run, args=(w,), name=f"kprobe-ch-writer-{i}", daemon=True)
                         for i, w in enumerate(self._writers)]
        for t in self._threads:
            t.start()

    # -- bytewax side ---------------------------------------------------------------------------
    def write_batch(self, items: list[Decoded]) -> None:
        with self._cond:
            for d in items:
                while self._queued_bytes >= self.cfg.queue_bytes and self._failed is None:
                    self._cond.wait(1.0)
                self._raise_failed()
                self._queue.append((d, time.monotonic()))
                self._queued_bytes += len(d.raw.value)
                self._queued_rows += _rows(d)
                self._cond.notify_all()

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise RuntimeError(f"ClickHouse writer failed: {self._failed!r}") from self._failed

    def close(self) -> None:
        """Store what is queued (a clean shutdown leaves nothing to re-read), then disconnect."""
        with self._cond:
            self._closing = True  # no more lingering: write what is there
            self._cond.notify_all()
            while (self._queue or self._rounds.in_flight) and self._failed is None:
                self._cond.wait(1.0)
            self._done = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(30)
        for w in self._writers:
            w.close()
        self._raise_failed()

    # -- writer threads -------------------------------------------------------------------------
    def _ready(self) -> bool:
        """May a round start now? Caller holds the lock and the queue is not empty."""
        if _batch_id(self._queue[0][0]) in self._rounds.in_flight_ids:
            return False  # its twin is being written: after that round, the ledger knows it
        if self._closing or self._queued_rows >= self.cfg.insert_min_rows:
            return True
        if self._rounds.in_flight:  # a second round only for a real backlog: small rounds cost ClickHouse more
            return False
        return time.monotonic() - self._queue[0][1] >= self.cfg.insert_linger_s

    def _take(self) -> tuple[int, list[Decoded]] | None:
        """The next round (number, messages), or None once closed. Caller holds the lock."""
        while not (self._queue and self._ready()):
            if self._done and not self._queue:
                return None
            timeout = None
            if self._queue and not self._rounds.in_flight:
                timeout = max(0.001, self._queue[0][1] + self.cfg.insert_linger_s - time.monotonic())
            self._cond.wait(timeout)
        items = [self._queue.popleft()[0]]
        rows = _rows(items[0])
        while self._queue and rows + _rows(self._queue[0][0]) <= self.cfg.insert_rows \
                and _batch_id(self._queue[0][0]) not in self._rounds.in_flight_ids:
            items.append(self._queue.popleft()[0])
            rows += _rows(items[-1])
        self._queued_rows -= rows
        return self._rounds.begin(items, [_batch_id(d) for d in items]), items

    def _complete(self, number: int, items: list[Decoded]) -> None:
        """Round ``number`` is stored: acknowledge it and every finished round after it, in order."""
        for done in self._rounds.finish(number, [_batch_id(d) for d in items]):
            self.acked.ack([d.raw for d in done])  # only now may a snapshot move past them
            self._queued_bytes -= sum(len(d.raw.value) for d in done)
        self._cond.notify_all()

    def _run(self, writer: _Writer) -> None:
        try:
            while True:
                with self._cond:
                    taken = self._take()
                if taken is None:
                    return
                writer.handle(taken[1])
                with self._cond:
                    self._complete(*taken)
        except BaseException as e:  # surfaced by the next write_batch: the flow stops, a restart resumes
            log.exception("ClickHouse writer failed")
            with self._cond:
                self._failed = e
                self._cond.notify_all()


class ClickHouseSink(DynamicSink[Decoded]):
    def __init__(self, cfg: IngestConfig, metrics: FlowMetrics, acked: Acked):
        self.cfg = cfg
        self.metrics = metrics
        self.acked = acked

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ClickHousePartition:
        return _ClickHousePartition(self.cfg, self.metrics, self.acked)


def build_flow(cfg: IngestConfig, metrics: FlowMetrics) -> Dataflow:
    acked = Acked()  # source snapshots stop at what the sink acknowledged (see kafka_io)
    flow = Dataflow("kprobe_ingest")
    source = KafkaPartitionSource(KafkaConfig(cfg.brokers, data_topics(cfg.prefix)), metrics, acked)
    msgs = op.input("kafka", flow, source)
    decoded = op.map("decode", msgs, functools.partial(decode, key=cfg.batch_key))
    op.output("clickhouse", decoded, ClickHouseSink(cfg, metrics, acked))
    return flow


def run(cfg: IngestConfig) -> int:
    """Run the flow in this process (worker threads); with processes > 1, spawn the cluster."""
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig, init_db_dir

    from kprobe.api.prometheus import MetricsServer
    from kprobe.topics.admin import ensure_topics

    if cfg.processes > 1 and cfg.process_id is None:
        return _spawn_cluster(cfg)
    keep_freed_memory()  # 3 MB messages copied without page faults (topics/malloc.py)
    pid = cfg.process_id or 0
    delay = 1.0
    while True:  # Kafka down at start-up: wait for it (a Deployment would restart us anyway)
        try:
            ensure_topics(cfg.brokers, prefix=cfg.prefix)
            break
        except Exception as e:
            log.warning("Kafka at %s not usable yet (%s); retrying in %.0f s", cfg.brokers, e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    recovery = cfg.state_dir / "recovery"
    if pid == 0 and not any(recovery.glob("part-*.sqlite3")):
        recovery.mkdir(parents=True, exist_ok=True)
        init_db_dir(recovery, max(1, cfg.processes))
    else:
        for _ in range(300):  # process 0 creates the partitions
            if any(recovery.glob("part-*.sqlite3")):
                break
            time.sleep(0.1)
    metrics = FlowMetrics("ingest")
    server = (MetricsServer(cfg.metrics_port + pid, metrics.prometheus, cfg.metrics_bind).start()
              if cfg.metrics_port is not None else None)
    status = cfg.state_dir / f"ingest-{pid}.json"
    stop = threading.Event()

    def save_status() -> None:
        while not stop.wait(1.0):
            metrics.save(status)

    threading.Thread(target=save_status, name="kprobe-status", daemon=True).start()
    addresses = None
    if cfg.processes > 1:
        addresses = [f"127.0.0.1:{cfg.base_port + i}" for i in range(cfg.processes)]
    try:
        cli_main(build_flow(cfg, metrics), workers_per_process=cfg.workers, process_id=cfg.process_id if addresses
                 else None, addresses=addresses, epoch_interval=timedelta(seconds=cfg.epoch_s),
                 recovery_config=RecoveryConfig(str(recovery)))
    finally:
        stop.set()
        metrics.save(status)
        if server is not None:
            server.stop()
    return 0


def _spawn_cluster(cfg: IngestConfig) -> int:
    """One child per process id, same arguments; the first to fail stops the others."""
    argv = [sys.executable, "-m", "kprobe", "dataflow", "ingest", "--brokers", cfg.brokers,
            "--clickhouse", f"{cfg.clickhouse_host}:{cfg.clickhouse_port}", "--clickhouse-http-port",
            str(cfg.clickhouse_http_port), "--database", cfg.database,
            "--prefix", cfg.prefix, "--workers", str(cfg.workers), "--writers", str(cfg.writers),
            "--processes", str(cfg.processes),
            "--base-port", str(cfg.base_port), "--state-dir", str(cfg.state_dir), "--epoch-s", str(cfg.epoch_s)]
    if cfg.metrics_port is not None:
        argv += ["--metrics-port", str(cfg.metrics_port), "--metrics-bind", cfg.metrics_bind]
    children = [subprocess.Popen([*argv, "--process-id", str(i)]) for i in range(cfg.processes)]
    try:
        while True:
            for c in children:
                if c.poll() is not None:
                    for o in children:
                        if o.poll() is None:
                            o.terminate()
                    return c.returncode or 0
            time.sleep(0.5)
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
