"""PostgreSQL decoded from the kernel: a watched PostgreSQL server (its backends followed at fork),
a psycopg client, and the decoded per-statement timings set against pg_stat_statements."""

from __future__ import annotations

import json
import time
from statistics import mean

import pytest
from pg_server import PgServer, unavailable

from kprobe.protocols.capture import PayloadCapture

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

SECRET = "bind-secret-kernel-51"


def test_server_side_statement_timings_from_the_kernel(capture) -> None:
    import psycopg

    pg = PgServer()
    payload = None
    try:
        capture.session.recorder.watch_pid(pg.proc.pid)  # the postmaster: backends are followed at fork
        payload = PayloadCapture(capture.session.recorder.probes, write=capture.session.store.write).start()
        pg.psql("SELECT pg_stat_statements_reset()")
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            for i in range(5):
                c.execute("SELECT pg_sleep(%s), %s::text", (0.01 * (i % 2 + 1), SECRET))
            for i in range(20):
                c.execute("SELECT %s::int", (i,))
        time.sleep(0.2)
        capture.settle()
        payload.flush()
        stats = {r["query"]: r for r in json.loads(pg.psql(
            "SELECT json_agg(json_build_object('query', query, 'calls', calls, 'exec', mean_exec_time, "
            "'plan', mean_plan_time)) FROM pg_stat_statements"))}
        rows = capture.session.store.query_rows("SELECT name, kind, pid, duration_ns, attributes FROM spans")
        counters = payload.counters()
    finally:
        if payload is not None:
            payload.stop()
        pg.stop()
    decoded = [r for r in rows if json.loads(r["attributes"]).get("@source") == "kprobe.decoded"]
    assert decoded and {int(r["kind"]) for r in decoded} == {2}  # server side only: the client is not watched
    assert SECRET not in json.dumps(rows)
    by_stmt: dict[str, list[float]] = {}
    for r in decoded:
        by_stmt.setdefault(json.loads(r["attributes"])["db.statement"], []).append(int(r["duration_ns"]) / 1e6)
    sleep = by_stmt["SELECT pg_sleep($1), $2::text"]
    truth = stats["SELECT pg_sleep($1), $2::text"]
    assert len(sleep) == truth["calls"] == 5
    server_ms = truth["exec"] + truth["plan"]
    print(f"pg kernel: pg_sleep kprobe {mean(sleep):.3f} ms vs server {server_ms:.3f} ms; "
          f"short stmt kprobe {mean(by_stmt['SELECT $1::int']):.3f} ms vs "
          f"{stats['SELECT $1::int']['exec']:.3f} ms; counters {counters}")
    assert abs(mean(sleep) - server_ms) <= 0.10 * server_ms
    assert len(by_stmt["SELECT $1::int"]) == 20
