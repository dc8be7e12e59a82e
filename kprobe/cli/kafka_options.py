"""`kprobe record --kafka BROKERS`: the scale-out options and the session they start."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_kafka_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (Kafka)", "publish to Kafka instead of the local store; "
                             "e.g. kprobe record --kafka kafka-0:9092,kafka-1:9092 --metrics-port 9463")
    g.add_argument("--kafka", metavar="BROKERS", default=None,
                   help="Kafka bootstrap servers; events go to kprobe.events.<type> topics (default: local store)")
    g.add_argument("--kafka-prefix", default="kprobe", help="topic prefix (default: %(default)s)")
    g.add_argument("--spool-mb", type=int, default=1024,
                   help="bound of the disk queue used while Kafka is unreachable, in DATA/spool (default: %(default)s)")
    g.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on PORT (default: off)")
    g.add_argument("--metrics-bind", default="127.0.0.1",
                   help="address of the metrics endpoint; 0.0.0.0 in a pod (default: %(default)s)")
    g.add_argument("--batch-key-file", type=Path, default=None, metavar="PATH",
                   help="the deployment's batch key (>= 16 bytes, mode 0600): batches carry an HMAC the ingest "
                        "dataflow checks, so nobody else writing to the topics can forge or pre-claim batches")


def start_kafka_session(args: argparse.Namespace, config, after_probes=None):  # noqa: ANN001 - RecorderConfig
    # lazy: the recorder, Kafka client and numpy are for `record --kafka`, not for every command's parser
    from kprobe.agent.kafka_session import KafkaSession
    from kprobe.sinks.kafka import KafkaSinkConfig
    from kprobe.topics.wire import load_batch_key

    key = load_batch_key(args.batch_key_file) if getattr(args, "batch_key_file", None) else None
    sink = KafkaSinkConfig(brokers=args.kafka, spool_dir=args.data / "spool", spool_max_bytes=args.spool_mb << 20,
                           prefix=args.kafka_prefix, batch_key=key)
    return KafkaSession(args.data, config, sink, metrics_port=args.metrics_port, metrics_bind=args.metrics_bind,
                        after_probes=after_probes).start()
