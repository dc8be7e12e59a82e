"""The analysis -> graph mapping: deterministic ids, chain marking, culprit/evidence edges (pure)."""

from __future__ import annotations

from kprobe.causal.graph import REL_SCHEMA, analysis_graph, interval_op_id, process_id
from tests.causal.sample_analyses import MS, T0, three_hop


def test_chain_is_marked_and_root_is_the_deepest_cause():
    a = three_hop()
    assert [c.kind for c in a.chain] == ["remote_service", "cpu_preemption", "memory_pressure"]
    g = analysis_graph(a, host="h1")
    op = interval_op_id("h1", 10, None, T0, T0 + 300 * MS)
    assert g.op_id == op
    causes = {n.id: n for n in g.nodes if n.label == "Cause"}
    roots = [n for n in causes.values() if n.props["is_root"]]
    assert len(roots) == 1
    root = roots[0].props
    assert (root["kind"], root["culprit_pid"], root["delay_ns"]) == ("memory_pressure", 30, a.root_cause.delay_ns)
    # following on-chain edges from the operation walks exactly the analysis chain
    out = {}
    for e in g.edges:
        if e.type in ("DELAYED_BY", "CAUSED_BY") and e.props["on_chain"]:
            assert e.src not in out, "one on-chain edge per node"
            out[e.src] = e.dst
    walk, cur = [], op
    while cur in out:
        cur = out[cur]
        walk.append(causes[cur].props["kind"])
    assert walk == [c.kind for c in a.chain]
    # every edge has the endpoint labels its schema says
    labels = {n.id: n.label for n in g.nodes}
    for e in g.edges:
        src, dst, props = REL_SCHEMA[e.type]
        assert (labels[e.src], labels[e.dst]) == (src, dst)
        assert set(e.props) == {p for p, _ in props}


def test_culprits_connections_and_kernel_events_are_linked():
    g = analysis_graph(three_hop(), host="h1")
    rels = {(e.type, e.dst) for e in g.edges}
    assert ("WOKEN_BY", process_id("h1", 20)) in rels           # remote_service: pricing woke the victim
    assert ("PREEMPTED_BY", process_id("h1", 30)) in rels       # batch preempted pricing
    assert ("BLAMES", process_id("h1", 30)) in rels             # and its reclaim is the root
    assert ("RAN_IN", process_id("h1", 10)) in rels
    conns = [n for n in g.nodes if n.label == "Connection"]
    assert [n.id for n in conns] == ["conn:h1:127.0.0.1:5000-127.0.0.1:8080"]
    kinds = {n.props["type"]: n.props for n in g.nodes if n.label == "KernelEvents"}
    assert kinds["offcpu:recvfrom"]["count"] == 1 and kinds["offcpu:recvfrom"]["total_ns"] == 240 * MS
    assert kinds["sched_switch:preempted"]["count"] == 1


def test_same_analysis_gives_identical_ids_and_no_duplicates():
    g1, g2 = analysis_graph(three_hop(), host="h1"), analysis_graph(three_hop(), host="h1")
    assert [(n.label, n.id, n.props) for n in g1.nodes] == [(n.label, n.id, n.props) for n in g2.nodes]
    assert [(e.type, e.src, e.dst, e.props) for e in g1.edges] == [(e.type, e.src, e.dst, e.props) for e in g2.edges]
    assert len({(n.label, n.id) for n in g1.nodes}) == len(g1.nodes)
    assert len({(e.type, e.src, e.dst) for e in g1.edges}) == len(g1.edges)
    # another host never collides
    g3 = analysis_graph(three_hop(), host="h2")
    assert not {n.id for n in g1.nodes} & {n.id for n in g3.nodes}


def test_documented_query_is_the_one_the_code_runs():
    from pathlib import Path

    from kprobe.causal.graph import ROOT_CAUSE_QUERY

    doc = (Path(__file__).resolve().parents[2] / "docs" / "causal-graph.md").read_text()
    assert f"```cypher\n{ROOT_CAUSE_QUERY}\n```" in doc
