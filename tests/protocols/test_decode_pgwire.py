"""PostgreSQL wire decoding of real traffic (psycopg and pgbench against a PostgreSQL the test
starts), checked against the server's own pg_stat_statements."""

from __future__ import annotations

import json
import re
import subprocess
from statistics import mean

import pytest
from pg_server import PgServer, unavailable
from wire_relay import Relay, replay, replay_split

from kprobe.protocols import Direction, new_decoder
from kprobe.protocols.span_rows import SocketPair, SpanRows
from kprobe.sinks.chdb_store import ChdbStore

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

SECRET = "bind-secret-7f3a9c"
PAN = "4111111111111111"


@pytest.fixture(scope="module")
def pg():
    server = PgServer()
    subprocess.run(server.client("pgbench", "-i", "-q", "-s", "1", "postgres"), check=True, capture_output=True,
                   timeout=300)
    yield server
    server.stop()


def _key(sql: str) -> str:
    """pg_stat_statements and kprobe write parameters differently ($1 vs $?): compare shapes."""
    s = re.sub(r"-?\$(\d+|\?)", "$?", sql)
    return re.sub(r"\s+", " ", s).strip().rstrip(";").strip()


def _psycopg_session(port: int) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        for i in range(5):
            c.execute("SELECT count(*) FROM pgbench_accounts WHERE abalance > %s AND filler <> %s", (i - 10, SECRET))
            c.execute("SELECT pg_sleep(%s), %s::text", (0.02, PAN))
        c.execute("SELECT aid FROM pgbench_accounts WHERE aid = %s", (7,), prepare=True)
        for aid in range(8, 12):
            c.execute("SELECT aid FROM pgbench_accounts WHERE aid = %s", (aid,), prepare=True)
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1 / %s", (0,))
        c.execute("SELECT 'simple-literal-secret'")  # no parameters: still extended in psycopg 3
        cur = psycopg.ClientCursor(c)  # client-side binding: the literal travels in the text
        cur.execute("SELECT length(%s::text) AS n", (SECRET,))


@pytest.fixture(scope="module")
def psycopg_capture(pg):
    pg.psql("SELECT pg_stat_statements_reset()")
    relay = Relay(("127.0.0.1", pg.port))
    _psycopg_session(relay.port)
    assert relay.connections[0].closed.wait(10)
    relay.close()
    stats = json.loads(pg.psql("SELECT coalesce(json_agg(json_build_object('query', query, 'calls', calls, "
                               "'exec', mean_exec_time, 'plan', mean_plan_time)), '[]') FROM pg_stat_statements"))
    return relay.connections[0], stats


def test_statement_timings_agree_with_pg_stat_statements(psycopg_capture) -> None:
    conn, stats = psycopg_capture
    d = new_decoder("postgresql")
    exchanges = replay(d, conn)
    assert d.stats.malformed == d.stats.abandoned == 0
    by_shape: dict[str, list] = {}
    for e in exchanges:
        by_shape.setdefault(_key(str(e.attributes["db.statement"])), []).append(e)
    server = {_key(s["query"]): s for s in stats}
    slow_checked = 0
    for shape, exs in by_shape.items():
        if all(e.error for e in exs):
            continue  # pg_stat_statements counts only statements that completed
        truth = server.get(shape)
        assert truth is not None, f"{shape!r} not in pg_stat_statements: {sorted(server)}"
        ok = [e for e in exs if not e.error]
        assert len(ok) == truth["calls"], shape
        ours_ms = mean((e.end_ns - e.start_ns) / 1e6 for e in ok)
        server_ms = truth["exec"] + (truth["plan"] or 0.0)
        assert ours_ms >= truth["exec"], (shape, ours_ms, truth)  # the wire time contains the execution
        print(f"pg: {shape[:60]!r}: {len(ok)} calls, kprobe {ours_ms:.3f} ms, server exec+plan {server_ms:.3f} ms")
        if server_ms >= 5.0:  # long enough that protocol time is small
            slow_checked += 1
            # the 10 % acceptance is checked on kernel-captured bytes (test_pgwire_kernel.py); here two Python
            # relay threads, niced on a shared host, sit between client and server and add their own delays
            assert abs(ours_ms - server_ms) <= 0.25 * server_ms, (shape, ours_ms, server_ms)
    assert slow_checked >= 2
    errors = [e for e in exchanges if e.error]
    assert len(errors) == 1 and errors[0].attributes["db.pg.sqlstate"] == "22012"
    assert any(e.attributes.get("db.pg.mode") == "extended" for e in exchanges)


