"""The Neo4j graph sink against the real Neo4j from deploy/stack.sh (the `stack` fixture): same graph, same query."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kprobe.causal.graph import analysis_graph  # noqa: E402
from kprobe.sinks.graph_ladybug import LadybugGraph  # noqa: E402
from kprobe.sinks.graph_neo4j import Neo4jGraph, parse_auth  # noqa: E402
from tests.causal.sample_analyses import preemption_only, three_hop  # noqa: E402

pytestmark = pytest.mark.servers


def _counts(g, host: str) -> tuple[int, int]:
    n = g.query("MATCH (n) WHERE n.id CONTAINS $h RETURN count(n) AS c", {"h": host})[0]["c"]
    e = g.query("MATCH (a)-[r]->(b) WHERE a.id CONTAINS $h RETURN count(r) AS c", {"h": host})[0]["c"]
    return n, e


def test_root_cause_query_on_neo4j_equals_analysis_and_ladybug(stack, tmp_path):
    host = f"test-{uuid.uuid4().hex[:12]}"       # ids embed the host: this run's nodes only
    neo = Neo4jGraph(stack["NEO4J_URI"], auth=parse_auth(stack.get("NEO4J_AUTH")))
    lb = LadybugGraph(tmp_path / "g.lbug")
    try:
        for a in (three_hop(), preemption_only()):
            delta = analysis_graph(a, host=host)
            neo.write(delta)
            lb.write(delta)
            before = _counts(neo, host)
            neo.write(analysis_graph(a, host=host))
            assert _counts(neo, host) == before
            row = neo.root_cause(delta.op_id)
            rc = a.root_cause
            assert (row["kind"], row["pid"], row["delay_ns"]) == (rc.kind, rc.culprit.pid, rc.delay_ns)
            assert row["depth"] == len(a.chain)
            assert row == lb.root_cause(delta.op_id)
        assert _counts(neo, host) == _counts(lb, host)
    finally:
        neo.query("MATCH (n) WHERE n.id CONTAINS $h DETACH DELETE n", {"h": host})
        neo.close()
        lb.close()


def test_causality_flow_writes_edges_to_neo4j_with_two_workers(stack):
    """The bytewax flow with the Neo4j graph sink: each host's operation lands with its root cause, once."""
    from bytewax.testing import TestingSource, cluster_main

    from kprobe.dataflows.causal_step import EventBatch
    from kprobe.dataflows.causality import FlowOptions, build_flow, graph_factory
    from kprobe.dataflows.windowing import SEC, WindowConfig
    from tests.dataflows.test_windowing import lock_scenario, tick

    run = uuid.uuid4().hex[:10]
    hosts = [f"flow-{run}-a", f"flow-{run}-b"]
    items = [EventBatch(h, t, ({**r, "host": h},)) for h in hosts for t, r in lock_scenario() + [tick(1500)]]
    factory = graph_factory(Path("."), stack["NEO4J_URI"], stack.get("NEO4J_AUTH"))
    neo = Neo4jGraph(stack["NEO4J_URI"], auth=parse_auth(stack.get("NEO4J_AUTH")))
    try:
        for _ in range(2):      # the second run re-writes the same analyses: counts must not change
            flow = build_flow(TestingSource(items), graph=factory,
                              options=FlowOptions(WindowConfig(allowed_lateness_ns=1 * SEC)))
            cluster_main(flow, [], 0, worker_count_per_proc=2)
            ops = neo.query("MATCH (o:Operation) WHERE o.host STARTS WITH $p RETURN o.id AS id",
                            {"p": f"flow-{run}"})
            assert len(ops) == 2
            for o in ops:
                rc = neo.root_cause(o["id"])
                assert (rc["kind"], rc["pid"], rc["comm"]) == ("lock_contention", 20, "holder")
            counts = _counts(neo, f"flow-{run}")
            if _ == 0:
                first = counts
        assert counts == first and counts[1] > 0
    finally:
        neo.query("MATCH (n) WHERE n.id CONTAINS $h DETACH DELETE n", {"h": f"flow-{run}"})
        neo.close()
