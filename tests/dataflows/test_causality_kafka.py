"""Kafka wire messages -> causality flow (decoding only; the broker path is kafka_io's, tested there)."""

from __future__ import annotations

import numpy as np
from bytewax.testing import TestingSink, TestingSource, run_main
from test_windowing import lock_scenario, tick

from kprobe.dataflows.causality import FlowOptions, build_flow
from kprobe.dataflows.causality_kafka import causal_topics, kafka_prepare
from kprobe.dataflows.kafka_io import Acked, RawMessage
from kprobe.dataflows.metrics import FlowMetrics
from kprobe.dataflows.windowing import SEC, WindowConfig
from kprobe.topics.names import event_topic
from kprobe.topics.wire import BatchHeader, encode


def _message(table: str, rows: list[dict], host: str, seq: int) -> RawMessage:
    cols = {k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else np.int64)
            for k in rows[0]}
    hdr = BatchHeader(table=table, host=host, batch_id=seq, seq=seq, rows=len(rows), min_ts=0, max_ts=0,
                      produced_ns=0)
    return RawMessage(event_topic(table), 0, seq, host.encode(), encode(hdr, cols), ())


def test_wire_messages_feed_the_flow_and_bad_ones_are_counted():
    assert event_topic("offcpu") in causal_topics() and event_topic("spans") in causal_topics()
    msgs = [_message(t, [{k: v for k, v in r.items() if k != "host"}], "kafka-host", i)
            for i, (t, r) in enumerate(lock_scenario() + [tick(1500)])]
    msgs.insert(2, RawMessage(event_topic("offcpu"), 0, 99, None, b"not a batch", ()))
    msgs.insert(3, RawMessage("kprobe.events.proc", 0, 100, None, b"ignored: not a causal table", ()))
    metrics = FlowMetrics("causality")
    acked = Acked()
    res: list = []
    flow = build_flow(TestingSource(msgs), results=TestingSink(res), prepare=kafka_prepare(metrics, acked),
                      options=FlowOptions(WindowConfig(allowed_lateness_ns=1 * SEC)))
    run_main(flow)
    done = [r for _, r in res if r.analysis is not None]
    assert [(r.op.host, r.analysis.root_cause.kind, r.analysis.root_cause.culprit.pid) for r in done] == \
        [("kafka-host", "lock_contention", 20)]
    assert metrics.dlq_messages == 1
    assert acked.get(event_topic("offcpu"), 0) == 100        # next offset after the bad message (99): all handled
    assert acked.get("kprobe.events.proc", 0) == 101
