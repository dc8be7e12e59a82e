"""Kafka input and dead-letter output for the bytewax dataflows.

Source partitioning: bytewax partition ``p<i>`` reads partition *i* of every subscribed topic
with one consumer. The agent keys messages by host, so a host lands on the same partition index
in every topic and one worker sees all of a host's batches, in order. Offsets live in bytewax's
recovery snapshots (not in Kafka consumer groups). A snapshot holds, per topic, the offset after
the last message the *sink acknowledged* (:class:`Acked`), not merely the last one read: a message
read but not yet stored when the process dies is read again after the restart, whatever the
timing of bytewax's epoch commits relative to the sink's writes. What is re-read is deduplicated
by the sink's batch ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from kprobe.dataflows.metrics import FlowMetrics

log = logging.getLogger("kprobe.dataflow")


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class KafkaConfig:
    brokers: str
    topics: tuple[str, ...]
    group: str = "kprobe-dataflow"  # librdkafka needs one; offsets are NOT committed to it
    batch_messages: int = 256
    idle_poll_ms: int = 20
    lag_every_s: float = 2.0


class Acked:
    """Offsets the sink has durably handled (stored or dead-lettered), per (topic, partition).

    Shared by the source and sink built in one process: a Kafka partition's messages are read,
    decoded and written by one worker, so the sink acknowledges them in order.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def ack(self, msgs: list[RawMessage]) -> None:
        with self._lock:
            for m in msgs:
                key = (m.topic, m.partition)
                if m.offset + 1 > self._next.get(key, -1):
                    self._next[key] = m.offset + 1

    def get(self, topic: str, partition: int) -> int | None:
        with self._lock:
            return self._next.get((topic, partition))


class _Partition(StatefulSourcePartition[RawMessage, dict[str, int]]):
    def __init__(self, cfg: KafkaConfig, index: int, resume: dict[str, int] | None, metrics: FlowMetrics,
                 acked: Acked):
        self.cfg = cfg
        self.metrics = metrics
        self.index = index
        self.acked = acked
        self._start: dict[str, int] = dict(resume or {})  # where this run began, per topic
        self._next: dict[str, int] = dict(resume or {})
        self._consumer = Consumer({
            "bootstrap.servers": cfg.brokers, "group.id": cfg.group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20,
            # a long poll: the broker answers as soon as data arrives; a short one (10 ms) made six
            # idle consumers cost the broker ~35% of a CPU in empty fetches
            "fetch.wait.max.ms": 500, "queued.max.messages.kbytes": 64 << 10,
        })
        self._tps: list[TopicPartition] = []
        self._consumer.assign([])
        self._assign_visible(timeout=30)
        self._idle = False
        self._last_lag = 0.0

    def _assign_visible(self, timeout: float) -> None:
        """Assign this index's partition of every topic the broker's metadata shows.

        A topic created moments ago (or by an agent that started after this flow) can be missing
        from the first metadata answer; it is picked up at the next check instead of never being
        read (its messages would otherwise be lost without any lag to show for them).
        """
        try:
            meta = self._consumer.list_topics(timeout=timeout)
        except Exception as e:  # broker unreachable: keep what is assigned, try again later
            self.metrics.last_error = f"metadata: {e}"
            return
        have = {tp.topic for tp in self._tps}
        new = [TopicPartition(t, self.index, self._next.get(t, OFFSET_BEGINNING))
               for t in self.cfg.topics
               if t not in have and t in meta.topics and self.index in meta.topics[t].partitions]
        if new:
            self._consumer.incremental_assign(new)
            self._tps.extend(new)

    def next_batch(self) -> list[RawMessage]:
        msgs = self._consumer.consume(self.cfg.batch_messages, timeout=0)
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.metrics.incr("source_errors")
                    self.metrics.last_error = f"consume: {err}"
                    log.warning("consume error: %s", err)
                continue
            value = m.value() or b""
            out.append(RawMessage(m.topic(), m.partition(), m.offset(), m.key(), value, tuple(m.headers() or ())))
            self._next[m.topic()] = m.offset() + 1
            self.metrics.add("consumed_messages", m.topic(), 1)
            self.metrics.incr("consumed_bytes", len(value))
        self._idle = not out
        now = time.monotonic()
        if now - self._last_lag >= self.cfg.lag_every_s:
            self._last_lag = now
            if len(self._tps) < len(self.cfg.topics):
                self._assign_visible(timeout=1.0)
            self._update_lag()
        return out

    def _update_lag(self) -> None:
        """Lag from the watermarks of the last fetch responses (cached: no broker round trip).

        Asking the broker here (one ListOffsets per partition, each queued behind the consumer's
        pending long-poll fetch) blocked this worker for seconds every lag period, and messages
        waited in the consumer for it: 2-5 s of freshness lost. A partition not fetched yet has
        no cached watermark and shows no lag until it has."""
        for tp in self._tps:
            try:
                lo, hi = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            except Exception:
                continue
            if hi < 0:
                continue
            pos = self._next.get(tp.topic, lo if lo >= 0 else hi)
            self.metrics.lag[f"{tp.topic}/{tp.partition}"] = max(0, hi - max(pos, lo))

    def next_awake(self) -> datetime | None:
        if self._idle:
            return datetime.now(UTC) + timedelta(milliseconds=self.cfg.idle_poll_ms)
        return None

    def snapshot(self) -> dict[str, int]:
        """Resume after what the sink acknowledged (never after what was only read)."""
        out = {}
        for tp in self._tps:
            pos = self.acked.get(tp.topic, tp.partition)
            if pos is None:
                pos = self._start.get(tp.topic)
            if pos is not None:
                out[tp.topic] = min(pos, self._next.get(tp.topic, pos))
        return out

    def close(self) -> None:
        self._consumer.close()


