"""Produce and consume through the real Kafka broker started by deploy/stack.sh."""

from __future__ import annotations

import time
import uuid

import confluent_kafka
import pytest

pytestmark = pytest.mark.servers


def _create_topic(bootstrap: str, topic: str) -> None:
    """Create the topic explicitly: auto-creation on first produce races the consumer's assignment."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    futures[topic].result(timeout=30)


def test_produce_consume_roundtrip(stack: dict[str, str]) -> None:
    bootstrap = stack["KAFKA_BOOTSTRAP"]
    assert bootstrap.startswith("127.0.0.1:")
    topic = f"kprobe-test-{uuid.uuid4().hex[:12]}"
    _create_topic(bootstrap, topic)

    sent = {f"k{i}".encode(): f"event-{i}".encode() for i in range(200)}
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0, "messages left undelivered after 30 s"

    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                assert msg.error() is None, msg.error()
                received[msg.key()] = msg.value()
    finally:
        consumer.close()
    assert received == sent
