"""OTLP trace receiver: OTLP/gRPC (:4317) and OTLP/HTTP protobuf (:4318) in one object.

Why: kprobe joins kernel events with the application's spans on host + pid +
thread + time, so it must accept spans straight from unmodified OpenTelemetry
SDK exporters, with nothing but an endpoint change on their side.

Guarantees, whichever transport a span arrives on:

* every span handed to ``on_spans`` is redacted (PANs masked, CVV/track/PIN
  attributes dropped, see :mod:`kprobe.otel.otlp_decode`), and from :meth:`start` on,
  every log record of the process is masked too (an error quoting a span must
  not print what the span store never got; :func:`kprobe.masking.install_log_masking`);
* ``on_spans`` is never called concurrently (it runs under a lock);
* nothing is lost silently: malformed requests get a non-retryable error
  (HTTP 400 / gRPC INVALID_ARGUMENT), a raising ``on_spans`` a retryable one
  (HTTP 503 / gRPC UNAVAILABLE), spans with malformed ids an OTLP partial
  success, and all of it is counted in :meth:`OtlpReceiver.stats`;
* one client cannot hold the receiver: HTTP connections are capped and each request has a
  whole-request deadline (:mod:`kprobe.otel.http_limits`), gRPC calls in progress are capped
  (``grpc_max_concurrent``: more get RESOURCE_EXHAUSTED from kprobe's own admission, counted,
  :mod:`kprobe.otel.grpc_server`) and bounded in time (``grpc_call_deadline_s``), and span times are
  clamped to a window around now (:mod:`kprobe.otel.clock_window`), all counted.

Usage::

    with OtlpReceiver(on_spans=store.insert_spans, grpc_port=0, http_port=0) as rx:
        print(rx.grpc_port, rx.http_port)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from kprobe.masking import install_log_masking

from .clock_window import ClockWindow
from .errors import ReceiverBindError
from .grpc_server import OtlpGrpcServer
from .http_limits import HttpLimits
from .http_server import OtlpHttpServer
from .intake import Ingestor, IngestStats
from .otlp_decode import SpanBatch

__all__ = ["OtlpReceiver", "ReceiverBindError", "DEFAULT_GRPC_PORT", "DEFAULT_HTTP_PORT"]

DEFAULT_GRPC_PORT = 4317
DEFAULT_HTTP_PORT = 4318
_DEFAULT_MAX_BODY = 16 * 1024 * 1024


class OtlpReceiver:
    """Serve OTLP traces over gRPC and HTTP on background threads.

    ``grpc_port`` / ``http_port``: 0 picks an ephemeral port (read it back from
    the properties after :meth:`start`); ``None`` disables that transport.
    ``max_body_bytes`` bounds a request (after gzip inflation for HTTP).
    """

    def __init__(
        self,
        on_spans: Callable[[SpanBatch], None],
        host: str = "127.0.0.1",
        grpc_port: int | None = DEFAULT_GRPC_PORT,
        http_port: int | None = DEFAULT_HTTP_PORT,
        *,
        max_body_bytes: int = _DEFAULT_MAX_BODY,
        grpc_workers: int = 4,
        http_limits: HttpLimits | None = None,
        clock_window: ClockWindow | None = None,
        grpc_max_concurrent: int = 64,
        grpc_call_deadline_s: float = 90.0,
    ) -> None:
        if grpc_port is None and http_port is None:
            raise ValueError("both transports disabled: give grpc_port and/or http_port")
        self.host = host
        self._want_grpc = grpc_port
        self._want_http = http_port
        self._max_body = max_body_bytes
        self._grpc_workers = grpc_workers
        self._grpc_max_concurrent = grpc_max_concurrent
        self._grpc_call_deadline_s = grpc_call_deadline_s
        self._http_limits = http_limits or HttpLimits()
        self._stats = IngestStats()
        self._ingestor = Ingestor(on_spans, self._stats, clock_window)
        self._grpc: OtlpGrpcServer | None = None
        self._http: OtlpHttpServer | None = None
        self._lock = threading.Lock()
        self._state = "new"  # new -> running -> stopped

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Bind both ports and start serving. Raises :class:`ReceiverBindError` naming the port.

        If the second transport cannot bind, the first is released again, so
        a failed start leaves nothing listening.
        """
        install_log_masking()
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"OtlpReceiver already {self._state}; create a new one")
            try:
                if self._want_grpc is not None:
                    self._grpc = OtlpGrpcServer(
                        self._ingestor,
                        self.host,
                        self._want_grpc,
                        workers=self._grpc_workers,
                        max_message_bytes=self._max_body,
                        max_concurrent=self._grpc_max_concurrent,
                        call_deadline_s=self._grpc_call_deadline_s,
                    )
                if self._want_http is not None:
                    self._http = OtlpHttpServer(
                        self._ingestor, self.host, self._want_http, max_body_bytes=self._max_body,
                        limits=self._http_limits,
                    )
            except BaseException:
                self._stop_servers(timeout=0.5)
                self._state = "stopped"
                raise
            if self._grpc is not None:
                self._grpc.start()
            if self._http is not None:
                self._http.start()
            self._state = "running"

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both servers; in-flight requests get up to ``timeout`` s. Safe to call twice."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            self._stop_servers(timeout)

    def _stop_servers(self, timeout: float) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=timeout / 2)
        if self._http is not None:
            self._http.stop(timeout=timeout / 2)

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------
    @property
    def grpc_port(self) -> int | None:
        """Bound gRPC port once started (the requested one before; None if disabled)."""
        return self._grpc.port if self._grpc is not None else self._want_grpc

    @property
    def http_port(self) -> int | None:
        """Bound HTTP port once started (the requested one before; None if disabled)."""
        return self._http.port if self._http is not None else self._want_http

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` for ``OTLPSpanExporter(endpoint=..., insecure=True)`` (gRPC)."""
        return f"{self._host_literal()}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Full URL for the OTLP/HTTP ``OTLPSpanExporter(endpoint=...)``."""
        return f"http://{self._host_literal()}:{self.http_port}/v1/traces"

    def _host_literal(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def stats(self) -> dict[str, int]:
        """Counter snapshot: ``{grpc,http}_{requests,spans_accepted,rejected,sink_errors,invalid_spans}``,
        ``sensitive_attributes_dropped``, ``values_masked`` (see :class:`~kprobe.otel.intake.IngestStats`).
        """
        return self._stats.snapshot()
