"""`kprobe dataflow causality`: run the bytewax causality flow over the store of a data directory
(or the scale-out topics); a flow of `kprobe dataflow` (kprobe/cli/dataflow.py registers it)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kprobe.cli.common import add_data_arg, die

EPILOG = """\
examples:
  kprobe dataflow causality --data /var/lib/kprobe
        analyse every slow operation (spans, syscalls >= 100 ms) recorded so far, then exit
  kprobe dataflow causality --follow --workers 2 --graph bolt://neo4j:7687
        keep tailing the store (or the running recorder), write causal edges to Neo4j
  kprobe dataflow causality --brokers kafka-0:9092 --graph bolt://neo4j:7687 --workers 2
        scale-out: consume the causal tables' topics, write causal edges to Neo4j
  python -m bytewax.run "kprobe.dataflows.causality:store_flow('/var/lib/kprobe')" -w 2
        the same flow under bytewax's own runner

Watermark: an operation is analysed once events --lateness-s newer than its end have been
seen (or the input has been idle 2 s); later events re-open and re-emit it. Graph writes
and analysis rows (table causal_analysis) are idempotent per operation.
"""


def add_parser(flows: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = flows.add_parser("causality", help="events -> causal analysis -> graph (ladybug/Neo4j) + analysis rows",
                         description="Window kernel events and spans per host, analyse each slow operation when "
                                     "the watermark passes its end, write the causal graph and analysis rows.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p, "data directory whose store is read")
    p.add_argument("--graph", default="ladybug",
                   help="'ladybug' (embedded, DATA/graph/causal.lbug) or a bolt:// URI for Neo4j (default: %(default)s)")
    p.add_argument("--neo4j-auth", default=os.environ.get("NEO4J_AUTH", "none"), metavar="USER/PASS",
                   help="Neo4j credentials or 'none' (default: $NEO4J_AUTH or none)")
    p.add_argument("--neo4j", metavar="URI", default=None, help="same as --graph URI: causal edges to Neo4j")
    p.add_argument("--brokers", default=None,
                   help="read the scale-out Kafka topics instead of the store (runs until Ctrl-C)")
    p.add_argument("--prefix", default="kprobe", help="topic prefix with --brokers (default: %(default)s)")
    p.add_argument("--clickhouse", metavar="HOST:PORT", default=None,
                   help="analysis rows to this ClickHouse server (native port) instead of the store")
    p.add_argument("--database", default="kprobe", help="ClickHouse database for --clickhouse (default: %(default)s)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="bytewax recovery snapshots here: a restarted flow resumes (default: no recovery)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (Kafka mode)")
    p.add_argument("--follow", action="store_true", help="keep tailing the store (default: read what is there, exit)")
    p.add_argument("--workers", type=int, default=1, help="bytewax worker threads (default: %(default)s)")
    p.add_argument("--lateness-s", type=float, default=2.0,
                   help="allowed lateness behind the newest event time (default: %(default)s)")
    p.add_argument("--slow-ms", type=float, default=100.0,
                   help="a syscall at least this long is an operation to explain (default: %(default)s)")
    p.add_argument("--watch-pid", type=int, nargs="+", metavar="PID",
                   help="only these pids' slow syscalls are operations (default: all; spans always are)")
    p.set_defaults(fn=run)
    return p


class _CountingRows:
    def __init__(self, inner):
        self.inner = inner
        self.analyses = 0

    def write(self, rows: list[dict]) -> int:
        self.analyses += len(rows)
        return self.inner.write(rows)


def _rows_factory(args: argparse.Namespace, store):
    from kprobe.sinks.analysis_rows import AnalysisRowsSink, ClickHouseSql

    if args.clickhouse:
        host, _, port = args.clickhouse.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--clickhouse wants HOST:PORT, got {args.clickhouse!r}")
        ch = ClickHouseSql(host, int(port), args.database)
        return AnalysisRowsSink(ch, ch.features)
    return AnalysisRowsSink(store) if store is not None else None


def _recovery(state_dir: Path | None):
    if state_dir is None:
        return None
    from bytewax.recovery import RecoveryConfig, init_db_dir

    rec = state_dir / "recovery"
    if not any(rec.glob("part-*.sqlite3")):
        rec.mkdir(parents=True, exist_ok=True)
        init_db_dir(rec, 1)
    return RecoveryConfig(str(rec))


def run(args: argparse.Namespace) -> int:
    # lazy: bytewax, the graph stores and numpy are ~0.5 s of `kprobe --help`
    from bytewax.testing import cluster_main

    from kprobe.dataflows.causality import FlowOptions, StoreTailSource, build_flow, graph_factory
    from kprobe.dataflows.windowing import SEC, WindowConfig
    from kprobe.query.client import QueryError, open_store

    if args.workers < 1:
        return die("--workers must be at least 1")
    if args.neo4j:
        args.graph = args.neo4j
    window = WindowConfig(allowed_lateness_ns=int(args.lateness_s * SEC), slow_syscall_ns=int(args.slow_ms * 1e6),
                          watch_pids=frozenset(args.watch_pid) if args.watch_pid else None)
    try:
        graph = graph_factory(args.data, args.graph, args.neo4j_auth)
        store = None if args.brokers else open_store(args.data, write=True)  # it writes analysis rows
        rows = _CountingRows(_rows_factory(args, store)) if (args.clickhouse or store is not None) else None
        recovery = _recovery(args.state_dir)
    except (ValueError, QueryError, OSError) as e:
        return die(str(e))
    server = None
    if args.brokers:
        from kprobe.dataflows.causality_kafka import kafka_flow
        from kprobe.dataflows.metrics import FlowMetrics

        metrics = FlowMetrics("causality")
        flow = kafka_flow(args.brokers, args.data, args.graph, args.prefix, FlowOptions(window), args.neo4j_auth,
                          metrics, rows=(lambda: rows) if rows else None)
        if args.metrics_port is not None:
            from kprobe.api.prometheus import MetricsServer

            server = MetricsServer(args.metrics_port, metrics.prometheus).start()
    else:
        flow = build_flow(StoreTailSource(lambda: store, follow=args.follow), graph, (lambda: rows) if rows else None,
                          options=FlowOptions(window))
    try:
        cluster_main(flow, [], 0, worker_count_per_proc=args.workers, recovery_config=recovery)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        return die(str(e), 1)
    finally:
        if server is not None:
            server.stop()
    if rows is not None:
        print(f"kprobe: {rows.analyses} analyses emitted ({rows.inner.inserted} new rows in causal_analysis, "
              f"{rows.inner.skipped} already stored); graph: {args.graph}", file=sys.stderr)
    return 0
