"""The recorder's control sockets: how other commands reach a store it holds open.

chDB allows one process per data directory, so while `kprobe record` runs,
`events`, `stats`, `sql`, `why` and `kprobe serve` send their query here instead of
opening the store. HTTP over a Unix socket in the data directory: local only,
protected by file permissions (0600), no port to collide with.

Two sockets, because writing is a capability the server grants, not a promise a client keeps:

* ``kprobe.sock``: ``GET /stats``; ``POST /sql?format=F`` runs the body read-only, enforced here
  (``read``: a read-only engine session, see :mod:`kprobe.query.readonly`), whatever the client
  is; extra settings as ``&setting.NAME=VALUE`` (safe ones only, :mod:`kprobe.query.sqlguard`);
* ``kprobe-write.sock``: ``POST /sql`` runs the body as written (``kprobe sql --write``, the
  causality dataflow's analysis rows). Same mode today; kept apart so the read socket's mode can
  be widened (a group of operators) without handing out writes.

Every request is counted (``control`` in ``GET /stats``, shown by `kprobe stats`): reads, writes,
refusals (read-only violations: answered 403), failures (400).
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from kprobe.agent import unix_socket

SOCKET_NAME = "kprobe.sock"
WRITE_SOCKET_NAME = "kprobe-write.sock"
MAX_QUERY_BYTES = 1 << 20

Query = Callable[[str, str], bytes]
ReadQuery = Callable[[str, str, dict[str, str]], bytes]


class Refused(Exception):
    """A request the read-only socket does not run (the read callable raises it, or a subclass)."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 made a client's connect() fail with EAGAIN beside 8 concurrent readers


class ControlCounters:
    """What the sockets did, for `kprobe stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = {"sql_reads": 0, "sql_writes": 0, "sql_refused": 0, "sql_failed": 0}
        self.last_refused = ""

    def add(self, name: str, message: str = "") -> None:
        with self._lock:
            self._n[name] += 1
            if name == "sql_refused":
                self.last_refused = message[:200]

    def snapshot(self) -> dict[str, int | str]:
        with self._lock:
            return {**self._n, "last_refused": self.last_refused}


def _handler(run: Callable[[str, str, dict[str, str]], bytes], stats: Callable[[], dict] | None,
             counters: ControlCounters, write: bool,
             refused: tuple[type[BaseException], ...]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def address_string(self) -> str:
            return "unix"

        def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str, **extra: object) -> None:
            self._reply(code, json.dumps({"error": message, **extra}).encode())

        def do_GET(self) -> None:
            if self.path == "/stats" and stats is not None:
                self._reply(200, json.dumps({**stats(), "control": counters.snapshot()}).encode())
            else:
                self._error(404, "unknown path")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/sql":
                self._error(404, "unknown path")
                return
            params = dict(parse_qsl(url.query))
            fmt = params.pop("format", "JSONEachRow")
            settings = {k[len("setting."):]: v for k, v in params.items() if k.startswith("setting.")}
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_QUERY_BYTES:
                counters.add("sql_failed")
                self._error(400, f"Content-Length must be 0..{MAX_QUERY_BYTES}")
                return
            try:
                sql = self.rfile.read(length).decode()
            except (OSError, UnicodeDecodeError) as e:
                counters.add("sql_failed")
                self._error(400, f"unreadable query: {e}")
                return
            try:
                out = run(sql, fmt, settings)
            except refused as e:
                counters.add("sql_refused", str(e))
                self._error(403, f"refused in read-only mode: {e}", refused=True)
                return
            except Exception as e:
                counters.add("sql_failed")
                self._error(400, str(e))
                return
            counters.add("sql_writes" if write else "sql_reads")
            self._reply(200, out, "text/plain")

    return Handler


def _no_store(sql: str, fmt: str, settings: dict[str, str]) -> bytes:
    raise RuntimeError("this recorder keeps no local store")


class ControlServer:
    """Both sockets of one data directory. ``query`` runs writes; ``read`` runs read-only queries and
    raises one of ``refused`` for what read-only mode does not run (None: this recorder has no store)."""

    def __init__(self, data_dir: Path, query: Query, stats: Callable[[], dict], read: ReadQuery | None = None,
                 refused: tuple[type[BaseException], ...] = (Refused,)):
        self.counters = ControlCounters()
        self.path = data_dir / SOCKET_NAME
        self.write_path = data_dir / WRITE_SOCKET_NAME
        self._servers = [
            self._bind(self.path, _handler(read or _no_store, stats, self.counters, False, refused)),
            self._bind(self.write_path, _handler(lambda sql, fmt, _s: query(sql, fmt), None, self.counters, True, ())),
        ]
        self._threads = [threading.Thread(target=s.serve_forever, name="kprobe-control", daemon=True)
                         for s in self._servers]

    @staticmethod
    def _bind(path: Path, handler: type[BaseHTTPRequestHandler]) -> _Server:
        if path.exists():
            path.unlink()
        old = os.umask(0o177)  # never a moment with a wider mode than 0600
        try:
            with unix_socket.address(path) as addr:
                server = _Server(addr, handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return server

    def start(self) -> ControlServer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for p in (self.path, self.write_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
