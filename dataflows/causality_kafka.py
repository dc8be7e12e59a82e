"""Kafka input for the causality flow: the scale-out topics (topics/) decoded into per-host EventBatches.

The same flow as over the embedded store (dataflows/causality.py); only the source
differs: ``KafkaPartitionSource`` (dataflows/kafka_io.py, offsets in bytewax
snapshots) on the causal tables' topics, and ``prepare`` decoding each message's
Arrow batch; analysis rows go wherever ``rows`` writes (a ClickHouse
server with `kprobe dataflow causality --clickhouse`). Undecodable messages are counted here (``FlowMetrics.dlq_reasons``);
the ingest flow is the one that forwards them to the dead-letter topic, so they are
not sent twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bytewax.dataflow import Dataflow

from kprobe.dataflows.causal_step import EventBatch, event_batches
from kprobe.dataflows.causality import CAUSAL_TABLES, FlowOptions, RowsWriter, build_flow, graph_factory
from kprobe.dataflows.kafka_io import Acked, KafkaConfig, KafkaPartitionSource, RawMessage
from kprobe.dataflows.metrics import FlowMetrics
from kprobe.topics.names import PREFIX, event_topic, table_of
from kprobe.topics.wire import WireError, decode


def causal_topics(prefix: str = PREFIX) -> tuple[str, ...]:
    return tuple(event_topic(t, prefix) for t in CAUSAL_TABLES)


def kafka_prepare(metrics: FlowMetrics, acked: Acked | None = None) -> Callable[[RawMessage], list[EventBatch]]:
    """RawMessage -> EventBatches (rows as dicts, split per host); bad messages counted, never raised.

    A message is acknowledged to the source once decoded (or counted as bad): its rows are then
    in the stateful step, whose state is snapshotted in the same epoch as the source offsets.
    """

    def prepare(msg: RawMessage) -> list[EventBatch]:
        table = table_of(msg.topic)
        out: list[EventBatch] = []
        if table in CAUSAL_TABLES:
            try:
                header, rb = decode(msg.value)
                out = event_batches(header.table, rb.to_pylist(), header.host)
            except WireError as e:
                metrics.incr("dlq_messages")
                metrics.add("dlq_reasons", f"causality: {str(e)[:60]}", 1)
        if acked is not None:
            acked.ack([msg])
        return out

    return prepare


def kafka_flow(brokers: str, data_dir: Path, graph: str = "ladybug", prefix: str = PREFIX,
               options: FlowOptions | None = None, neo4j_auth: str | None = None,
               metrics: FlowMetrics | None = None, rows: Callable[[], RowsWriter] | None = None) -> Dataflow:
    """Topics -> causality -> graph, and analysis rows when ``rows`` is given (e.g. a ClickHouse server)."""
    m = metrics or FlowMetrics("causality")
    acked = Acked()
    src = KafkaPartitionSource(KafkaConfig(brokers, causal_topics(prefix), group="kprobe-causality"), m, acked)
    return build_flow(src, graph_factory(data_dir, graph, neo4j_auth), rows=rows, options=options,
                      prepare=kafka_prepare(m, acked))
