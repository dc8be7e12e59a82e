"""The agent's spool drains into a real Kafka (deploy/stack.sh) past messages that can never be sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kprobe.sinks.kafka import KafkaSink, KafkaSinkConfig
from kprobe.sinks.spool import QUARANTINE, DiskSpool
from tests.stack_fixtures import kafka_from_stack

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    yield from kafka_from_stack()


def test_unsendable_spooled_messages_are_quarantined_and_the_rest_delivered(kafka: str, tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"kpt{uuid.uuid4().hex[:8]}"
    good_topic = f"{prefix}.events.offcpu"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(good_topic, 1, 1)])[good_topic].result(30)
    spool = DiskSpool(tmp_path / "spool")
    assert spool.put("0000-000000000001", "bad topic name!", b"h", 5, b"x" * 10) is None  # Kafka refuses the name
    assert spool.put("0000-000000000002", good_topic, b"h", 7, b"y" * 10) is None
    sink = KafkaSink(KafkaSinkConfig(kafka, tmp_path / "spool", prefix=prefix, message_timeout_ms=5000),
                     topics_ready=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (sink.snapshot()["spool_messages"] or sink.snapshot()["mode"] != "direct"):
            time.sleep(0.2)
        snap = sink.snapshot()
        assert snap["spool_messages"] == 0 and snap["mode"] == "direct", snap
        assert snap["resent_rows"] == 7 and snap["dropped"] == {"spool_unsendable": 5}, snap
        assert snap["spool_quarantined_files"] == 1
        assert (tmp_path / "spool" / QUARANTINE / "0000-000000000001.kpb").exists()
        assert sink._thread.is_alive()
    finally:
        sink.close(timeout=5)
