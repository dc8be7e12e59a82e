"""Limits for kprobe's small HTTP servers (OTLP/HTTP, Prometheus metrics): what one client can hold.

``ThreadingHTTPServer`` gives every connection a thread and reads with a per-``recv`` timeout, so
a client that opens many connections, or sends one header byte every 29 s (slowloris), holds
threads and memory forever. Here:

* at most ``max_connections`` connections are served at once; one more is answered ``503`` with
  ``Retry-After`` and closed at once, and counted (``connections_refused``);
* a request must arrive and be answered within ``request_deadline_s`` from its first byte; a
  watchdog shuts the socket of one that takes longer, and counts it (``deadline_exceeded``);
* an idle keep-alive connection is closed after ``idle_timeout_s``.

The counters land wherever the server's owner wants them (``on_count(name)``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 32\r\nConnection: close\r\n\r\ntoo many connections, retry later")


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 64
    request_deadline_s: float = 30.0
    idle_timeout_s: float = 30.0


class LimitedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a connection cap and a whole-request deadline (handler: LimitedHandler)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limits: HttpLimits,
                 on_count: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self._on_count = on_count or (lambda name: None)
        self._active = 0
        self._active_lock = threading.Lock()
        self.deadlines: dict[socket.socket, float] = {}  # connection -> monotonic deadline of its request
        self._stop = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="http-deadline", daemon=True)
        self._watchdog.start()

    def count(self, name: str) -> None:
        self._on_count(name)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.limits.max_connections
            if not full:
                self._active += 1
        if full:
            self.count("connections_refused")
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._active_lock:
                self._active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1
            with self._active_lock:
                self.deadlines.pop(request, None)

    @property
    def active_connections(self) -> int:
        with self._active_lock:
            return self._active

    def _watch(self) -> None:
        # a deadline is kept to within half a second: checking ten times a second was a recorder's
        # most frequent wake-up while idle
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self._active_lock:
                late = [s for s, d in self.deadlines.items() if d < now]
                for s in late:
                    del self.deadlines[s]
            for s in late:
                self.count("deadline_exceeded")
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()


class LimitedHandler(BaseHTTPRequestHandler):
    """Arms the server's deadline when a request's first byte arrives, disarms it when answered."""

    server: LimitedHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.limits.idle_timeout_s
        super().setup()

    def handle_one_request(self) -> None:
        try:
            first = self.rfile.peek(1)  # waits up to the idle timeout for the next request
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if not first:
            self.close_connection = True
            return
        srv = self.server
        with srv._active_lock:
            srv.deadlines[self.connection] = time.monotonic() + srv.limits.request_deadline_s
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True  # the watchdog cut it, or the client went away
        finally:
            with srv._active_lock:
                srv.deadlines.pop(self.connection, None)
