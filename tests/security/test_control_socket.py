"""The control socket enforces read-only itself: a raw client that skips `kprobe sql` cannot write.

A real chDB store behind the real ControlServer, wired as the recorder wires it
(``socket_reader`` on the read socket, the store's own session on the write socket); the
clients are a hand-written HTTP request on a plain Unix socket, the RemoteStore every command
uses, and the causal engine's own reads (UNION ALL with a SETTINGS clause).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kprobe.agent.control import ControlServer
from kprobe.query.readonly import socket_reader
from kprobe.query.sqlguard import SqlRefused


@dataclass
class Live:
    data: Path
    server: ControlServer
    store: object
    flushes: list[int]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from kprobe.sinks.chdb_store import ChdbStore

    data = tmp_path_factory.mktemp("ctl")
    store = ChdbStore(data)
    flushes: list[int] = []
    server = ControlServer(data, store.query, lambda: {"pid": 1},
                           read=socket_reader(store.path / "chdb", lambda: flushes.append(1)),
                           refused=(SqlRefused,)).start()
    try:
        yield Live(data, server, store, flushes)
    finally:
        server.stop()
        store.close()


def raw_post(path: Path, sql: str, query: str = "format=CSV") -> tuple[int, bytes]:
    """One HTTP request by hand on the Unix socket: no kprobe client code in between."""
    body = sql.encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(str(path))
    s.sendall(f"POST /sql?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
              .encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def control_counts(live: Live) -> dict:
    from kprobe.query.client import RemoteStore

    return RemoteStore(live.server.path).live_stats()["control"]


def count_rows(live: Live) -> int:
    return int(live.store.query("SELECT count() FROM offcpu", "CSV").strip())  # type: ignore[attr-defined]


def test_sockets_are_0600(live: Live) -> None:
    for p in (live.server.path, live.server.write_path):
        assert p.is_socket() and p.stat().st_mode & 0o777 == 0o600, p


@pytest.mark.parametrize("sql", [
    "INSERT INTO offcpu (ts, tgid, tid) VALUES (1, 2, 3)",
    "INSERT INTO offcpu (ts) SELECT 1",
    "CREATE TABLE scratch (a UInt8) ENGINE = Memory",
    "DROP TABLE offcpu",
    "ALTER TABLE offcpu DELETE WHERE 1",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "INSERT INTO FUNCTION file('{out}', 'CSV', 'a UInt8') SELECT 1",
    "SELECT 1 INTO OUTFILE '{out}'",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_bytes_before_external_group_by = 1",
    "SET readonly = 0",
    "KILL QUERY WHERE 1",
    "SELECT 1; DROP TABLE offcpu",
    "/* SELECT */ DROP TABLE offcpu",
    "(SELECT 1) UNION ALL (SELECT * FROM file('/etc/hostname', 'LineAsString'))",
])
def test_a_raw_client_cannot_write_read_files_or_change_settings(live: Live, tmp_path: Path, sql: str) -> None:
    out = tmp_path / "out.csv"
    before_rows, before = count_rows(live), control_counts(live)
    status, body = raw_post(live.server.path, sql.format(out=out))
    assert status == 403, (status, body)
    err = json.loads(body)
    assert err["refused"] is True and "read-only" in err["error"], err
    assert not out.exists()
    assert count_rows(live) == before_rows  # the table is still there, unchanged
    after = control_counts(live)
    assert after["sql_refused"] == before["sql_refused"] + 1, (before, after)
    assert after["sql_reads"] == before["sql_reads"] and after["sql_writes"] == before["sql_writes"]


def test_a_refusal_by_the_engine_itself_is_counted(live: Live) -> None:
    """Not every refusal is the token check's: ``Python()`` is refused by ClickHouse's readonly = 1."""
    before = control_counts(live)["sql_refused"]
    status, body = raw_post(live.server.path, "SELECT * FROM merge(currentDatabase(), '^offcpu$') "
                                              "SETTINGS max_threads = 1, max_bytes_before_external_group_by = 1")
    assert status == 403 and b"readonly" in body.lower(), body  # a setting not on the safe list stays a change
    assert control_counts(live)["sql_refused"] == before + 1


def test_reads_with_their_own_settings_run_as_written(live: Live) -> None:
    status, body = raw_post(live.server.path, "SELECT a FROM ((SELECT 1 AS a) UNION ALL (SELECT 2)) "
                                              "ORDER BY a SETTINGS max_threads = 1, "
                                              "output_format_json_quote_64bit_integers = 0")
    assert status == 200 and body.split() == [b"1", b"2"], body
    status, body = raw_post(live.server.path, "SELECT getSetting('readonly'), getSetting('max_execution_time')")
    assert status == 200 and body.strip() == b"1,60", body  # read-only and bounded by default
    status, body = raw_post(live.server.path, "SELECT getSetting('max_execution_time')",
                            "format=CSV&setting.max_execution_time=5")
    assert status == 200 and body.strip() == b"5", body
    status, body = raw_post(live.server.path, "SELECT 1", "format=CSV&setting.readonly=0")
    assert status == 403, body  # readonly is not a setting a client sends


def test_the_engine_reads_through_the_read_socket(live: Live) -> None:
    """The causal engine's UNION ALL with its SETTINGS clause, through the socket, finds what the store holds."""
    from kprobe.causal.fetch import fetch_evidence
    from kprobe.causal.model import Interval
    from kprobe.query.client import RemoteStore

    now = time.time_ns()
    remote_w = RemoteStore(live.server.write_path)
    remote_w.query(f"INSERT INTO offcpu (ts, end_ts, dur_ns, tgid, tid, comm) VALUES "
                   f"({now}, {now + 5_000_000}, 5000000, 777, 777, 'victim')", "CSV")
    flushes = len(live.flushes)
    ev = fetch_evidence(RemoteStore(live.server.path), Interval(777, now - 1_000_000, now + 10_000_000))
    rows = [r for rs in ev.offcpu.values() for r in rs]
    assert [(r.tgid, r.ts) for r in rows] == [(777, now)], rows
    assert len(live.flushes) > flushes  # the recorder is asked to flush before a read
    local = fetch_evidence(live.store, Interval(777, now - 1_000_000, now + 10_000_000))  # type: ignore[arg-type]
    assert sorted(local.offcpu) == sorted(ev.offcpu)


