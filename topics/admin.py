"""Create the pipeline's topics (idempotent) with partitions and retention, via the Kafka AdminClient.

Both the agent (``kprobe record --kafka``) and the dataflows call :func:`ensure_topics` at start,
so a fresh cluster works without a separate setup step; an existing topic is left as it is
(changing partitions or retention of a live archive is an operator's decision).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from kprobe.topics.names import TopicSpec, all_topics


def ensure_topics(brokers: str, specs: list[TopicSpec] | None = None, timeout: float = 30.0,
                  prefix: str | None = None, partitions: int = 6) -> list[str]:
    """Create missing topics; returns the names created. Raises KafkaException when unreachable."""
    if specs is None:
        specs = all_topics(partitions, prefix=prefix) if prefix else all_topics(partitions)
    admin = AdminClient({"bootstrap.servers": brokers, "socket.timeout.ms": int(timeout * 1000)})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
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
