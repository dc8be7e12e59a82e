"""Kafka input for the causality flow: the scale-out topics (topics/) decoded into per-host EventBatches.

The same flow as over the embedded store (dataflows/causality.py); only the source
differs: ``KafkaPartitionSource`` (dataflows/kafka_io.py, offsets in bytewax
snapshots) on the causal tables' topics, and ``prepare`` decoding each message's
Arrow batch. Undecodable messages are counted here (``FlowMetrics.dlq_reasons``);
the ingest flow is the one that forwards them to the dead-letter topic, so they are
not sent twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bytewax.dataflow import Dataflow

from kprobe.dataflows.causal_step import EventBatch, event_batches
from kprobe.dataflows.causality import CAUSAL_TABLES, FlowOptions, build_flow, graph_factory
from kprobe.dataflows.kafka_io import KafkaConfig, KafkaPartitionSource, RawMessage
from kprobe.dataflows.metrics import FlowMetrics
from kprobe.topics.names import PREFIX, event_topic, table_of
from kprobe.topics.wire import WireError, decode


def causal_topics(prefix: str = PREFIX) -> tuple[str, ...]:
    return tuple(event_topic(t, prefix) for t in CAUSAL_TABLES)


def kafka_prepare(metrics: FlowMetrics) -> Callable[[RawMessage], list[EventBatch]]:
    """RawMessage -> EventBatches (rows as dicts, split per host); bad messages counted, never raised."""

    def prepare(msg: RawMessage) -> list[EventBatch]:
        table = table_of(msg.topic)
        if table not in CAUSAL_TABLES:
            return []
        try:
            header, rb = decode(msg.value)
        except WireError as e:
            metrics.dlq_messages += 1
            reason = f"causality: {str(e)[:60]}"
            metrics.dlq_reasons[reason] = metrics.dlq_reasons.get(reason, 0) + 1
            return []
        return event_batches(header.table, rb.to_pylist(), header.host)

    return prepare


def kafka_flow(brokers: str, data_dir: Path, graph: str = "ladybug", prefix: str = PREFIX,
               options: FlowOptions | None = None, neo4j_auth: str | None = None,
               metrics: FlowMetrics | None = None) -> Dataflow:
    """Topics -> causality -> graph (analysis rows stay with the store-based flow for now)."""
    m = metrics or FlowMetrics("causality")
    src = KafkaPartitionSource(KafkaConfig(brokers, causal_topics(prefix), group="kprobe-causality"), m)
    return build_flow(src, graph_factory(data_dir, graph, neo4j_auth), options=options, prepare=kafka_prepare(m))
