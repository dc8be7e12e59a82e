"""`kprobe graph`: write one operation's causal analysis as a graph and print its root cause via Cypher.

The graph goes to the embedded ladybug database under the data directory by default, or to Neo4j
with --neo4j; the root cause printed is what the documented query (ROOT_CAUSE_QUERY) returns
from that graph, i.e. what any other Cypher client would see.
Exit codes: 0 ok, 1 graph store failure, 2 bad arguments or no data.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.cli.target import add_target_args, parsed_target

EPILOG = """\
examples:
  kprobe graph --pid 812 --from 2026-11-27T03:47:12Z --to 2026-11-27T03:47:13Z
                       analyse PID 812 over that second, write the graph under --data, print the root cause
  kprobe graph --span 5f2b0c1d9e8a7b6c --cypher
                       the same for an OTel span (from the spans table), and show the Cypher query used
  kprobe graph --incident span-5f2b0c1d9e8a7b6c
                       an id printed by `kprobe incidents` (same targets as `kprobe why`)
  kprobe graph --pid 812 --from T1 --to T2 --neo4j bolt://127.0.0.1:7687 --neo4j-auth neo4j/secret
                       write to Neo4j instead of the embedded graph

The graph (default: DATA/graph/causal.lbug, embedded ladybug) holds Operation, Cause,
Process, Connection and KernelEvents nodes joined by DELAYED_BY, CAUSED_BY,
PREEMPTED_BY, WOKEN_BY, BLAMES, WAITED_ON, EVIDENCED_BY and RAN_IN edges. Writing
the same analysis again changes nothing (MERGE on deterministic ids). The embedded
database has one writer: stop a running `kprobe dataflow causality` on the same DATA first.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "graph", help="write an operation's causal graph (embedded or Neo4j) and print its root cause",
        description="Analyse one operation (a span, or PID over a window), write the causal graph and print "
                    "the root cause returned by the documented Cypher query.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    add_target_args(p)
    p.add_argument("--neo4j", metavar="URI", help="write to Neo4j at this bolt:// URI instead of the embedded graph")
    p.add_argument("--neo4j-auth", default=os.environ.get("NEO4J_AUTH", "none"), metavar="USER/PASS",
                   help="Neo4j credentials, or 'none' (default: $NEO4J_AUTH or none)")
    p.add_argument("--cypher", action="store_true", help="also print the root-cause Cypher query and its parameters")
    p.add_argument("--json", action="store_true", help="machine-readable: op id, query result, analysis root cause")
    p.set_defaults(fn=run)
    return p


def _host(store, pid: int) -> str:  # noqa: ANN001 - Store
    rows = store.query_rows(f"SELECT host FROM offcpu WHERE tgid = {int(pid)} LIMIT 1")
    return str(rows[0]["host"]) if rows and rows[0].get("host") else socket.gethostname()


def run(args: argparse.Namespace) -> int:
    # lazy: the causal engine (msgspec) and the store client are ~60 ms of `kprobe --help`
    from kprobe.causal.graph import ROOT_CAUSE_QUERY, OperationRef, analysis_graph, interval_op_id, span_op_id
    from kprobe.causal.span_chain import SpanLookupError
    from kprobe.causal.target import explain
    from kprobe.causal.why import NoDataError
    from kprobe.query.client import QueryError

    target = parsed_target(args)
    with store_at(args.data) as store:
        try:
            analysis, span_analysis = explain(store, target)
            if span_analysis is not None:
                span = span_analysis.span
                pid, tid, t1, t2 = span.pid, span.tid or None, span.start_ns, span.end_ns
                op_ref = OperationRef(span_op_id(span.trace_id, span.span_id), "span", span.name)
                host = span.host or _host(store, pid)
            else:
                pid, tid, t1, t2 = target.pid, target.tid, target.from_ns, target.to_ns
                op_ref = None
                host = _host(store, pid)
        except (LookupError, ValueError, NoDataError, SpanLookupError) as e:
            return die(str(e))
        except QueryError as e:
            return die(f"query failed: {e}")
    op_ref = op_ref or OperationRef(interval_op_id(host, pid, tid, t1, t2), "interval",
                                    analysis.operation or f"{analysis.comm} window")
    delta = analysis_graph(analysis, host, op_ref)
    try:
        graph, where = _open_graph(args)
    except Exception as e:  # a locked database or an unreachable server: say which and why
        return die(f"cannot open the graph store: {e}", 1)
    try:
        graph.write(delta)
        row = graph.root_cause(delta.op_id)
    except Exception as e:
        return die(f"graph write/query failed on {where}: {e}", 1)
    finally:
        graph.close()
    rc = analysis.root_cause
    if args.json:
        json.dump({"op_id": delta.op_id, "graph": where, "nodes": len(delta.nodes), "edges": len(delta.edges),
                   "query_root_cause": row, "analysis_root_cause": rc.to_json(with_children=False) if rc else None},
                  sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"operation {delta.op_id}: {len(delta.nodes)} nodes, {len(delta.edges)} edges written to {where}")
    if args.cypher:
        print("root-cause query ($op = " + json.dumps(delta.op_id) + "):")
        print(ROOT_CAUSE_QUERY)
    if row is None:
        print("root cause: none (no delay found in the window)")
    else:
        print(f"root cause: {row['kind']} {row['delay_ns'] / 1e6:.1f} ms, culprit {row['comm'] or '?'} "
              f"PID {row['pid']} ({row['summary']}), {row['depth']} hop(s) from the operation")
    return 0


def _open_graph(args: argparse.Namespace):  # -> (graph store, where it is)
    if args.neo4j:
        from kprobe.sinks.graph_neo4j import Neo4jGraph, parse_auth  # lazy: the Neo4j driver

        return Neo4jGraph(args.neo4j, auth=parse_auth(args.neo4j_auth)), args.neo4j
    from kprobe.sinks.graph_ladybug import LadybugGraph, default_path  # lazy: the embedded graph engine

    return LadybugGraph.in_data_dir(args.data), str(default_path(args.data))
