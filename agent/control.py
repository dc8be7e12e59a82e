"""The recorder's control socket: how other commands reach a store it holds open.

chDB allows one process per data directory, so while `kprobe record` runs,
`events`, `stats`, `sql` (and later `why`) send their query here instead of
opening the store. HTTP over a Unix socket in the data directory: local only,
protected by file permissions (0600), no port to collide with.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

SOCKET_NAME = "kprobe.sock"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(query: Callable[[str, str], bytes], stats: Callable[[], dict]) -> type[BaseHTTPRequestHandler]:
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

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._reply(200, json.dumps(stats()).encode())
            else:
                self._reply(404, b'{"error": "unknown path"}')

        def do_POST(self) -> None:
            if not self.path.startswith("/sql"):
                self._reply(404, b'{"error": "unknown path"}')
                return
            fmt = "JSONEachRow"
            if "format=" in self.path:
                fmt = self.path.split("format=", 1)[1].split("&", 1)[0]
            length = int(self.headers.get("Content-Length", "0"))
            sql = self.rfile.read(length).decode()
            try:
                self._reply(200, query(sql, fmt), "text/plain")
            except Exception as e:
                self._reply(400, json.dumps({"error": str(e)}).encode())

    return Handler


class ControlServer:
    def __init__(self, data_dir: Path, query: Callable[[str, str], bytes], stats: Callable[[], dict]):
        self.path = data_dir / SOCKET_NAME
        if self.path.exists():
            self.path.unlink()
        self._server = _Server(str(self.path), _handler(query, stats))
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kprobe-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
