"""OTLP/gRPC ``TraceService/Export`` server on grpcio.

Why a generic handler with raw bytes instead of the generated servicer: the
generated stub deserialises before our code runs, and grpcio turns a parse
failure into ``INTERNAL``. Taking the body as bytes lets a malformed request
get ``INVALID_ARGUMENT`` (do not retry) and a sink failure ``UNAVAILABLE``
(retry), which is what OTLP clients act on. gzip request compression is
handled by grpc core.

Admission is ours, not grpc core's (``maximum_concurrent_rpcs`` refuses with RESOURCE_EXHAUSTED
before any application code runs, so those refusals could not be counted). The generic handler's
``service`` runs on grpc's serving thread when a call arrives, before the call is queued: it admits
at most ``max_concurrent`` Export calls in progress (queued or running) and answers the rest
RESOURCE_EXHAUSTED at once, counted (``grpc_calls_refused``). Both handlers are stream-unary on
our side (the wire is the same as unary's): the refusal answers without reading the body, and an
admitted call reads its body only once one of ``workers`` decode slots is free, so memory stays
bounded by ``workers`` bodies. The pool has a thread for every admitted call plus spares, so a
refusal never waits behind admitted calls for a thread (a client would see its deadline expire
instead of the refusal).

A call that never sends its request (a stalled or slowloris client) would hold its slot forever:
connections are aged out (``call_deadline_s``: GOAWAY after two thirds of it, closed after the
rest), which bounds every call; one cut that way ends without a request and is counted
(``grpc_calls_cut``, with calls that send none at all).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .errors import ReceiverBindError
from .intake import Ingestor, Verdict

__all__ = ["OtlpGrpcServer", "SERVICE", "METHOD"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
_SPARE_THREADS = 4  # threads beyond the admitted calls: refusals are answered by these


class _Admission(grpc.GenericRpcHandler):
    """At most ``limit`` Export calls in progress; one more is refused at arrival and counted."""

    def __init__(self, limit: int, workers: int, export: Any, count: Any) -> None:
        self.limit = limit
        self._export = export
        self._count = count
        self._lock = threading.Lock()
        self.in_progress = 0
        self._decode = threading.BoundedSemaphore(workers)
        self._admitted = grpc.stream_unary_rpc_method_handler(self._run)
        self._refusal = grpc.stream_unary_rpc_method_handler(self._refuse)

    def service(self, handler_call_details: Any) -> Any:
        if handler_call_details.method != f"/{SERVICE}/{METHOD}":
            return None  # grpc answers UNIMPLEMENTED
        with self._lock:
            admitted = self.in_progress < self.limit
            if admitted:
                self.in_progress += 1
        if not admitted:
            self._count("calls_refused")
            return self._refusal
        return self._admitted

    def _refuse(self, requests: Iterator[bytes], context: Any) -> bytes:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"kprobe OTLP receiver busy: {self.limit} export calls in progress, retry later")
        return b""  # unreachable: abort raises

    def _run(self, requests: Iterator[bytes], context: Any) -> bytes:
        try:
            with self._decode:
                try:
                    body = next(requests, None)
                except grpc.RpcError:  # the call was cancelled while we waited (connection closed)
                    body = None
                if body is None:  # cut by the connection age limit, or sent nothing
                    self._count("calls_cut")
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no ExportTraceServiceRequest in the call")
                return self._export(body, context)
        finally:
            with self._lock:
                self.in_progress -= 1


class OtlpGrpcServer:
    """One grpc.Server bound at construction; ``start``/``stop`` control serving."""

    def __init__(
        self, ingestor: Ingestor, host: str, port: int, *, workers: int, max_message_bytes: int,
        max_concurrent: int = 64, call_deadline_s: float = 90.0,
    ) -> None:
        if max_concurrent < 1 or workers < 1:
            raise ValueError(f"max_concurrent and workers must be >= 1, got {max_concurrent}, {workers}")
        self._ingestor = ingestor
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent + _SPARE_THREADS, thread_name_prefix="otlp-grpc")
        self.admission = _Admission(max_concurrent, workers, self._export, ingestor.count_grpc)
        age_ms = max(1, int(call_deadline_s * 1000 * 2 / 3))
        self._server = grpc.server(
            self._executor,
            options=[
                # Without this a second receiver on the same port "binds" silently
                # and the two split the traffic.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_message_bytes),
                # every call ends within call_deadline_s: GOAWAY at the age, closed after the grace
                ("grpc.max_connection_age_ms", age_ms),
                ("grpc.max_connection_age_grace_ms", max(1, int(call_deadline_s * 1000) - age_ms)),
            ],
        )
        self._server.add_generic_rpc_handlers((self.admission,))  # bytes in, bytes out
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio >= 1.5x raises on bind failure
            self._discard()
            raise ReceiverBindError("OTLP/gRPC", host, port, str(exc)) from exc
        if bound == 0:  # older grpcio returns 0
            self._discard()
            raise ReceiverBindError("OTLP/gRPC", host, port, "address in use or not available")
        self.port = bound

    def _discard(self) -> None:
        self._server.stop(None)
        self._executor.shutdown(wait=False)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        """Stop accepting, give in-flight calls ``grace`` seconds, release threads."""
        self._server.stop(grace).wait(grace + 1.0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _export(self, request: bytes, context: Any) -> bytes:
        outcome = self._ingestor.ingest(request, "grpc")
        if outcome.verdict is Verdict.MALFORMED:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome.message)
        if outcome.verdict is Verdict.SINK_ERROR:
            context.abort(grpc.StatusCode.UNAVAILABLE, outcome.message)
        response = ExportTraceServiceResponse()
        if outcome.rejected_spans:
            response.partial_success.rejected_spans = outcome.rejected_spans
            response.partial_success.error_message = outcome.message
        return response.SerializeToString()
