"""The Neo4j graph sink against the real Neo4j from deploy/stack.sh: same graph, same root-cause query."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graph"))
from sample_analyses import preemption_only, three_hop  # noqa: E402

from kprobe.causal.graph import analysis_graph  # noqa: E402
from kprobe.sinks.graph_ladybug import LadybugGraph  # noqa: E402
from kprobe.sinks.graph_neo4j import Neo4jGraph, parse_auth  # noqa: E402

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[2]


def _env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


@pytest.fixture(scope="module")
def neo4j_env() -> Iterator[dict[str, str]]:
    """Only Neo4j (not the whole stack): `deploy/stack.sh start neo4j`, stopped after if we started it."""
    stack = ["bash", str(REPO / "deploy" / "stack.sh")]
    was_up = subprocess.run([*stack, "status", "neo4j"], capture_output=True).returncode == 0
    r = subprocess.run([*stack, "start", "neo4j"], capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        pytest.fail(f"deploy/stack.sh start neo4j failed:\n{r.stdout}\n{r.stderr}")
    cache = Path(os.environ.get("KPROBE_STACK_CACHE", REPO / "deploy" / ".cache"))
    try:
        yield _env(cache / "stack.env")
    finally:
        if not was_up and os.environ.get("KPROBE_STACK_KEEP") != "1":
            subprocess.run([*stack, "stop", "neo4j"], capture_output=True)


def _counts(g, host: str) -> tuple[int, int]:
    n = g.query("MATCH (n) WHERE n.id CONTAINS $h RETURN count(n) AS c", {"h": host})[0]["c"]
    e = g.query("MATCH (a)-[r]->(b) WHERE a.id CONTAINS $h RETURN count(r) AS c", {"h": host})[0]["c"]
    return n, e


def test_root_cause_query_on_neo4j_equals_analysis_and_ladybug(neo4j_env, tmp_path):
    host = f"test-{uuid.uuid4().hex[:12]}"       # ids embed the host: this run's nodes only
    neo = Neo4jGraph(neo4j_env["NEO4J_URI"], auth=parse_auth(neo4j_env.get("NEO4J_AUTH")))
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


def test_causality_flow_writes_edges_to_neo4j_with_two_workers(neo4j_env):
    """The bytewax flow with the Neo4j graph sink: each host's operation lands with its root cause, once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataflows"))
    from bytewax.testing import TestingSource, cluster_main
    from test_windowing import lock_scenario, tick

    from kprobe.dataflows.causal_step import EventBatch
    from kprobe.dataflows.causality import FlowOptions, build_flow, graph_factory
    from kprobe.dataflows.windowing import SEC, WindowConfig

    run = uuid.uuid4().hex[:10]
    hosts = [f"flow-{run}-a", f"flow-{run}-b"]
    items = [EventBatch(h, t, ({**r, "host": h},)) for h in hosts for t, r in lock_scenario() + [tick(1500)]]
    factory = graph_factory(Path("."), neo4j_env["NEO4J_URI"], neo4j_env.get("NEO4J_AUTH"))
    neo = Neo4jGraph(neo4j_env["NEO4J_URI"], auth=parse_auth(neo4j_env.get("NEO4J_AUTH")))
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
