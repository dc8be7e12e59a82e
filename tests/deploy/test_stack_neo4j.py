"""Cypher over Bolt against the real embedded Neo4j started by deploy/stack.sh."""

from __future__ import annotations

import uuid

import neo4j
import pytest

pytestmark = pytest.mark.servers


def _auth(stack: dict[str, str]) -> tuple[str, str] | None:
    """stack.sh runs Neo4j with authentication off (loopback, tests only): NEO4J_AUTH=none."""
    value = stack.get("NEO4J_AUTH", "none")
    if value == "none":
        return None
    user, _, password = value.partition("/")
    return (user, password)


def test_cypher_create_and_match(stack: dict[str, str]) -> None:
    uri = stack["NEO4J_URI"]
    assert uri.startswith("bolt://127.0.0.1:")
    run = uuid.uuid4().hex
    with neo4j.GraphDatabase.driver(uri, auth=_auth(stack)) as driver:
        driver.verify_connectivity()
        driver.execute_query(
            "CREATE (w:Task {run: $run, tid: 1, comm: 'waker'})"
            "-[:WOKE {ts: 10}]->(v:Task {run: $run, tid: 2, comm: 'victim'})"
            "-[:WOKE {ts: 20}]->(:Task {run: $run, tid: 3, comm: 'order-gw'})",
            run=run,
        )
        records, _, _ = driver.execute_query(
            "MATCH p = (a:Task {run: $run, tid: 1})-[:WOKE*1..3]->(b:Task {run: $run, tid: 3}) "
            "RETURN [n IN nodes(p) | n.comm] AS chain",
            run=run,
        )
        assert [r["chain"] for r in records] == [["waker", "victim", "order-gw"]]
        driver.execute_query("MATCH (n:Task {run: $run}) DETACH DELETE n", run=run)
        records, _, _ = driver.execute_query("MATCH (n:Task {run: $run}) RETURN count(n) AS c", run=run)
        assert records[0]["c"] == 0
