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
from kprobe.malloc import keep_freed_memory
from kprobe.sinks.clickhouse_server import InsertRefused, ServerSink
from kprobe.topics import wire
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
    queue_bytes: int = 256 << 20  # messages handed to the writer, not yet stored; beyond this the flow waits


@dataclass
class Decoded:
    raw: RawMessage
    header: wire.BatchHeader | None
    batch: pa.RecordBatch | None
    error: str = ""


def _rows(d: Decoded) -> int:
    return d.header.rows if d.header is not None else 0


def decode(raw: RawMessage) -> Decoded:
    try:
        header, rb = wire.decode(raw.value)
        return Decoded(raw, header, rb)
    except wire.WireError as e:
        return Decoded(raw, None, None, f"decode: {e}")
    except Exception as e:  # anything odd in a message is the message's fault, never the flow's
        return Decoded(raw, None, None, f"decode: {type(e).__name__}: {e}")


class _ClickHousePartition(StatelessSinkPartition[Decoded]):
    """Hands messages to a writer thread, so reading Kafka and writing ClickHouse overlap.

    Why a thread: a bytewax worker runs its operators one after the other, so with the write in
    ``write_batch`` the worker could not poll Kafka while an INSERT ran, and whatever piled up
    meanwhile became one huge next write (seconds of nothing, then everything: freshness suffered
    and ClickHouse sat idle half the time). The writer takes what is queued (up to
    ``insert_rows``), stores it (one round of the batch ledger, one INSERT per table), then
    acknowledges those messages to the source, in the order they were read, so a recovery
    snapshot never covers a message that is not stored. The queue is bounded (``queue_bytes``):
    when ClickHouse is slow or down, ``write_batch`` blocks and the flow stops reading.
    """

    def __init__(self, cfg: IngestConfig, metrics: FlowMetrics, acked: Acked):
        self.cfg = cfg
        self.metrics = metrics
        self.acked = acked
        self.dlq = DeadLetters(cfg.brokers, dlq_topic(cfg.prefix), metrics)
        self.sink = self._connect()
        self._queue: deque[tuple[Decoded, float]] = deque()  # (message, when queued)
        self._queued_bytes = 0
        self._queued_rows = 0
        self._busy = False
        self._closing = False  # close() called: write what is queued without lingering
        self._done = False  # ... and then stop
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._writer, name="kprobe-ch-writer", daemon=True)
        self._thread.start()

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
            while (self._queue or self._busy) and self._failed is None:
                self._cond.wait(1.0)
            self._done = True
            self._cond.notify_all()
        self._thread.join(30)
        self.sink.close()
        self._raise_failed()

    # -- writer thread --------------------------------------------------------------------------
    def _take(self) -> list[Decoded] | None:
        """The next round: the oldest messages up to ``insert_rows``, once ``insert_min_rows`` are
        queued or the oldest has waited ``insert_linger_s`` (None: closed). Caller holds the lock."""
        while not self._queue:
            if self._done:
                return None
            self._cond.wait()
        while self._queued_rows < self.cfg.insert_min_rows and not self._closing:
            left = self._queue[0][1] + self.cfg.insert_linger_s - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        items = [self._queue.popleft()[0]]
        rows = _rows(items[0])
        while self._queue and rows + _rows(self._queue[0][0]) <= self.cfg.insert_rows:
            items.append(self._queue.popleft()[0])
            rows += _rows(items[-1])
        self._queued_rows -= rows
        self._busy = True
        return items

    def _writer(self) -> None:
        try:
            while True:
                with self._cond:
                    items = self._take()
                if items is None:
                    return
                self._handle(items)
                with self._cond:
                    self._busy = False
                    self._queued_bytes -= sum(len(d.raw.value) for d in items)
                    self._cond.notify_all()
        except BaseException as e:  # surfaced by the next write_batch: the flow stops, a restart resumes
            log.exception("ClickHouse writer failed")
            with self._cond:
                self._failed = e
                self._busy = False
                self._cond.notify_all()

    def _handle(self, items: list[Decoded]) -> None:
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
        self.acked.ack([d.raw for d in items])  # only now may a snapshot move past them

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
            if d.header is None or d.batch is None or d.header.table == "processes":
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
    decoded = op.map("decode", msgs, decode)
    op.output("clickhouse", decoded, ClickHouseSink(cfg, metrics, acked))
    return flow


def run(cfg: IngestConfig) -> int:
    """Run the flow in this process (worker threads); with processes > 1, spawn the cluster."""
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig, init_db_dir

    from kprobe.prometheus import MetricsServer
    from kprobe.topics.admin import ensure_topics

    if cfg.processes > 1 and cfg.process_id is None:
        return _spawn_cluster(cfg)
    keep_freed_memory()  # 3 MB messages copied without page faults (kprobe/malloc.py)
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
            "--prefix", cfg.prefix, "--workers", str(cfg.workers), "--processes", str(cfg.processes),
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
