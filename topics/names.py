"""Kafka topic names and per-topic settings of the scale-out pipeline: the one place they are spelled.

Layout (documented for downstream consumers, who may read any of these topics):

=================================  ==========================================================
topic                              content
=================================  ==========================================================
``kprobe.events.<type>``           one per kernel event type of ``schemas/tables.py``
                                   (offcpu, proc, fault, ...): batches in the wire format of
                                   :mod:`kprobe.topics.wire`, key = host (per-host order, so
                                   per-thread order too)
``kprobe.events.processes``        process identities (comm, exe, cmdline, cgroup, service)
``kprobe.spans``                   OpenTelemetry spans (same wire format, table ``spans``)
``kprobe.dlq``                     messages a dataflow could not decode or store, original
                                   bytes + headers ``kprobe-error``, ``kprobe-source-topic``…
``kprobe.control.replay``          replay requests (helper "replay" owns the payload)
``kprobe.replay.results``          replay results
=================================  ==========================================================

Event topics are the archive (replay reads them back), so they keep data by time and size;
the control topic is compacted-short, the DLQ keeps a week for a human to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kprobe.schemas.store_tables import AGENT_TABLES, SPANS_TABLE
from kprobe.schemas.tables import EVENT_TYPES

PREFIX = "kprobe"
SPANS_TOPIC = f"{PREFIX}.spans"
DLQ_TOPIC = f"{PREFIX}.dlq"
REPLAY_CONTROL_TOPIC = "kprobe.control.replay"
REPLAY_RESULTS_TOPIC = "kprobe.replay.results"

HOUR_MS = 3600 * 1000
# A batch message holds at most this many bytes (the broker default is 1 MiB); topics are created
# with the same limit so a full agent batch is never refused.
MAX_MESSAGE_BYTES = 8 << 20


def event_topic(table: str, prefix: str = PREFIX) -> str:
    """Topic of a table's events: ``kprobe.events.<table>`` (spans have their own name).

    ``prefix`` exists so tests and staging pipelines can share one cluster without mixing data.
    """
    if table == SPANS_TABLE.name:
        return f"{prefix}.spans"
    return f"{prefix}.events.{table}"


def dlq_topic(prefix: str = PREFIX) -> str:
    return f"{prefix}.dlq"


def table_of(topic: str) -> str | None:
    """Inverse of :func:`event_topic` (any prefix); None for a topic that carries no table rows."""
    if topic.endswith(".spans"):
        return SPANS_TABLE.name
    head, sep, table = topic.rpartition(".events.")
    return table if sep and head and table else None


EVENT_TABLES: tuple[str, ...] = tuple(et.name for et in EVENT_TYPES) + AGENT_TABLES


def data_topics(prefix: str = PREFIX) -> tuple[str, ...]:
    return tuple(event_topic(t, prefix) for t in EVENT_TABLES) + (event_topic(SPANS_TABLE.name, prefix),)


DATA_TOPICS: tuple[str, ...] = data_topics()


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def archive_config(retention_hours: float, retention_gb: float | None) -> dict[str, str]:
    cfg = {
        "retention.ms": str(int(retention_hours * HOUR_MS)),
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
        "compression.type": "producer",  # keep the agent's compression, never recompress
        "cleanup.policy": "delete",
    }
    if retention_gb is not None:
        cfg["retention.bytes"] = str(int(retention_gb * (1 << 30)))  # per partition
    return cfg


def all_topics(partitions: int = 6, retention_hours: float = 72.0, retention_gb: float | None = None,
               prefix: str = PREFIX) -> list[TopicSpec]:
    """Every topic the pipeline uses, with partitions and retention.

    Event topics are the archive replay reads back, so they keep ``retention_hours`` (default 3
    days) and optionally ``retention_gb`` per partition. Partitions bound dataflow parallelism:
    one worker reads one or more partitions, and a host's batches always land in one partition.
    """
    archive = archive_config(retention_hours, retention_gb)
    specs = [TopicSpec(t, partitions, archive) for t in data_topics(prefix)]
    specs.append(TopicSpec(dlq_topic(prefix), 1, {"retention.ms": str(7 * 24 * HOUR_MS),
                                         "max.message.bytes": str(MAX_MESSAGE_BYTES)}))
    specs.append(TopicSpec(REPLAY_CONTROL_TOPIC, 1, {"retention.ms": str(24 * HOUR_MS)}))
    specs.append(TopicSpec(REPLAY_RESULTS_TOPIC, 1, {"retention.ms": str(7 * 24 * HOUR_MS),
                                                    "max.message.bytes": str(MAX_MESSAGE_BYTES)}))
    return specs
