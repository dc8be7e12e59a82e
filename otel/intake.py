"""Transport-independent ingestion: decode a body, hand the batch to the sink, count.

Why separate from the servers: gRPC and HTTP must give the *same* answers
(malformed -> client error, sink failure -> retryable error) and feed the same
counters. Each transport only maps an :class:`Outcome` to its own status codes.

The sink is called under a lock, so ``on_spans`` never runs concurrently even
though both servers decode on several threads: sinks such as an in-process
chDB connection need not be thread-safe. Decoding stays outside the lock.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clock_window import ClockWindow
from .otlp_decode import DecodeError, SpanBatch, decode_export_request

__all__ = ["Verdict", "Outcome", "IngestStats", "Ingestor", "TRANSPORTS"]

log = logging.getLogger(__name__)

TRANSPORTS = ("grpc", "http")
_PER_TRANSPORT = ("requests", "spans_accepted", "rejected", "sink_errors", "invalid_spans")
_GLOBAL = ("sensitive_attributes_dropped", "values_masked", "spans_time_clamped",
           "http_connections_refused", "http_deadline_exceeded", "grpc_calls_refused",
           "grpc_calls_cut")


class Verdict(enum.Enum):
    """What happened to one export request."""

    OK = "ok"  #: decoded and delivered (possibly with invalid spans skipped)
    MALFORMED = "malformed"  #: client error, do not retry
    SINK_ERROR = "sink_error"  #: our side failed, client should retry


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of ingesting one request, for a transport to translate."""

    verdict: Verdict
    message: str = ""
    spans: int = 0
    rejected_spans: int = 0  #: spans skipped for malformed ids (OTLP partial success)


class IngestStats:
    """Thread-safe counters (flat ``{transport}_{counter}`` names, plus redaction totals).

    Counters per transport: ``requests`` (every request seen, good or bad),
    ``spans_accepted`` (delivered to the sink), ``rejected`` (requests refused
    as malformed / unsupported / too large), ``sink_errors`` (requests answered
    with a retryable error because ``on_spans`` raised), ``invalid_spans``
    (spans skipped inside otherwise good requests). Global:
    ``sensitive_attributes_dropped``, ``values_masked``, ``spans_time_clamped`` (spans whose
    start or end lay outside the window around now, moved to its edge), and the HTTP server's
    ``http_connections_refused`` (over the connection cap) and ``http_deadline_exceeded``
    (requests cut by the whole-request deadline), and the gRPC server's ``grpc_calls_refused``
    (Export calls answered RESOURCE_EXHAUSTED over the cap of calls in progress; not in
    ``grpc_requests``: their bodies were never read) and ``grpc_calls_cut`` (calls that ended
    without a request: stalled until the connection age limit closed them, or empty).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {f"{t}_{c}": 0 for t in TRANSPORTS for c in _PER_TRANSPORT}
        self._counts.update(dict.fromkeys(_GLOBAL, 0))

    def add(self, **deltas: int) -> None:
        """Add to named counters (unknown names are a programming error)."""
        with self._lock:
            for name, delta in deltas.items():
                if name not in self._counts:
                    raise KeyError(name)
                self._counts[name] += delta

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with self._lock:
            return dict(self._counts)


class Ingestor:
    """Decode -> sink -> count, shared by both transports."""

    def __init__(self, on_spans: Callable[[SpanBatch], None], stats: IngestStats,
                 clock_window: ClockWindow | None = None) -> None:
        self._on_spans = on_spans
        self._stats = stats
        self._sink_lock = threading.Lock()
        self._window = clock_window or ClockWindow()

    def count_http(self, name: str) -> None:
        """A connection-level event of the HTTP server (``connections_refused``, ``deadline_exceeded``)."""
        self._stats.add(**{f"http_{name}": 1})

    def count_grpc(self, name: str) -> None:
        """A call-level event of the gRPC server (``calls_refused``, ``calls_cut``)."""
        self._stats.add(**{f"grpc_{name}": 1})

    def reject(self, transport: str, reason: str) -> Outcome:
        """Count a request refused before decoding (bad framing, media type, size)."""
        self._stats.add(**{f"{transport}_requests": 1, f"{transport}_rejected": 1})
        log.debug("otlp/%s rejected: %s", transport, reason)
        return Outcome(Verdict.MALFORMED, reason)

    def ingest(self, body: bytes, transport: str) -> Outcome:
        """Decode ``body`` (an ExportTraceServiceRequest) and deliver it to the sink."""
        try:
            batch = decode_export_request(body)
        except DecodeError as exc:
            return self.reject(transport, str(exc))
        clamped = self._window.clamp(batch, time.time_ns())
        self._stats.add(
            spans_time_clamped=clamped,
            sensitive_attributes_dropped=batch.sensitive_dropped,
            values_masked=batch.values_masked,
            **{f"{transport}_invalid_spans": batch.invalid_spans},
        )
        if len(batch):
            try:
                with self._sink_lock:
                    self._on_spans(batch)
            except Exception as exc:
                self._stats.add(**{f"{transport}_requests": 1, f"{transport}_sink_errors": 1})
                log.exception("otlp/%s span sink failed on %d spans", transport, len(batch))
                return Outcome(
                    Verdict.SINK_ERROR, f"span sink unavailable ({type(exc).__name__}), retry later"
                )
        self._stats.add(**{f"{transport}_requests": 1, f"{transport}_spans_accepted": len(batch)})
        message = ""
        if batch.invalid_spans:
            message = f"{batch.invalid_spans} span(s) dropped: trace_id must be 16 bytes, span ids 8 bytes"
        return Outcome(Verdict.OK, message, spans=len(batch), rejected_spans=batch.invalid_spans)
