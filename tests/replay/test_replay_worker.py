"""A replay request published on the control topic (real Kafka from deploy/stack.sh) yields a result.

Only Kafka is started (not the whole stack): the worker needs nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.conftest import is_root
from tests.stack_fixtures import kafka_from_stack

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads" / "replay"

pytestmark = [pytest.mark.servers, pytest.mark.kernel]


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    yield from kafka_from_stack()


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


def test_control_topic_requests_yield_results_and_poison_is_answered(kafka: str, tmp_path: Path,
                                                                    probes_built: None) -> None:
    if not is_root():
        pytest.skip("attaching eBPF probes and ptrace need root (CI runs as root)")
    bindir = Path(tempfile.mkdtemp(prefix="kprobe-replay-bin-", dir="/var/tmp"))  # replays run as nobody: pytest's
    os.chmod(bindir, 0o755)                                                       # tmp (0700) is not reachable
    try:
        _serve_requests(kafka, tmp_path, bindir)
    finally:
        shutil.rmtree(bindir)


def _serve_requests(kafka: str, tmp_path: Path, bindir: Path) -> None:
    import confluent_kafka

    from kprobe.replay import worker
    from kprobe.replay.record import ReplayRecorder
    from kprobe.replay.worker_config import WorkerConfig

    exe = bindir / "two_threads"
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

    suffix = uuid.uuid4().hex[:8]  # fresh topics per run: earlier runs' requests must not be served
    control, results_topic = f"{worker.CONTROL_TOPIC}.test-{suffix}", f"{worker.RESULTS_TOPIC}.test-{suffix}"
    _create_topics(kafka, control, results_topic)
    group = f"replay-test-{suffix}"
    # a poisoned recording next to the good one: meta.json that is not JSON, a syscall file of garbage
    poisoned = data / "replay" / "poisoned"
    poisoned.mkdir()
    (poisoned / "meta.json").write_bytes(b"{not json")
    (poisoned / "rsys.bin").write_bytes(os.urandom(1000))
    config = WorkerConfig(binaries=[str(exe)], data_roots=[str(data)], work_root=str(tmp_path / "work"),
                          run_as_user=65534).check()
    stop = threading.Event()
    served: list[int] = []
    ids = {k: f"r-{k}-{uuid.uuid4().hex[:8]}" for k in ("good", "json", "meta", "escape", "binary", "absurd")}
    t = threading.Thread(target=lambda: served.append(worker.run(kafka, group, max_requests=len(ids), stop=stop,
                                                              control_topic=control, results_topic=results_topic,
                                                              config=config)))
    t.start()
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka})
    reqs = {
        "json": b"{not json",
        "meta": worker.ReplayRequest(ids["meta"], str(data), [str(exe)], incident="poisoned:42"),
        "escape": worker.ReplayRequest(ids["escape"], str(data), [str(exe)], incident="../../../etc"),
        "binary": worker.ReplayRequest(ids["binary"], str(data), ["/bin/sh", "-c", f"touch {tmp_path}/PWNED"],
                                       incident=f"incident-1:{p.pid}"),
        "absurd": worker.ReplayRequest(ids["absurd"], str(data), [str(exe)], incident=f"incident-1:{p.pid}", cpu=10**6,
                                       deadline_ms=-5.0),
        "good": worker.ReplayRequest(ids["good"], str(data), [str(exe), str(out)], incident=f"incident-1:{p.pid}"),
    }
    for k, v in reqs.items():  # the good one last: every poison before it was answered and committed
        producer.produce(control, key=ids[k].encode(), value=v if isinstance(v, bytes) else msgspec.json.encode(v))
    assert producer.flush(30) == 0
    good_id, bad_id = ids["good"], ids["json"]

    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka, "group.id": group + "-results",
                                         "auto.offset.reset": "earliest"})
    results: dict[str, worker.ReplayResultMsg] = {}
    try:
        consumer.subscribe([results_topic])
        deadline = time.monotonic() + 120
        while set(ids.values()) - set(results) and time.monotonic() < deadline:
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
    for k in ("meta", "escape", "binary", "absurd"):
        assert not results[ids[k]].ok and results[ids[k]].error, (k, results[ids[k]])
    assert "allowlist" in results[ids["binary"]].error and not (tmp_path / "PWNED").exists()
    assert served == [len(ids)]
    # every offset was committed: a new worker in the same group finds nothing left to answer
    again = worker.run(kafka, group, max_requests=1, stop=_stop_after(10.0), control_topic=control,
                       results_topic=results_topic, config=config)
    assert again == 0


def _stop_after(seconds: float) -> threading.Event:
    ev = threading.Event()
    threading.Timer(seconds, ev.set).start()
    return ev
