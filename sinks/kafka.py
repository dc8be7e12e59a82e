"""The agent's Kafka sink: batches -> wire-format messages -> idempotent producer, or the disk spool.

Delivery contract: every row handed to :meth:`KafkaSink.write` ends in exactly one of
``delivered`` (acknowledged by all in-sync replicas), ``dropped[reason]`` or, while it waits,
``in_flight`` / ``spool``. ``accepted == delivered + dropped + in_flight + spooled`` at every
instant, and the counters are in status.json, ``kprobe stats`` and the Prometheus endpoint.

Two modes. DIRECT: messages go straight to librdkafka (idempotent: its retries never duplicate,
and per-partition order is kept). When the brokers are unreachable (all-brokers-down error,
a full local queue, or a delivery that times out) the sink switches to SPOOLING: new messages
are appended to a bounded on-disk queue, and messages that fail in flight are written there too,
under their sequence number so the spool stays in production order. A background thread waits
until nothing is in flight, then sends the spool oldest first, deleting each file once Kafka
acknowledged it, and returns to DIRECT when the spool is empty. A message whose delivery was
ambiguous (timed out but maybe written) may thus reach Kafka twice; both copies carry the same
batch id and the ClickHouse sink stores it once (see sinks/clickhouse_server.py).

One request in flight per broker connection (``max.in.flight.requests.per.connection=1``), on
purpose. With more, librdkafka's idempotent producer can report a message delivered that the
broker never wrote: request R1 (sequence 0) is refused with NOT_LEADER_OR_FOLLOWER while R2 (a
later sequence of the same partition) is already on the wire; if the broker becomes the leader
between the two, it accepts R2 (a producer it has no state for may start at any sequence), and
librdkafka, seeing R2 acknowledged, "implicitly acks" R1's messages as if they had been persisted
(rd_kafka_dr_implicit_ack; upstream report confluent-kafka-go#921). A new topic's partitions are
in exactly that state for ~1 s after creation, which lost the first message(s) of a topic about
once in 5-10 pipeline test runs. With a single request in flight R2 cannot overtake R1.
As a second guard, a success report without a broker offset (what an implicit ack or a
duplicate-sequence ack looks like; a real append always has one) is not trusted: the message is
sent again through the spool (``unconfirmed_rows``), and the ClickHouse sink's batch-id dedup
keeps it once.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, Producer

from kprobe.sinks.sink import Sink
from kprobe.sinks.spool import DiskSpool
from kprobe.topics import wire
from kprobe.topics.admin import ensure_topics
from kprobe.topics.names import MAX_MESSAGE_BYTES, PREFIX, event_topic

log = logging.getLogger("kprobe.kafka")

# delivery errors no retry can fix: the message (not the cluster) is the problem
PERMANENT_ERRORS = frozenset({KafkaError.TOPIC_EXCEPTION, KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG,
                              KafkaError._INVALID_ARG, KafkaError.INVALID_RECORD, KafkaError.INVALID_REQUEST,
                              KafkaError.INVALID_MSG_SIZE})


@dataclass
class KafkaSinkConfig:
    brokers: str
    spool_dir: Path
    spool_max_bytes: int = 1 << 30
    prefix: str = PREFIX
    chunk_rows: int = 32_768  # rows per message; bigger batches are split (message size bound)
    message_timeout_ms: int = 10_000  # after this an undelivered message goes to the spool
    linger_ms: int = 20
    compression: str = "lz4"
    drain_batch: int = 512  # spooled messages sent per round while draining
    batch_key: bytes | None = None  # the deployment's batch key: keyed batch ids and an HMAC per batch (topics/wire.py)


@dataclass
class SinkCounters:
    accepted_rows: int = 0
    delivered_rows: int = 0
    delivered_messages: int = 0
    delivered_bytes: int = 0
    in_flight_rows: int = 0
    spooled_rows_total: int = 0  # rows that ever went through the spool
    resent_rows: int = 0  # rows delivered from the spool
    unconfirmed_rows: int = 0  # rows reported delivered without a broker offset, sent again
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    mode: str = "direct"
    last_error: str = ""
    spool_rows: int = 0
    spool_bytes: int = 0
    spool_messages: int = 0


class KafkaSink(Sink):
    def __init__(self, config: KafkaSinkConfig, host: str | None = None, topics_ready: bool = True):
        """``topics_ready=False``: the caller could not verify the topics (Kafka down at start); the
        sink spools until :func:`ensure_topics` succeeds, so nothing is produced to a topic that is
        missing or not yet writable (the brokers must not auto-create it with default settings)."""
        self.config = config
        self.host = host or socket.gethostname()
        self._key = self.host.encode()
        self.run_id = uuid.uuid4().hex
        self._run_name = f"{time.time_ns():020d}"
        self._seq = 0
        self._lock = threading.RLock()  # re-entered by _drop from inside _send_chunk
        self.counters = SinkCounters()
        self.spool = DiskSpool(config.spool_dir, config.spool_max_bytes)
        self._topics_ready = topics_ready
        self._spooling = not self.spool.empty() or not topics_ready  # a previous run's messages go first
        self.counters.accepted_rows = self.spool.rows  # inherited rows are accounted like new ones
        self._producer = Producer({
            "bootstrap.servers": config.brokers,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 1,  # see the module doc: no implicit acks
            "compression.type": config.compression,
            "linger.ms": config.linger_ms,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "batch.size": MAX_MESSAGE_BYTES,
            "message.timeout.ms": config.message_timeout_ms,
            "queue.buffering.max.kbytes": 256 * 1024,
            "error_cb": self._on_error,
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._service_loop, name="kprobe-kafka", daemon=True)
        self._thread.start()

    # -- Sink interface ------------------------------------------------------------------------
    def write(self, table: str, columns: dict[str, np.ndarray]) -> int:
        n = len(next(iter(columns.values()))) if columns else 0
        if n == 0:
            return 0
        topic = event_topic(table, self.config.prefix)
        for start in range(0, n, self.config.chunk_rows):
            chunk = {k: v[start:start + self.config.chunk_rows] for k, v in columns.items()}
            self._send_chunk(table, topic, chunk)
        return n

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is in flight; whatever cannot be delivered stays in the spool for the next run."""
        self._stop.set()
        self._thread.join(10.0)  # from here on this thread alone serves callbacks and drains
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
            if len(self._producer):
                continue
            if not self._spooling or (self._topics_ready and self._drain_once()):
                break
        self._refresh_spool_counters()

    # -- encoding ------------------------------------------------------------------------------
    def _send_chunk(self, table: str, topic: str, chunk: dict[str, np.ndarray]) -> None:
        rows = len(next(iter(chunk.values())))
        with self._lock:
            self._seq += 1
            seq = self._seq
            self.counters.accepted_rows += rows
        lo, hi = wire.ts_range(chunk)
        key = self.config.batch_key
        header = wire.BatchHeader(table, self.host, wire.batch_id(self.host, self.run_id, seq, key), seq, rows, lo, hi,
                                  time.time_ns())
        try:
            payload = wire.encode(header, chunk, key)
        except Exception as e:  # a column Arrow cannot represent: counted, never raised into the recorder
            self._drop(rows, "encode_error", f"{table}: {e}")
            return
        if len(payload) > MAX_MESSAGE_BYTES and rows > 1:
            with self._lock:
                self.counters.accepted_rows -= rows  # re-counted by the halves
            half = rows // 2
            self._send_chunk(table, topic, {k: v[:half] for k, v in chunk.items()})
            self._send_chunk(table, topic, {k: v[half:] for k, v in chunk.items()})
            return
        name = f"{self._run_name}-{seq:012d}"
        with self._lock:  # atomic with the drain's switch back to direct: nothing is left behind
            if self._spooling:
                self._to_spool(name, topic, rows, payload)
                return
            self.counters.in_flight_rows += rows
        try:
            self._producer.produce(topic, payload, self._key, on_delivery=functools.partial(
                self._on_direct, name, topic, rows, payload), headers=self._headers(header))
        except BufferError:  # local queue full: Kafka is not keeping up or not there
            with self._lock:
                self.counters.in_flight_rows -= rows
            self._enter_spooling("local producer queue full")
            self._to_spool(name, topic, rows, payload)
        except Exception as e:
            with self._lock:
                self.counters.in_flight_rows -= rows
            self._drop(rows, "produce_error", str(e))

    @staticmethod
    def _headers(h: wire.BatchHeader) -> list[tuple[str, bytes]]:
        return [("kprobe-table", h.table.encode()), ("kprobe-wire", str(h.schema_version).encode()),
                ("kprobe-batch", str(h.batch_id).encode())]

    # -- delivery ------------------------------------------------------------------------------
    def _on_direct(self, name: str, topic: str, rows: int, payload: bytes, err, msg) -> None:
        with self._lock:
            self.counters.in_flight_rows -= rows
        if err is None and msg.offset() >= 0:
            self._delivered(rows, len(payload))
            return
        if err is None:  # acknowledged without an offset: maybe never written (module doc), so send it again
            with self._lock:
                self.counters.unconfirmed_rows += rows
            log.warning("%s: %d rows reported delivered without an offset; sending them again", topic, rows)
            self._enter_spooling("delivery reported without an offset")
        else:
            self._enter_spooling(f"delivery failed: {err}")
        self._to_spool(name, topic, rows, payload)

    def _delivered(self, rows: int, size: int) -> None:
        with self._lock:
            self.counters.delivered_rows += rows
            self.counters.delivered_messages += 1
            self.counters.delivered_bytes += size

    def _to_spool(self, name: str, topic: str, rows: int, payload: bytes) -> None:
        refused = self.spool.put(name, topic, self._key, rows, payload)
        if refused is None:
            with self._lock:
                self.counters.spooled_rows_total += rows
        elif refused == "spool_full":
            self._drop(rows, refused, f"spool at its bound of {self.config.spool_max_bytes} bytes")
        else:
            self._drop(rows, refused, self.spool.last_error)

    def _drop(self, rows: int, reason: str, detail: str) -> None:
        with self._lock:
            self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + rows
            self.counters.last_error = f"{reason}: {detail}"
        log.error("dropped %d rows (%s): %s", rows, reason, detail)

    def _on_error(self, err: KafkaError) -> None:
        self.counters.last_error = str(err)
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._enter_spooling(str(err))

    def _enter_spooling(self, why: str) -> None:
        if not self._spooling:
            log.warning("kafka unreachable (%s): spooling to %s", why, self.spool.directory)
        self._spooling = True
        self.counters.mode = "spooling"

    # -- background: callbacks and spool drain -------------------------------------------------
    def _service_loop(self) -> None:
        """The background thread: it must outlive any one bad message or callback (a dead drain thread
        would leave the spool growing until it is full and everything after it dropped)."""
        while not self._stop.is_set():
            try:
                self._service_rounds()
            except Exception as e:  # noqa: BLE001 - logged and counted in last_error; the loop resumes
                self.counters.last_error = f"kafka service loop: {type(e).__name__}: {e}"
                log.exception("kafka service loop failed; resuming")
                self._stop.wait(1.0)

    def _service_rounds(self) -> None:
        last_drain = 0.0
        while not self._stop.is_set():
            self._producer.poll(0.05)
            now = time.monotonic()
            if self._spooling and not self._topics_ready and now - last_drain >= 5.0:
                last_drain = now
                self._topics_ready = self._ensure_topics()
            elif self._spooling and self._topics_ready and now - last_drain >= 0.5:
                last_drain = now
                # only with nothing in flight is every earlier failure known and spooled; a
                # successful round goes straight on to the next (full speed once Kafka is back)
                while len(self._producer) == 0 and not self._stop.is_set() and self._drain_once() is None:
                    pass
            self._refresh_spool_counters()

    def _ensure_topics(self) -> bool:
        try:
            ensure_topics(self.config.brokers, timeout=5.0, prefix=self.config.prefix)
            log.warning("kafka topics verified writable: draining the spool")
            return True
        except Exception as e:
            self.counters.last_error = f"topics not ready: {e}"
            return False

    def _drain_once(self) -> bool | None:
        """Send the oldest spooled messages and wait for them.

        True: the spool is empty and the sink is back to direct mode; None: a round went through
        (more may be left); False: Kafka refused or is not there (try again later)."""
        items = self.spool.peek(self.config.drain_batch)
        if not items:
            with self._lock:
                if self.spool.empty():
                    self._spooling = False
                    self.counters.mode = "direct"
                    log.warning("kafka reachable again: spool drained")
                    return True
            return False
        results: dict[int, bool] = {}

        errors: dict[int, KafkaError] = {}

        def done(i: int, err, msg) -> None:
            results[i] = err is None and msg.offset() >= 0  # no offset: unconfirmed (module doc), retried
            if err is not None:
                errors[i] = err

        unsendable: set[int] = set()
        for i, it in enumerate(items):
            try:
                self._producer.produce(it.topic, it.payload, it.key, on_delivery=functools.partial(done, i))
            except BufferError:
                break
            except Exception as e:  # a message librdkafka refuses outright (bad topic name, too big): it would
                # block the spool forever; quarantined and its rows counted as dropped, the drain goes on
                self.spool.quarantine_item(it, f"{it.path.name}: producer refused it ({e})")
                self._drop(it.rows, "spool_unsendable", str(e))
                unsendable.add(i)
        self._producer.flush(self.config.message_timeout_ms / 1000 + 5)
        for i, it in enumerate(items):
            if i in unsendable:
                continue
            err = errors.get(i)
            if err is not None and err.code() in PERMANENT_ERRORS:  # never deliverable: would block the spool
                self.spool.quarantine_item(it, f"{it.path.name}: {err}")
                self._drop(it.rows, "spool_unsendable", str(err))
                continue
            if not results.get(i):
                return False  # keep it (and everything after it) for the next round: order holds
            self.spool.remove(it)
            with self._lock:
                self.counters.resent_rows += it.rows
            self._delivered(it.rows, len(it.payload))
        return None

    def _refresh_spool_counters(self) -> None:
        self.counters.spool_rows = self.spool.rows
        self.counters.spool_bytes = self.spool.bytes
        self.counters.spool_messages = self.spool.messages

    def snapshot(self) -> dict:
        """Counters as a plain dict (status.json, `kprobe stats`, metrics)."""
        self._refresh_spool_counters()
        with self._lock:
            c = self.counters
            return {
                "brokers": self.config.brokers, "mode": c.mode, "accepted_rows": c.accepted_rows,
                "delivered_rows": c.delivered_rows, "delivered_messages": c.delivered_messages,
                "delivered_bytes": c.delivered_bytes, "in_flight_rows": c.in_flight_rows,
                "spool_rows": c.spool_rows, "spool_bytes": c.spool_bytes, "spool_messages": c.spool_messages,
                "spooled_rows_total": c.spooled_rows_total, "resent_rows": c.resent_rows,
                "unconfirmed_rows": c.unconfirmed_rows, "spool_quarantined_files": self.spool.quarantined,
                "spool_io_errors": self.spool.io_errors,
                "dropped": dict(c.dropped), "dropped_total": sum(c.dropped.values()), "last_error": c.last_error,
            }
