"""Scale-out pipeline on the real stack: kernel -> agent -> Kafka -> bytewax ingest -> ClickHouse 18.16.

Ground truth is twofold: the workload's own count of its write() calls (the kernel events must all
arrive, once), and the agent's delivery counters (every row the sink accepted is in ClickHouse
exactly once: no loss, no duplicate). Each test breaks one thing mid-stream: Kafka for 30 s, the
dataflow process (SIGKILL), the ClickHouse server; and one feeds a malformed message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = [pytest.mark.servers, pytest.mark.kernel]

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "workloads"


def _stack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "deploy" / "stack.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class KafkaCapture:
    """A real recorder publishing to Kafka under a test-private topic prefix."""

    def __init__(self, data: Path, brokers: str, prefix: str):
        from kprobe.agent.kafka_session import KafkaSession
        from kprobe.agent.probeset import ProbeConfig
        from kprobe.agent.recorder import RecorderConfig
        from kprobe.sinks.kafka import KafkaSinkConfig

        probes = ProbeConfig(filter_on=True, min_offcpu_ns=20_000, fault_sample_every=64)
        sink = KafkaSinkConfig(brokers=brokers, spool_dir=data / "spool", prefix=prefix, message_timeout_ms=5000)
        self.session = KafkaSession(data, RecorderConfig(probes=probes, flush_ms=100), sink, metrics_port=0).start()

    def workload(self, name: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(WORKLOADS / name), *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.session.recorder.watch_pid(p.pid)
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        return p

    def finish(self) -> dict:
        assert self.session.recorder.wait_drained(10.0)
        self.session.stop()
        return self.session.stats()


class Ingest:
    """`kprobe dataflow ingest` as a real child process (so it can be SIGKILLed)."""

    def __init__(self, stack: dict[str, str], prefix: str, database: str, state: Path):
        self.argv = [sys.executable, "-m", "kprobe", "dataflow", "ingest", "--brokers", stack["KAFKA_BOOTSTRAP"],
                     "--clickhouse", f"{stack['CLICKHOUSE_HOST']}:{stack['CLICKHOUSE_PORT']}",
                     "--clickhouse-http-port", stack["CLICKHOUSE_HTTP_PORT"], "--database", database,
                     "--prefix", prefix, "--workers", "2", "--state-dir", str(state), "--epoch-s", "0.5"]
        self.state = state
        self.log = state / "ingest.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Ingest:
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
        return self

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def status(self) -> dict:
        return json.loads((self.state / "ingest-0.json").read_text())


@pytest.fixture
def pipe(stack: dict[str, str], tmp_path: Path, probes_built: None) -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    database = f"kp_{prefix}"
    ch = Client(stack["CLICKHOUSE_HOST"], port=int(stack["CLICKHOUSE_PORT"]))
    from kprobe.topics.admin import ensure_topics

    ensure_topics(stack["KAFKA_BOOTSTRAP"], prefix=prefix)
    ingest = Ingest(stack, prefix, database, tmp_path / "flow")
    ctx = {"stack": stack, "prefix": prefix, "db": database, "ch": ch, "ingest": ingest, "tmp": tmp_path}
    try:
        yield ctx
    finally:
        ingest.stop()
        if os.environ.get("KPROBE_TEST_KEEP_DATA") != "1":  # "1" (debugging) leaves the database and topics
            _drop(stack, ch, database, prefix)


def _drop(stack: dict[str, str], ch: Client, database: str, prefix: str) -> None:
    from kprobe.topics.admin import delete_topics
    from kprobe.topics.names import all_topics

    ch.execute(f"DROP DATABASE IF EXISTS {database}")
    delete_topics(stack["KAFKA_BOOTSTRAP"], [t.name for t in all_topics(prefix=prefix)])


def _ch_counts(ctx: dict) -> dict[str, int]:
    from kprobe.topics.names import EVENT_TABLES

    out = {}
    for t in EVENT_TABLES:
        try:
            out[t] = int(ctx["ch"].execute(f"SELECT count() FROM {ctx['db']}.{t}")[0][0])
        except Exception:
            out[t] = 0
    return out


def _wait_stored(ctx: dict, total: int, timeout: float = 240.0) -> dict[str, int]:
    """Until the expected total is stored; generous because a 2-vCPU host shared by parallel jobs
    can leave the flow minutes behind (a shortfall after this is reported with the flow's lag)."""
    deadline = time.monotonic() + timeout
    counts = _ch_counts(ctx)
    while sum(counts.values()) < total and time.monotonic() < deadline:
        time.sleep(0.5)
        counts = _ch_counts(ctx)
    time.sleep(2.0)  # anything beyond the expected total (a duplicate) would show up now
    return _ch_counts(ctx)


def _wait_flowing(ctx: dict, timeout: float = 30.0) -> None:
    """Until the flow has stored some rows (its start-up takes seconds on a busy 2-CPU host)."""
    deadline = time.monotonic() + timeout
    while sum(_ch_counts(ctx).values()) == 0:
        assert time.monotonic() < deadline, "the flow stored nothing: " + ctx["ingest"].log.read_text()[-2000:]
        time.sleep(0.3)
    assert ctx["ingest"].proc.poll() is None


def _writes(ctx: dict, pid: int, fd: int) -> int:
    return int(ctx["ch"].execute(
        f"SELECT count() FROM {ctx['db']}.syscall WHERE tgid = {pid} AND syscall = 'write' AND fd = {fd}")[0][0])


def _ledger_vs_tables(ctx: dict) -> dict:
    """Where rows went missing: per table, rows the ledger says were stored vs rows there, and the
    batches (id, ledger rows, rows present) that came up short."""
    ch, db = ctx["ch"], ctx["db"]
    out: dict = {}
    ledger = ch.execute(f"SELECT table, batch_id, max(rows), max(state), count() FROM {db}.kprobe_batches "
                        "GROUP BY table, batch_id")
    per: dict[str, dict[int, tuple[int, int, int]]] = {}
    for table, bid, rows, state, n in ledger:
        per.setdefault(table, {})[bid] = (rows, state, n)
    for table, batches in per.items():
        have = dict(ch.execute(f"SELECT batch_id, count() FROM {db}.`{table}` GROUP BY batch_id"))
        short = [(b, r, have.get(b, 0), st) for b, (r, st, _) in batches.items() if have.get(b, 0) != r]
        out[table] = {"ledger_rows": sum(r for r, _, _ in batches.values()), "table_rows": sum(have.values()),
                      "batches": len(batches), "short_batches": short[:10], "rows_without_ledger":
                      sum(n for b, n in have.items() if b not in batches)}
    return out


def _check_exact(ctx: dict, stats: dict, proc: subprocess.Popen) -> dict[str, int]:
    """Everything the agent accepted is stored once; the workload's writes are all there."""
    fd, n = (int(x) for x in proc.stdout.readline().split())
    k = stats["kafka"]
    assert k["dropped_total"] == 0, k
    assert k["spool_rows"] == 0 and k["in_flight_rows"] == 0, k
    assert k["delivered_rows"] == k["accepted_rows"], k
    counts = _wait_stored(ctx, k["accepted_rows"])
    flow = ctx["ingest"].status()
    diag = {key: flow.get(key) for key in ("lag_total", "lag", "rows_written", "consumed_messages", "dlq_messages",
                                           "dlq_reasons", "sink_errors", "source_errors", "duplicate_rows",
                                           "repaired_batches", "last_error")}
    if sum(counts.values()) != k["accepted_rows"]:
        diag["ledger_vs_tables"] = _ledger_vs_tables(ctx)
        # the full accounting also lands in the run's warnings summary, so CI shows where rows went missing
        warnings.warn(f"pipeline rows missing: counts={counts} written={stats['written']} kafka={k} flow={diag}",
                      stacklevel=1)
    assert sum(counts.values()) == k["accepted_rows"], (counts, stats["written"], k, diag)
    for table, n_written in stats["written"].items():
        assert counts[table] == n_written, (table, counts, stats["written"])
    assert _writes(ctx, proc.pid, fd) == n, f"{n} writes by the workload"
    return counts


# Issue 4 (was xfail): about 1 run in 5-10 lost the first message(s) of a new topic between the agent and Kafka:
# librdkafka reported them delivered though the broker had refused them (NOT_LEADER while the partition's log was
# being created) and only a later in-flight request was written ("implicit ack"). Fixed in the agent (one request
# in flight, offset-less acks re-sent) and topics/admin.py (topics are writable before the first produce);
# see the kafka_sink module doc.


def test_real_events_arrive_in_clickhouse_exactly(pipe):
    pipe["ingest"].start()
    cap = KafkaCapture(pipe["tmp"] / "agent", pipe["stack"]["KAFKA_BOOTSTRAP"], pipe["prefix"])
    p = cap.workload("steady_writer.py", str(pipe["tmp"] / "out"), "2", "4")
    assert p.wait(30) == 0
    import urllib.request

    from kprobe.api.prometheus import parse
    body = urllib.request.urlopen(f"http://127.0.0.1:{cap.session.metrics.port}/metrics", timeout=5).read().decode()
    assert parse(body)["kprobe_agent_kafka_accepted_rows_total"] > 0
    from kprobe.query.client import open_store
    from kprobe.query.stats import collect, render

    live = collect(open_store(pipe["tmp"] / "agent"), pipe["tmp"] / "agent")  # what `kprobe stats` shows
    assert live["recording"] and live["recorder"]["kafka"]["accepted_rows"] > 0
    assert "kafka 127.0.0.1" in render(live) and "delivered" in render(live)
    assert "sent to kafka" in render(live) and " stored " not in render(live).splitlines()[2], render(live)
    stats = cap.finish()
    counts = _check_exact(pipe, stats, p)
    assert counts["syscall"] > 0 and counts["processes"] > 0
    st = pipe["ingest"].status()
    assert sum(st["rows_written"].values()) == sum(counts.values()) and st["dlq_messages"] == 0, st


def test_kafka_down_30s_while_recording_loses_and_duplicates_nothing(pipe):
    pipe["ingest"].start()
    cap = KafkaCapture(pipe["tmp"] / "agent", pipe["stack"]["KAFKA_BOOTSTRAP"], pipe["prefix"])
    p = cap.workload("steady_writer.py", str(pipe["tmp"] / "out"), "2", "40")
    _wait_flowing(pipe)
    assert _stack("stop", "kafka").returncode == 0
    try:
        time.sleep(30)
        mid = cap.session.sink.snapshot()
        assert mid["mode"] == "spooling" and mid["spool_rows"] > 0, mid
    finally:
        r = _stack("start", "kafka", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert p.wait(60) == 0
    deadline = time.monotonic() + 60
    while cap.session.sink.snapshot()["spool_rows"] and time.monotonic() < deadline:
        time.sleep(0.5)
    stats = cap.finish()
    assert stats["kafka"]["resent_rows"] > 0, stats["kafka"]
    _check_exact(pipe, stats, p)


def test_dataflow_killed_and_restarted_midstream_stores_each_event_once(pipe):
    ingest = pipe["ingest"].start()
    cap = KafkaCapture(pipe["tmp"] / "agent", pipe["stack"]["KAFKA_BOOTSTRAP"], pipe["prefix"])
    p = cap.workload("steady_writer.py", str(pipe["tmp"] / "out"), "1", "20")
    _wait_flowing(pipe)
    ingest.kill()
    time.sleep(2)
    ingest.start()
    assert p.wait(30) == 0
    stats = cap.finish()
    _check_exact(pipe, stats, p)


def test_clickhouse_restarted_midstream_stores_each_event_once(pipe):
    pipe["ingest"].start()
    cap = KafkaCapture(pipe["tmp"] / "agent", pipe["stack"]["KAFKA_BOOTSTRAP"], pipe["prefix"])
    p = cap.workload("steady_writer.py", str(pipe["tmp"] / "out"), "1", "20")
    _wait_flowing(pipe)
    assert _stack("stop", "clickhouse").returncode == 0
    try:
        time.sleep(4)
    finally:
        r = _stack("start", "clickhouse")
        assert r.returncode == 0, r.stdout + r.stderr
    assert p.wait(30) == 0
    stats = cap.finish()
    _check_exact(pipe, stats, p)
    assert pipe["ingest"].status()["sink_errors"] > 0, "the outage was not noticed"


def test_malformed_message_goes_to_dlq_and_flow_keeps_running(pipe):
    from kprobe.topics.names import dlq_topic, event_topic

    brokers = pipe["stack"]["KAFKA_BOOTSTRAP"]
    prod = Producer({"bootstrap.servers": brokers})
    prod.produce(event_topic("offcpu", pipe["prefix"]), b"KPRB\x01\x00garbage that is no batch", b"evil-host")
    prod.produce(event_topic("syscall", pipe["prefix"]), b"not even the magic", b"evil-host")
    assert prod.flush(10) == 0
    pipe["ingest"].start()
    cap = KafkaCapture(pipe["tmp"] / "agent", brokers, pipe["prefix"])
    p = cap.workload("steady_writer.py", str(pipe["tmp"] / "out"), "2", "3")
    assert p.wait(30) == 0
    stats = cap.finish()
    _check_exact(pipe, stats, p)  # the good data behind the bad messages all arrived
    st = pipe["ingest"].status()
    assert st["dlq_messages"] == 2, st
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"g{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(dlq_topic(pipe["prefix"]), 0, 0)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    c.close()
    assert sorted(m.value() for m in got) == sorted([b"KPRB\x01\x00garbage that is no batch", b"not even the magic"])
    for m in got:
        h = dict(m.headers())
        assert h["kprobe-error"].startswith(b"decode:"), h
        assert h["kprobe-source-topic"].decode().startswith(pipe["prefix"] + ".events."), h
    assert os.path.exists(pipe["ingest"].state / "ingest-0.json")
