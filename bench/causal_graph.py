"""Benchmark: causal graph writes and the root-cause query on ladybug (and Neo4j with --neo4j), and the
causality windowing step's throughput.

Why: the causality flow writes one subgraph per slow operation and `kprobe graph`
answers with one Cypher query; both must stay cheap as the graph grows (thousands of
operations sharing processes). Prints numbers, asserts nothing.

  .venv/bin/python bench/causal_graph.py [--ops 2000] [--neo4j bolt://127.0.0.1:7887]

Operations are synthetic three-hop analyses (remote_service <- cpu_preemption <-
memory_pressure) over 50 victim and 20 culprit processes, built by the real
``analyze`` from hand-made evidence, so node/edge shapes are the real ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "causal"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dataflows"))

from sample_analyses import three_hop  # noqa: E402

from kprobe.causal.graph import analysis_graph  # noqa: E402


def deltas(n: int):
    base = three_hop()
    out = []
    for i in range(n):
        a = base
        a.interval = type(a.interval)(10 + i % 50, a.interval.start_ns + i * 1_000_000_000,
                                      a.interval.end_ns + i * 1_000_000_000)
        out.append(analysis_graph(a, host=f"bench-{i % 3}"))
    return out


def bench_graph(name: str, g, ds, batch: int) -> None:
    t = time.perf_counter()
    for i in range(0, len(ds), batch):
        g.write_many(ds[i:i + batch])
    w = time.perf_counter() - t
    edges = sum(len(d.edges) for d in ds)
    nodes = sum(len(d.nodes) for d in ds)
    lat = []
    for d in ds[:: max(1, len(ds) // 200)]:
        t = time.perf_counter()
        row = g.root_cause(d.op_id)
        lat.append(time.perf_counter() - t)
        assert row is not None and row["kind"] == "memory_pressure"
    t = time.perf_counter()
    for d in ds[:20]:
        g.write(d)
    rw = (time.perf_counter() - t) / min(20, len(ds))
    print(f"{name}: wrote {len(ds)} analyses ({nodes} nodes, {edges} edges) in batches of {batch} in {w:.2f} s = "
          f"{len(ds) / w:.0f} analyses/s, {edges / w:.0f} edges/s; single re-write (MERGE, replaces) "
          f"{rw * 1e3:.1f} ms/analysis")
    print(f"{name}: root-cause query median {statistics.median(lat) * 1e3:.2f} ms, "
          f"p95 {sorted(lat)[int(0.95 * (len(lat) - 1))] * 1e3:.2f} ms over {len(lat)} queries")


def bench_window(rows_n: int) -> None:
    from test_windowing import HOST, lock_scenario, offcpu

    from kprobe.dataflows.causal_step import CausalityState, EventBatch
    from kprobe.dataflows.windowing import SEC, WindowConfig

    st = CausalityState.new(HOST, WindowConfig(allowed_lateness_ns=1 * SEC, retention_ns=5 * SEC))
    batch = 1000
    n_ops = 0
    t = time.perf_counter()
    for b in range(rows_n // batch):
        base = b * 100          # 100 ms of event time per batch
        rows = tuple(offcpu(1000 + j % 40, 1000 + j % 40, base + j % 100, base + j % 100 + 1, comm="bg")
                     for j in range(batch))
        n_ops += len(st.on_rows(EventBatch(HOST, "offcpu", rows)))
        if b % 10 == 0:          # one lock-wait operation per second of event time
            for tbl, r in lock_scenario():
                r = dict(r)
                shift = base * 1_000_000
                r["ts"] += shift
                r["end_ts"] += shift
                if r.get("wake_ts"):
                    r["wake_ts"] += shift
                n_ops += len(st.on_rows(EventBatch(HOST, tbl, (r,))))
    n_ops += len(st.on_end())
    dt = time.perf_counter() - t
    print(f"windowing+analysis: {rows_n} rows in {dt:.2f} s = {rows_n / dt:.0f} rows/s, {n_ops} operations "
          f"analysed ({st.window.stats.late} late, {st.window.stats.too_late} too late)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100, help="analyses per write transaction (default: 100)")
    ap.add_argument("--neo4j", default=None, help="also bench Neo4j at this bolt:// URI (no auth)")
    args = ap.parse_args()
    ds = deltas(args.ops)
    from kprobe.sinks.graph_ladybug import LadybugGraph

    with tempfile.TemporaryDirectory() as d:
        g = LadybugGraph(Path(d) / "g.lbug")
        bench_graph("ladybug", g, ds, args.batch)
        g.close()
    if args.neo4j:
        from kprobe.sinks.graph_neo4j import Neo4jGraph

        g = Neo4jGraph(args.neo4j)
        try:
            bench_graph("neo4j", g, ds, args.batch)
        finally:
            for h in ("bench-0", "bench-1", "bench-2"):
                g.query("MATCH (n) WHERE n.id CONTAINS $h DETACH DELETE n", {"h": h})
            g.close()
    bench_window(args.rows)


if __name__ == "__main__":
    main()