class KafkaPartitionSource(FixedPartitionedSource[RawMessage, dict[str, int]]):
    """Reads ``topics``; one bytewax partition per Kafka partition index (see module doc)."""

    def __init__(self, cfg: KafkaConfig, metrics: FlowMetrics, acked: Acked):
        self.cfg = cfg
        self.metrics = metrics
        self.acked = acked

    def list_parts(self) -> list[str]:
        c = Consumer({"bootstrap.servers": self.cfg.brokers, "group.id": self.cfg.group})
        try:
            meta = c.list_topics(timeout=30)
        finally:
            c.close()
        n = max((len(meta.topics[t].partitions) for t in self.cfg.topics if t in meta.topics), default=0)
        if n == 0:
            raise RuntimeError(f"none of the topics exist on {self.cfg.brokers}: {self.cfg.topics}")
        return [f"p{i}" for i in range(n)]

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, int] | None) -> _Partition:
        return _Partition(self.cfg, int(for_part[1:]), resume_state, self.metrics, self.acked)


class DeadLetters:
    """Sends undecodable or unstorable messages, untouched, to the DLQ with the reason in headers."""

    def __init__(self, brokers: str, topic: str, metrics: FlowMetrics):
        self.topic = topic
        self.metrics = metrics
        self._producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                                   "message.max.bytes": 16 << 20, "compression.type": "lz4"})
        self._failed: list[str] = []

    def send(self, msg: RawMessage, reason: str) -> None:
        headers = [("kprobe-error", reason.encode()[:1000]), ("kprobe-source-topic", msg.topic.encode()),
                   ("kprobe-source-partition", str(msg.partition).encode()),
                   ("kprobe-source-offset", str(msg.offset).encode()), *msg.headers]
        self._producer.produce(self.topic, msg.value, msg.key, headers=headers, on_delivery=self._done)
        self.metrics.incr("dlq_messages")
        self.metrics.add("dlq_reasons", reason.split(":", 1)[0][:60], 1)
        log.warning("dead-lettered %s/%d@%d: %s", msg.topic, msg.partition, msg.offset, reason)

    def _done(self, err, msg) -> None:
        if err is not None:
            self._failed.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until the DLQ has them: the source must not move past a message the DLQ lacks."""
        left = self._producer.flush(timeout)
        if left or self._failed:
            failed, self._failed = self._failed, []
            raise RuntimeError(f"dead-letter topic write failed ({left} pending): {failed[:3]}")