def test_no_bind_value_or_literal_reaches_the_store(psycopg_capture, tmp_path) -> None:
    conn, _ = psycopg_capture
    assert SECRET.encode() in conn.stream(0) and PAN.encode() in conn.stream(0)  # they did cross the wire
    rows = SpanRows(host="test")
    pair = SocketPair("127.0.0.1", 40000, "127.0.0.1", 5432, is_client=True)
    for i, e in enumerate(replay(new_decoder("postgresql"), conn)):
        rows.add(e, pair=pair, ordinal=i, service="psycopg", pid=1, tid=1)
    n = len(rows)
    store = ChdbStore(tmp_path / "store")
    try:
        assert store.write("spans", rows.columns()) == n
        dump = store.query("SELECT * FROM spans FORMAT JSONEachRow", fmt="JSONEachRow").decode()
        assert store.query_rows("SELECT count() AS n FROM spans")[0]["n"] == n
    finally:
        store.close()
    assert "SELECT pg_sleep($?), $?::text" in dump or "SELECT pg_sleep($1), $2::text" in dump
    for value in (SECRET, PAN, "simple-literal-secret", "0.02"):
        assert value not in dump


def test_split_anywhere_gives_the_same_statements(psycopg_capture) -> None:
    conn, _ = psycopg_capture
    whole = [(e.name, e.error) for e in replay(new_decoder("postgresql"), conn)]
    for sizes in ([1], [3, 5], [100, 1]):
        assert [(e.name, e.error) for e in replay_split(new_decoder("postgresql"), conn, sizes)] == whole


@pytest.mark.parametrize("mode", ["simple", "prepared", "extended"])
def test_pgbench_every_statement_decoded(pg, mode) -> None:
    pg.psql("SELECT pg_stat_statements_reset()")
    relay = Relay(("127.0.0.1", pg.port))
    out = subprocess.run(
        [str(pg.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(relay.port), "-U", "postgres", "-M", mode,
         "-c", "1", "-t", "100", "postgres"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for c in relay.connections:
        assert c.closed.wait(10)
    relay.close()
    stats = json.loads(pg.psql("SELECT json_agg(json_build_object('query', query, 'calls', calls, "
                               "'exec', mean_exec_time)) FROM pg_stat_statements"))
    server = {_key(s["query"]): s for s in stats}
    shapes: dict[str, list[float]] = {}
    for c in relay.connections:
        d = new_decoder("postgresql")
        for e in replay(d, c):
            shapes.setdefault(_key(str(e.attributes["db.statement"])), []).append((e.end_ns - e.start_ns) / 1e6)
        assert d.stats.malformed == d.stats.abandoned == 0
    update = "UPDATE pgbench_accounts SET abalance = abalance + $? WHERE aid = $?"
    assert len(shapes[update]) == 100 == server[update]["calls"]
    for shape in ("BEGIN", "END", "SELECT abalance FROM pgbench_accounts WHERE aid = $?"):
        assert len(shapes[shape]) == 100, (shape, sorted(shapes))
        assert mean(shapes[shape]) >= server[shape]["exec"]


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_a_gap_mid_connection_costs_the_statements_in_it_not_the_connection(pg, mode) -> None:
    """Records lost in the capture ring restart the connection's decoder mid-stream, long after its
    startup packet: it picks up at the next piece that starts a message. A real pgbench session
    (100 transactions, one connection) goes through the Assembler as captured pieces, with every
    piece of transaction 30's stretch dropped as lost: the statements after it are decoded again."""
    from kprobe.protocols.assembler import Assembler, Piece

    relay = Relay(("127.0.0.1", pg.port))
    out = subprocess.run(
        [str(pg.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(relay.port), "-U", "postgres", "-M", mode,
         "-c", "1", "-t", "100", "postgres"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    conn = max(relay.connections, key=lambda c: len(c.pieces))  # the benchmark's own (not the set-up one)
    assert conn.closed.wait(10)
    relay.close()
    pieces = conn.pieces
    lost_from, lost_to = len(pieces) * 3 // 10, len(pieces) * 3 // 10 + 5

    def decode(gap: bool) -> tuple[list[tuple], dict[str, int], int]:
        asm = Assembler("test-host", {}, lambda tgid: "postgres")
        for k, (d, data, ts) in enumerate(pieces):
            if gap and lost_from <= k < lost_to:
                if k == lost_from:
                    asm.lost(1)  # the ring overflowed: these records never arrive
                continue
            # the server side's view: requests are reads, responses writes
            asm.add(Piece(ts, 1, 1, 0xFFFF0001, d == Direction.TO_CLIENT, data, len(data), "127.0.0.1", pg.port,
                          "127.0.0.1", 40000))
        asm.close_all(pieces[-1][2] + 1)
        return asm.rows.rows, asm.protocol_stats()["postgresql"], asm.gaps

    whole, _, _ = decode(gap=False)
    rows, stats, gaps = decode(gap=True)
    print(f"pgbench {mode}: {len(rows)} of {len(whole)} statements decoded around a gap of 5 pieces; {stats}")
    assert gaps == 1 and stats["abandoned"] == 0, stats
    late = [r for r in rows if r[0] > pieces[lost_to][2]]
    assert sum(r[6].startswith("UPDATE pgbench_accounts") for r in late) >= 60, [r[6] for r in late][-20:]
    assert len(whole) - 10 <= len(rows) < len(whole)  # only what the gap swallowed is missing
