"""Scale-out mode of `kprobe record --kafka BROKERS`: the same Recorder, publishing to Kafka.

No local store: queries go to the ClickHouse server the ingest dataflow fills. The control socket
still answers `kprobe stats` (recorder counters plus the Kafka sink's delivery counters), and a
Prometheus endpoint exposes the same numbers for the node's scraper.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kprobe.agent.control import ControlServer
from kprobe.agent.host_identity import HostIdentity
from kprobe.agent.probeset import ProbeSet
from kprobe.agent.recorder import Recorder, RecorderConfig
from kprobe.agent.status import RecorderStats
from kprobe.api.prometheus import Metric, MetricsServer
from kprobe.sinks.kafka import KafkaSink, KafkaSinkConfig
from kprobe.topics.admin import ensure_topics
from kprobe.topics.malloc import keep_freed_memory


@dataclass
class KafkaRecorderStats(RecorderStats):
    """Recorder counters plus the sink's: one status.json tells where every event went."""

    sink: KafkaSink | None = field(default=None, repr=False)

    def status_fields(self) -> dict[str, Any]:
        d = super().status_fields()
        sink = d.pop("sink", None)       # the producer itself is not a counter
        if sink is not None:
            d["kafka"] = sink.snapshot()
            d["lost_total"] = d.get("lost_total", 0) + d["kafka"]["dropped_total"]
        return d


def agent_metrics(stats: dict) -> list[Metric]:
    k = stats.get("kafka", {})
    drained = stats.get("drained", {})
    drops = stats.get("kernel_drops_total", {})
    return [
        Metric("kprobe_agent_events_drained_total", "events read from the ring buffers", "counter",
               tuple(({"type": t}, v) for t, v in drained.items())),
        Metric("kprobe_agent_kernel_drops_total", "events lost in the kernel (ring full)", "counter",
               tuple(({"type": t}, v) for t, v in drops.items())),
        Metric("kprobe_agent_kafka_accepted_rows_total", "rows handed to the Kafka sink", "counter",
               (({}, k.get("accepted_rows", 0)),)),
        Metric("kprobe_agent_kafka_delivered_rows_total", "rows acknowledged by Kafka", "counter",
               (({}, k.get("delivered_rows", 0)),)),
        Metric("kprobe_agent_kafka_delivered_bytes_total", "message bytes acknowledged by Kafka", "counter",
               (({}, k.get("delivered_bytes", 0)),)),
        Metric("kprobe_agent_kafka_dropped_rows_total", "rows dropped, by reason", "counter",
               tuple(({"reason": r}, v) for r, v in k.get("dropped", {}).items()) or (({"reason": "none"}, 0),)),
        Metric("kprobe_agent_kafka_in_flight_rows", "rows sent, not yet acknowledged", "gauge",
               (({}, k.get("in_flight_rows", 0)),)),
        Metric("kprobe_agent_spool_rows", "rows waiting in the disk spool", "gauge", (({}, k.get("spool_rows", 0)),)),
        Metric("kprobe_agent_spool_bytes", "bytes in the disk spool", "gauge", (({}, k.get("spool_bytes", 0)),)),
        Metric("kprobe_agent_spooling", "1 while Kafka is unreachable and messages go to disk", "gauge",
               (({}, 1 if k.get("mode") == "spooling" else 0),)),
        *identity_metrics(stats),
    ]


def identity_metrics(stats: dict) -> list[Metric]:
    """Pod identity (kubelet fetches that failed) and the capability self-check: what degrades, per feature."""
    p, caps = stats.get("pod_identity", {}), stats.get("capabilities", {})
    return [
        Metric("kprobe_agent_kubelet_errors_total", "kubelet pod list fetches that failed (pod names missing)",
               "counter", (({}, p.get("kubelet_errors", 0)),)),
        Metric("kprobe_agent_processes_in_pods_total", "processes found in a pod's cgroup, and named by the kubelet",
               "counter", (({"named": "false"}, p.get("processes_in_pods", 0) - p.get("processes_named_by_kubelet", 0)),
                           ({"named": "true"}, p.get("processes_named_by_kubelet", 0)))),
        Metric("kprobe_agent_capability_missing", "1 per feature degraded for want of a capability", "gauge",
               tuple(({"feature": f, "capability": "+".join("CAP_" + c for c in m)}, 1)
                     for f, m in caps.get("missing", {}).items()) or (({"feature": "none", "capability": "none"}, 0),)),
    ]


def _no_store(sql: str, fmt: str) -> bytes:
    raise RuntimeError("this recorder publishes to Kafka (scale-out mode): query the ClickHouse server that "
                       "`kprobe dataflow ingest` fills")


@dataclass
class KafkaSession:
    data_dir: Path
    config: RecorderConfig
    sink_config: KafkaSinkConfig
    metrics_port: int | None = None  # None: no endpoint; 0: any free port
    metrics_bind: str = "127.0.0.1"
    after_probes: Callable[[], None] | None = None  # as EmbeddedSession.after_probes

    def start(self) -> KafkaSession:
        probes = ProbeSet(self.config.probes).open()
        try:
            if self.after_probes is not None:
                self.after_probes()  # before librdkafka's threads: capabilities are per thread
            return self._start(probes)
        except BaseException:
            probes.close()
            raise

    def _start(self, probes: ProbeSet) -> KafkaSession:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        keep_freed_memory(trim_bytes=256 << 20)  # multi-MB batches without page faults (topics/malloc.py)
        ready = True
        try:  # returns when every partition is writable: the first produce is never refused (kafka_sink doc)
            ensure_topics(self.sink_config.brokers, timeout=10.0, prefix=self.sink_config.prefix)
        except Exception as e:  # Kafka down at start: the spool takes over, the sink creates the topics later
            print(f"kprobe: cannot create topics now ({e}); spooling until Kafka answers", file=sys.stderr)
            ready = False
        host = self.config.host or HostIdentity.read().key()   # one key: the rows' host and the messages' key
        self.sink = KafkaSink(self.sink_config, host=host, topics_ready=ready)
        self.config.status_path = self.data_dir / "status.json"
        if self.config.hold_ms is None:   # the dataflows' freshness waits on every batch: none is held
            self.config.hold_ms = 0.0
        self.recorder = Recorder(self.config, self.sink, stats=KafkaRecorderStats(sink=self.sink), host=host)
        self.recorder.start(probes)
        self.control = ControlServer(self.data_dir, _no_store, self.stats).start()
        self.metrics = None
        if self.metrics_port is not None:
            self.metrics = MetricsServer(self.metrics_port, lambda: agent_metrics(self.stats()),
                                         self.metrics_bind).start()
        return self

    def stats(self) -> dict:
        return self.recorder.stats.to_dict()

    def stop(self) -> None:
        self.recorder.stop()
        self.sink.close()
        self.recorder.stats.finished = True
        self.recorder.stats.save(self.data_dir / "status.json")  # final counters after the last deliveries
        self.control.stop()
        if self.metrics is not None:
            self.metrics.stop()