def test_writes_need_the_write_socket(live: Live) -> None:
    from kprobe.query.client import QueryRefused, RemoteStore

    with pytest.raises(QueryRefused):
        RemoteStore(live.server.path).query("CREATE TABLE IF NOT EXISTS opt_in (a UInt8) ENGINE = Memory")
    before = control_counts(live)["sql_writes"]
    RemoteStore(live.server.write_path).query("CREATE TABLE IF NOT EXISTS opt_in (a UInt8) ENGINE = Memory")
    assert control_counts(live)["sql_writes"] == before + 1
    assert raw_post(live.server.path, "EXISTS TABLE opt_in")[1].strip() == b"1"


def test_bad_requests_are_counted_not_fatal(live: Live) -> None:
    before = control_counts(live)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(live.server.path))
    s.sendall(b"POST /sql HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
    assert b" 400 " in s.recv(4096)
    s.close()
    assert raw_post(live.server.path, "SELECT nosuchcolumn FROM offcpu")[0] == 400
    after = control_counts(live)
    assert after["sql_failed"] == before["sql_failed"] + 2
    assert raw_post(live.server.path, "SELECT 1")[0] == 200  # still serving


def test_the_real_recorder_refuses_a_raw_write_and_kprobe_stats_counts_it(tmp_path: Path, probes_built: None) -> None:
    """`kprobe record` as users run it: a raw INSERT on its socket is refused and shown by `kprobe stats`;
    `kprobe sql --write` goes through the write socket; `kprobe why` (the engine's reads) still answers."""
    import os
    import signal
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")
    kp = [sys.executable, "-m", "kprobe"]
    data = tmp_path / "d"
    rec = subprocess.Popen([*kp, "record", "--data", str(data), "--no-otlp", "--watch-pid", str(os.getpid())],
                           stderr=subprocess.PIPE, text=True)
    try:
        line = rec.stderr.readline() if rec.stderr else ""
        while not line.startswith("kprobe: recording "):
            assert line, "recorder exited before recording"
            line = rec.stderr.readline() if rec.stderr else ""
        sock = data / "kprobe.sock"
        status, body = raw_post(sock, "INSERT INTO offcpu (ts, tgid, tid) VALUES (1, 2, 3)")
        assert status == 403 and b"read-only" in body, body
        status, body = raw_post(sock, "SELECT file('/etc/shadow')")
        assert status == 403 and b"outside the store" in body, body
        status, body = raw_post(sock, "SELECT count() FROM offcpu WHERE ts = 1")
        assert status == 200 and body.strip() == b"0", body

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*kp, *args], capture_output=True, text=True, timeout=120)

        r = run("sql", "--data", str(data), "CREATE TABLE scratch (a UInt8) ENGINE = Memory")
        assert r.returncode != 0 and "--write" in r.stderr, r.stderr
        r = run("sql", "--data", str(data), "--write", "CREATE TABLE scratch (a UInt8) ENGINE = Memory")
        assert r.returncode == 0, r.stderr
        now = time.time_ns()
        r = run("why", "--data", str(data), "--pid", str(os.getpid()), "--json",
                "--from", str(now - 2_000_000_000), "--to", str(now))
        assert r.returncode == 0 and json.loads(r.stdout), r.stderr
        r = run("stats", "--data", str(data), "--json")
        assert r.returncode == 0, r.stderr
        control = json.loads(r.stdout)["recorder"]["control"]
        # the raw INSERT and file(); `kprobe sql` refused its CREATE before sending it; --write's CREATE ran
        assert control["sql_refused"] == 2 and control["sql_writes"] == 1, control
        assert "file()" in control["last_refused"], control
        text = run("stats", "--data", str(data)).stdout
        assert "control socket:" in text and "2 refused (read-only)" in text, text
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)


def test_a_data_directory_longer_than_a_socket_address_still_serves_both_sockets(live: Live, tmp_path: Path) -> None:
    """A socket address holds 107 bytes of path; a deep data directory must neither stop the recorder
    from starting nor its clients from reaching it (found by a test whose temp path held a card number).
    The sockets live in the data directory; the store is the module's (one embedded engine per process)."""
    from kprobe.agent.control import SOCKET_NAME, WRITE_SOCKET_NAME
    from kprobe.query.client import RemoteStore, recorder_socket

    data = tmp_path / ("d" * 60) / ("e" * 60)
    data.mkdir(parents=True)
    server = ControlServer(data, live.store.query, lambda: {"pid": 1},
                           read=socket_reader(live.store.path / "chdb", lambda: None), refused=(SqlRefused,)).start()
    try:
        assert len(str(data / WRITE_SOCKET_NAME)) > 107
        assert recorder_socket(data) == data / SOCKET_NAME
        assert recorder_socket(data, write=True) == data / WRITE_SOCKET_NAME
        assert RemoteStore(data / SOCKET_NAME).query("SELECT 41 + 1", "CSV").strip() == b"42"
    finally:
        server.stop()
