"""A replay request published on the control topic (real Kafka from deploy/stack.sh) yields a result.

Only Kafka is started (not the whole stack): the worker needs nothing else.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.conftest import is_root
from tests.servers.conftest import _cache_dir, _running, _stack, read_env

WORKLOADS = Path(__file__).parent / "workloads"

pytestmark = [pytest.mark.servers, pytest.mark.kernel]


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    was_running = _running("kafka")
    result = _stack("start", "kafka", timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"deploy/stack.sh start kafka failed:\n{result.stdout}\n{result.stderr}")
    try:
        yield read_env(_cache_dir() / "stack.env")["KAFKA_BOOTSTRAP"]
    finally:
        if not was_running and os.environ.get("KPROBE_STACK_KEEP") != "1":
            _stack("stop", "kafka")


def _create_topics(bootstrap: str, *topics: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics])
    for f in futures.values():
        try:
            f.result(timeout=30)
        except Exception as e:  # already exists from an earlier run: fine
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def test_control_topic_request_yields_result(kafka: str, tmp_path: Path, probes_built: None) -> None:
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    import confluent_kafka

    from kprobe.replay import worker
    from kprobe.replay.record import ReplayRecorder

    exe = tmp_path / "two_threads"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(WORKLOADS / "two_threads.c")], check=True)
    out = tmp_path / "out.log"
    data = tmp_path / "data"
    rec = ReplayRecorder(data / "replay" / "incident-1")
    try:
        p = rec.start([str(exe), str(out)])
        assert p.wait() == 0
    finally:
        rec.stop()
    out.unlink()

    _create_topics(kafka, worker.CONTROL_TOPIC, worker.RESULTS_TOPIC)
    group = f"replay-test-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    served: list[int] = []
    t = threading.Thread(target=lambda: served.append(worker.run(kafka, group, max_requests=2, stop=stop)))
    t.start()
    good_id, bad_id = f"r-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka})
    good = worker.ReplayRequest(good_id, str(data), [str(exe), str(out)], incident=f"incident-1:{p.pid}")
    producer.produce(worker.CONTROL_TOPIC, key=good_id.encode(), value=msgspec.json.encode(good))
    producer.produce(worker.CONTROL_TOPIC, key=bad_id.encode(), value=b"{not json")
    assert producer.flush(30) == 0

    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": group + "-results",
                                         "auto.offset.reset": "earliest"})
    results: dict[str, worker.ReplayResultMsg] = {}
    try:
        consumer.subscribe([worker.RESULTS_TOPIC])
        deadline = time.monotonic() + 120
        while {good_id, bad_id} - set(results) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            r = msgspec.json.decode(msg.value(), type=worker.ReplayResultMsg)
            results[r.request_id] = r
    finally:
        consumer.close()
        stop.set()
        t.join(60)
    assert good_id in results and bad_id in results, results.keys()
    ok = results[good_id]
    assert ok.ok and ok.outcome == "identical" and ok.outputs_identical, (ok.error, ok.divergences, ok.notes)
    assert ok.events_replayed == ok.events_total > 0
    bad = results[bad_id]
    assert not bad.ok and "bad request" in bad.error
    assert served == [2]
