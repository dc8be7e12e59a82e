"""The embedded graph sink (ladybug): idempotent writes and the documented root-cause query."""

from __future__ import annotations

from kprobe.causal.graph import analysis_graph
from kprobe.sinks.graph_ladybug import LadybugGraph
from tests.causal.sample_analyses import preemption_only, three_hop


def counts(g, host: str) -> tuple[int, int]:
    n = g.query("MATCH (n) WHERE n.id CONTAINS $h RETURN count(n) AS c", {"h": host})[0]["c"]
    e = g.query("MATCH (a)-[r]->(b) WHERE a.id CONTAINS $h RETURN count(r) AS c", {"h": host})[0]["c"]
    return n, e


def test_root_cause_query_returns_the_analysis_root_and_rewrites_change_nothing(tmp_path):
    g = LadybugGraph.in_data_dir(tmp_path)
    try:
        for a in (three_hop(), preemption_only()):
            delta = analysis_graph(a, host="hostA")
            g.write(delta)
            before = counts(g, "hostA")
            g.write(delta)
            g.write(analysis_graph(a, host="hostA"))
            assert counts(g, "hostA") == before
            row = g.root_cause(delta.op_id)
            rc = a.root_cause
            assert row is not None
            assert (row["kind"], row["pid"], row["delay_ns"]) == (rc.kind, rc.culprit.pid, rc.delay_ns)
            assert row["depth"] == len(a.chain)
        # both analyses share process nodes by (host, pid) only where pids coincide: counts add up exactly
        n, e = counts(g, "hostA")
        d1, d2 = analysis_graph(three_hop(), "hostA"), analysis_graph(preemption_only(), "hostA")
        assert n == len(d1.nodes) + len(d2.nodes) and e == len(d1.edges) + len(d2.edges)
    finally:
        g.close()


def test_reanalysis_replaces_the_operations_causes(tmp_path):
    """A re-run with a different tree (late events) leaves only the new causes of that operation."""
    g = LadybugGraph(tmp_path / "g.lbug")
    try:
        a = three_hop()
        full = analysis_graph(a, host="h")
        g.write(full)
        a.causes = a.causes[1:]          # pretend the re-analysis no longer sees the remote_service wait
        a.chain = [a.causes[0]]
        a.root_cause = a.causes[0]
        smaller = analysis_graph(a, host="h")
        assert smaller.op_id == full.op_id
        g.write(smaller)
        ke = g.query("MATCH (k:KernelEvents) WHERE k.op = $op RETURN k.id AS id", {"op": full.op_id})
        assert sorted(r["id"] for r in ke) == sorted(smaller.node_ids("KernelEvents"))
        causes = g.query("MATCH (c:Cause) WHERE c.op = $op RETURN c.id AS id", {"op": full.op_id})
        assert sorted(r["id"] for r in causes) == sorted(smaller.node_ids("Cause"))
        row = g.root_cause(full.op_id)
        assert row["kind"] == a.root_cause.kind and row["pid"] == a.root_cause.culprit.pid
    finally:
        g.close()


def test_reopen_keeps_the_graph(tmp_path):
    g = LadybugGraph.in_data_dir(tmp_path)
    d = analysis_graph(preemption_only(), host="h")
    g.write(d)
    g.close()
    g = LadybugGraph.in_data_dir(tmp_path)
    try:
        assert g.root_cause(d.op_id)["pid"] == 4721
    finally:
        g.close()
