"""`kprobe dataflow FLOW`: the long-running bytewax dataflows of the scale-out pipeline.

``ingest`` (Kafka -> ClickHouse server) and ``status`` are here; ``causality`` is
:mod:`kprobe.cli.dataflow_causality`, registered under the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kprobe.cli import dataflow_causality
from kprobe.cli.common import die

EPILOG = """\
examples:
  kprobe dataflow ingest --brokers kafka-0:9092,kafka-1:9092 --clickhouse ch:9000 --clickhouse-http-port 8123
  kprobe dataflow ingest --brokers 127.0.0.1:9092 --workers 2 --processes 2 --metrics-port 9464
  kprobe dataflow status --state-dir /var/lib/kprobe/dataflow

Reads every kprobe.events.* topic (and kprobe.spans), writes each batch to the ClickHouse server
exactly once (batch ledger), sends what cannot be decoded or stored to kprobe.dlq and keeps going.
A restarted flow resumes from the recovery snapshots in --state-dir/recovery (keep that directory
on a persistent volume). Prometheus text metrics on --metrics-port + process id: consumer lag,
throughput, duplicates skipped, DLQ count.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("dataflow", help="scale-out dataflows (Kafka -> ClickHouse server)",
                       description="Long-running bytewax dataflows of the scale-out pipeline.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    flows = p.add_subparsers(dest="flow", metavar="FLOW")
    env_brokers = os.environ.get("KPROBE_KAFKA", "127.0.0.1:9092")
    env_ch = os.environ.get("KPROBE_CLICKHOUSE", "127.0.0.1:9000")
    i = flows.add_parser("ingest", help="topics -> ClickHouse server, exactly once", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("--brokers", default=env_brokers, help="Kafka bootstrap servers (default: $KPROBE_KAFKA or %(default)s)")
    i.add_argument("--clickhouse", default=env_ch, metavar="HOST:PORT",
                   help="ClickHouse native protocol address: tables, batch ledger, queries "
                        "(default: $KPROBE_CLICKHOUSE or %(default)s)")
    i.add_argument("--clickhouse-http-port", type=int,
                   default=int(os.environ.get("KPROBE_CLICKHOUSE_HTTP_PORT", "8123")), metavar="PORT",
                   help="the same server's HTTP port: rows are inserted there as Native-format blocks, "
                        "the cheapest path (default: $KPROBE_CLICKHOUSE_HTTP_PORT or %(default)s)")
    i.add_argument("--database", default="kprobe", help="ClickHouse database, created if missing (default: %(default)s)")
    i.add_argument("--prefix", default="kprobe", help="topic prefix (default: %(default)s)")
    i.add_argument("--workers", type=int, default=2, help="worker threads per process (default: %(default)s)")
    i.add_argument("--writers", type=int, default=2,
                   help="concurrent ClickHouse write rounds per worker, acknowledged in reading order; 2 lets "
                        "the server use two cores on a backlog (default: %(default)s)")
    i.add_argument("--processes", type=int, default=1, help="worker processes, a timely cluster (default: %(default)s)")
    i.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    i.add_argument("--base-port", type=int, default=2101, help="cluster ports base_port+i (default: %(default)s)")
    i.add_argument("--state-dir", type=Path, default=Path("/var/lib/kprobe/dataflow"),
                   help="recovery snapshots and status files (default: %(default)s)")
    i.add_argument("--epoch-s", type=float, default=1.0,
                   help="snapshot interval: at most this much is re-read after a crash (default: %(default)s)")
    i.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (+ process id)")
    i.add_argument("--metrics-bind", default="127.0.0.1", help="metrics address; 0.0.0.0 in a pod (default: %(default)s)")
    i.add_argument("--batch-key-file", type=Path, default=None, metavar="PATH",
                   help="the deployment's batch key (as given to the agents): batches without a valid HMAC go to "
                        "the dead-letter topic, counted (default: accept any batch)")
    i.set_defaults(fn=run_ingest)
    s = flows.add_parser("status", help="counters of the dataflow processes (from their status files)")
    s.add_argument("--state-dir", type=Path, default=Path("/var/lib/kprobe/dataflow"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=run_status)
    dataflow_causality.add_parser(flows)
    p.set_defaults(fn=lambda a: (p.print_help(), 2)[1])
    return p


def run_ingest(args: argparse.Namespace) -> int:
    # lazy: bytewax, the Kafka and ClickHouse clients and numpy are ~0.6 s of `kprobe --help`
    from kprobe.dataflows.ingest import IngestConfig, run
    from kprobe.topics.wire import load_batch_key

    host, _, port = args.clickhouse.rpartition(":")
    if not host or not port.isdigit():
        return die(f"--clickhouse wants HOST:PORT, got {args.clickhouse!r}")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        key = load_batch_key(args.batch_key_file) if args.batch_key_file else None
    except (OSError, ValueError) as e:
        return die(str(e))
    cfg = IngestConfig(brokers=args.brokers, clickhouse_host=host, clickhouse_port=int(port),
                       clickhouse_http_port=args.clickhouse_http_port, database=args.database,
                       prefix=args.prefix, workers=args.workers, writers=args.writers, processes=args.processes,
                       process_id=args.process_id, base_port=args.base_port, state_dir=args.state_dir,
                       epoch_s=args.epoch_s, metrics_port=args.metrics_port,
                       metrics_bind=args.metrics_bind, batch_key=key)
    return run(cfg)


def run_status(args: argparse.Namespace) -> int:
    from kprobe.query.stats import render_dataflows  # lazy: numpy, via the table definitions

    files = sorted(args.state_dir.glob("ingest-*.json"))
    data = [json.loads(f.read_text()) for f in files]
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not data:
        print(f"no dataflow status files in {args.state_dir}", file=sys.stderr)
        return 1
    else:
        print(render_dataflows(data))
    return 0
