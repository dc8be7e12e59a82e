"""OTLP/HTTP ``POST /v1/traces`` server (binary protobuf, optional gzip) on http.server.

Why the standard library: OTLP/HTTP is one POST route; ThreadingHTTPServer
handles keep-alive HTTP/1.1 from the SDK's ``requests`` session without a
new dependency. JSON-encoded OTLP is refused with 415 and a clear message.

Responses follow the OTLP/HTTP spec: 200 with an ``ExportTraceServiceResponse``
(partial success when spans were skipped); 400/413/415 are not retried by
clients; 503 + ``Retry-After`` is retried. Error bodies are a protobuf
``google.rpc.Status`` for protobuf clients and plain text otherwise.

Stopping is fast even with idle keep-alive connections: every open
connection is tracked and shut down, so no handler thread lingers. Connections
are capped and every request has a whole-request deadline (otel/http_limits.py):
a slow or greedy client is cut and counted, never holds the receiver.
"""

from __future__ import annotations

import logging
import socket
import threading
import zlib
from http import HTTPStatus
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from kprobe.schemas.varint import varint

from .errors import ReceiverBindError
from .http_limits import HttpLimits, LimitedHandler, LimitedHTTPServer
from .intake import Ingestor, Outcome, Verdict

__all__ = ["OtlpHttpServer", "TRACES_PATH"]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
# google.rpc.Code values used in error bodies.
_RPC_INVALID_ARGUMENT = 3
_RPC_UNAVAILABLE = 14


def rpc_status(code: int, message: str) -> bytes:
    """Encode ``google.rpc.Status{code, message}`` by hand (2 fields; avoids a googleapis dependency)."""
    msg = message.encode("utf-8")
    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing more than ``limit`` bytes (zip bombs) or truncation."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, limit + 1)
    if len(out) > limit:
        raise ValueError(f"gzip body inflates beyond {limit} bytes")
    if not d.eof:
        raise ValueError("truncated gzip body")
    return out


class _Server(LimitedHTTPServer):
    """A connection-capped, deadline-bound HTTP server that knows its open connections so stop() can cut them."""

    block_on_close = False  # we close connections ourselves; never join idle keep-alive threads

    def __init__(self, address: tuple[str, int], ingestor: Ingestor, max_body_bytes: int, limits: HttpLimits) -> None:
        self.ingestor = ingestor
        self.max_body_bytes = max_body_bytes
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler, limits, ingestor.count_http)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("otlp/http connection error from %s", client_address, exc_info=True)


class _Handler(LimitedHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the SDK's requests.Session (idle ones closed: HttpLimits)
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("otlp/http %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._reply_text(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST {TRACES_PATH}")

    def do_POST(self) -> None:
        ingestor = self.server.ingestor
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self.close_connection = True  # body not read
            self._reply_text(HTTPStatus.NOT_FOUND, f"only POST {TRACES_PATH} is served here")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._refuse(ingestor.reject("http", "Content-Length required"), HTTPStatus.LENGTH_REQUIRED)
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._refuse(ingestor.reject("http", "bad Content-Length"), HTTPStatus.BAD_REQUEST)
            return
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            self._refuse(
                ingestor.reject("http", f"body of {length} bytes exceeds {limit}"),
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            self._refuse(ingestor.reject("http", "body shorter than Content-Length"), HTTPStatus.BAD_REQUEST)
            return

        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype == _JSON:
            self._refuse(
                ingestor.reject(
                    "http", "OTLP/JSON is not supported by this receiver; send application/x-protobuf"
                ),
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            )
            return
        if ctype != _PROTOBUF:
            self._refuse(
                ingestor.reject("http", f"unsupported Content-Type {ctype!r}; send {_PROTOBUF}"),
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            )
            return
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "gzip":
            try:
                body = gunzip_bounded(body, limit)
            except (ValueError, zlib.error) as exc:
                self._refuse(ingestor.reject("http", f"bad gzip body: {exc}"), HTTPStatus.BAD_REQUEST)
                return
        elif encoding not in ("", "identity"):
            self._refuse(
                ingestor.reject("http", f"unsupported Content-Encoding {encoding!r}; use gzip or none"),
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            )
            return

        outcome = ingestor.ingest(body, "http")
        if outcome.verdict is Verdict.MALFORMED:
            self._refuse(outcome, HTTPStatus.BAD_REQUEST)
        elif outcome.verdict is Verdict.SINK_ERROR:
            self._refuse(outcome, HTTPStatus.SERVICE_UNAVAILABLE, retry_after=1)
        else:
            response = ExportTraceServiceResponse()
            if outcome.rejected_spans:
                response.partial_success.rejected_spans = outcome.rejected_spans
                response.partial_success.error_message = outcome.message
            self._reply(HTTPStatus.OK, _PROTOBUF, response.SerializeToString())

    def _refuse(self, outcome: Outcome, status: HTTPStatus, retry_after: int | None = None) -> None:
        """Error reply: google.rpc.Status for protobuf clients, the reason as text otherwise."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype == _PROTOBUF:
            code = _RPC_UNAVAILABLE if status == HTTPStatus.SERVICE_UNAVAILABLE else _RPC_INVALID_ARGUMENT
            self._reply(status, _PROTOBUF, rpc_status(code, outcome.message), headers)
        else:
            self._reply_text(status, outcome.message, headers)

    def _reply_text(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        self._reply(status, "text/plain; charset=utf-8", (text + "\n").encode("utf-8"), headers)

    def _reply(
        self, status: HTTPStatus, ctype: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class OtlpHttpServer:
    """Binds at construction (so bind errors surface early); serves on a thread after ``start``."""

    def __init__(self, ingestor: Ingestor, host: str, port: int, *, max_body_bytes: int,
                 limits: HttpLimits | None = None) -> None:
        try:
            self._server = _Server((host, port), ingestor, max_body_bytes, limits or HttpLimits())
        except OSError as exc:
            raise ReceiverBindError("OTLP/HTTP", host, port, exc.strerror or str(exc)) from exc
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            # the poll only bounds how long shutdown() waits; each one wakes a thread of the recorder
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="otlp-http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop accepting, cut open connections, close the socket; bounded by ``timeout``."""
        if self._thread is not None:
            # shutdown() blocks until serve_forever returns (<= poll_interval).
            self._server.shutdown()
            self._thread.join(timeout)
        with self._server.connections_lock:
            conns = list(self._server.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
