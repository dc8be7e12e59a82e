"""Counters of one dataflow process, shared by its workers, exposed as Prometheus text and JSON.

Created by the flow factory and handed to the source and sink it builds (no module state), so
two flows in one process (tests) keep separate numbers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kprobe.api.prometheus import Metric

# Freshness histogram edges (seconds): kernel event -> its row queryable in ClickHouse.
FRESHNESS_EDGES = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, np.inf])


def quantile_from_hist(counts: list[int], q: float) -> float:
    """Upper edge of the bucket holding the q-quantile (conservative: never under-reports)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    acc = 0
    for i, c in enumerate(counts):
        acc += c
        if acc >= q * total:
            return float(FRESHNESS_EDGES[i + 1])
    return float("inf")


@dataclass
class FlowMetrics:
    flow: str
    consumed_messages: dict[str, int] = field(default_factory=dict)  # topic -> messages
    consumed_bytes: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)  # table -> rows
    duplicate_rows: int = 0
    repaired_batches: int = 0
    write_rounds: int = 0  # ledger rounds of the ClickHouse writer (each: a few INSERTs, new parts)
    insert_requests: int = 0  # INSERTs of table rows (one per table per round)
    dlq_messages: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    sink_errors: int = 0  # failed writes (retried until they succeed)
    source_errors: int = 0
    lag: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> messages behind
    freshness_s: float = 0.0  # now - agent encode time of the last written batch
    freshness_hist: list[int] = field(default_factory=lambda: [0] * (len(FRESHNESS_EDGES) - 1))
    last_error: str = ""
    started_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, key: str, n: int) -> None:
        with self._lock:
            d = getattr(self, name)
            d[key] = d.get(key, 0) + n

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def observe_freshness(self, ages_s: np.ndarray) -> None:
        counts, _ = np.histogram(ages_s, FRESHNESS_EDGES)
        with self._lock:
            self.freshness_hist = [a + int(b) for a, b in zip(self.freshness_hist, counts, strict=True)]

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "flow": self.flow, "pid": os.getpid(), "consumed_messages": dict(self.consumed_messages),
                "consumed_bytes": self.consumed_bytes, "rows_written": dict(self.rows_written),
                "duplicate_rows": self.duplicate_rows, "repaired_batches": self.repaired_batches,
                "write_rounds": self.write_rounds, "insert_requests": self.insert_requests,
                "dlq_messages": self.dlq_messages, "dlq_reasons": dict(self.dlq_reasons),
                "sink_errors": self.sink_errors, "source_errors": self.source_errors, "lag": dict(self.lag),
                "lag_total": sum(self.lag.values()), "freshness_s": self.freshness_s, "last_error": self.last_error,
                "freshness_hist": list(self.freshness_hist), "freshness_edges_s": FRESHNESS_EDGES[1:].tolist(),
                "freshness_p50_s": quantile_from_hist(self.freshness_hist, 0.5),
                "freshness_p99_s": quantile_from_hist(self.freshness_hist, 0.99),
                "uptime_s": time.time() - self.started_at,
            }

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, path)

    def _buckets(self, s: dict) -> tuple[tuple[dict[str, str], float], ...]:
        """Prometheus histogram series as samples of one metric family (_bucket/_count)."""
        out = []
        acc = 0
        for edge, c in zip(s["freshness_edges_s"], s["freshness_hist"], strict=True):
            acc += c
            out.append(({"flow": self.flow, "le": "+Inf" if edge == float("inf") else f"{edge:g}"}, acc))
        return tuple(out)

    def prometheus(self) -> list[Metric]:
        s = self.snapshot()
        f = {"flow": self.flow}
        return [
            Metric("kprobe_dataflow_consumed_messages_total", "Kafka messages read", "counter",
                   tuple(({**f, "topic": t}, v) for t, v in s["consumed_messages"].items()) or ((f, 0),)),
            Metric("kprobe_dataflow_consumed_bytes_total", "Kafka message bytes read", "counter",
                   ((f, s["consumed_bytes"]),)),
            Metric("kprobe_dataflow_rows_written_total", "rows stored in ClickHouse", "counter",
                   tuple(({**f, "table": t}, v) for t, v in s["rows_written"].items()) or ((f, 0),)),
            Metric("kprobe_dataflow_duplicate_rows_total", "rows skipped as already stored (batch ledger)",
                   "counter", ((f, s["duplicate_rows"]),)),
            Metric("kprobe_dataflow_dlq_messages_total", "messages sent to the dead-letter topic", "counter",
                   ((f, s["dlq_messages"]),)),
            Metric("kprobe_dataflow_sink_errors_total", "failed sink writes (retried)", "counter",
                   ((f, s["sink_errors"]),)),
            Metric("kprobe_dataflow_consumer_lag", "messages between the committed read position and the end",
                   "gauge", tuple(({**f, "partition": p}, v) for p, v in s["lag"].items()) or ((f, 0),)),
            Metric("kprobe_dataflow_consumer_lag_total", "sum of consumer lag", "gauge", ((f, s["lag_total"]),)),
            Metric("kprobe_dataflow_freshness_seconds", "agent encode -> stored, last batch", "gauge",
                   ((f, s["freshness_s"]),)),
            Metric("kprobe_dataflow_event_freshness_bucket", "events by kernel event -> queryable seconds (le, cumulative)", "counter",
                   self._buckets(s)),
        ]
