"""Create the pipeline's topics (idempotent) with partitions and retention, via the Kafka AdminClient.

Both the agent (``kprobe record --kafka``) and the dataflows call :func:`ensure_topics` at start,
so a fresh cluster works without a separate setup step; an existing topic is left as it is
(changing partitions or retention of a live archive is an operator's decision).

:func:`ensure_topics` returns only when every partition of every pipeline topic is *writable*:
it has a leader in the metadata AND that leader answers ListOffsets for it. The metadata shows
a new partition's leader before the broker has created the partition's log (KRaft applies the
two ~1 s apart while it creates ~80 logs); a produce in that window is refused with
NOT_LEADER_OR_FOLLOWER, and librdkafka's idempotent producer can turn that refusal into a
silent loss (see kprobe.sinks.kafka). ListOffsets goes through the same leader check as
Produce, so an answer for every partition means the first produce is accepted.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from kprobe.topics.names import TopicSpec, all_topics


def ensure_topics(brokers: str, specs: list[TopicSpec] | None = None, timeout: float = 30.0,
                  prefix: str | None = None, partitions: int = 6) -> list[str]:
    """Create missing topics and wait until all of ``specs`` are writable; returns the names created.

    Raises KafkaException when unreachable, TimeoutError when a partition stays unwritable."""
    if specs is None:
        specs = all_topics(partitions, prefix=prefix) if prefix else all_topics(partitions)
    admin = AdminClient({"bootstrap.servers": brokers, "socket.timeout.ms": int(timeout * 1000)})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    created = _create(admin, missing, timeout) if missing else []
    wait_writable(admin, [s.name for s in specs], timeout)
    return created


def _create(admin: AdminClient, missing: list[TopicSpec], timeout: float) -> list[str]:
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=s.config) for s in missing],
        request_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as e:
            if e.args and getattr(e.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise
    _wait_visible(admin, missing, timeout)
    return created


def wait_writable(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Until the leader of every partition of ``topics`` answers ListOffsets (see the module doc).

    Partitions are taken from the metadata (an existing topic keeps its own count)."""
    deadline = time.monotonic() + timeout
    md = admin.list_topics(timeout=timeout).topics
    pending = {TopicPartition(t, p) for t in topics if t in md for p in md[t].partitions}
    last = ""
    while pending:
        remaining = max(0.5, deadline - time.monotonic())
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in pending},
                                     request_timeout=min(5.0, remaining))
        for tp, fut in futures.items():
            try:
                fut.result(remaining)
                pending.discard(tp)
            except KafkaException as e:
                last = str(e)
        if not pending:
            return
        if time.monotonic() > deadline:
            names = sorted(f"{tp.topic}[{tp.partition}]" for tp in pending)
            raise TimeoutError(f"{len(names)} partitions not writable after {timeout} s ({last}): {names[:5]}")
        time.sleep(0.05)


def _wait_visible(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """Creation returns before every partition has a leader in the metadata; a consumer that lists
    partitions right then would see too few and never read the rest, so wait until all are there."""
    deadline = time.monotonic() + timeout
    want = {s.name: s.partitions for s in specs}
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        short = {n: p for n, p in want.items()
                 if n not in topics or len(topics[n].partitions) < p
                 or any(pm.leader < 0 for pm in topics[n].partitions.values())}
        if not short:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not fully visible after {timeout} s: {sorted(short)}")
        time.sleep(0.1)


def delete_topics(brokers: str, names: list[str], timeout: float = 30.0) -> None:
    """Delete topics (tests and `kprobe dataflow` resets); missing ones are ignored."""
    admin = AdminClient({"bootstrap.servers": brokers})
    for fut in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            fut.result(timeout)
        except KafkaException:
            pass
