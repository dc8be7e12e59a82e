"""OTLP/gRPC ``TraceService/Export`` server on grpcio.

Why a generic handler with raw bytes instead of the generated servicer: the
generated stub deserialises before our code runs, and grpcio turns a parse
failure into ``INTERNAL``. Taking the body as bytes lets a malformed request
get ``INVALID_ARGUMENT`` (do not retry) and a sink failure ``UNAVAILABLE``
(retry), which is what OTLP clients act on. gzip request compression is
handled by grpc core.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .errors import ReceiverBindError
from .intake import Ingestor, Verdict

__all__ = ["OtlpGrpcServer", "SERVICE", "METHOD"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"


class OtlpGrpcServer:
    """One grpc.Server bound at construction; ``start``/``stop`` control serving."""

    def __init__(
        self, ingestor: Ingestor, host: str, port: int, *, workers: int, max_message_bytes: int,
        max_concurrent: int = 64,
    ) -> None:
        self._ingestor = ingestor
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc")
        self._server = grpc.server(
            self._executor,
            maximum_concurrent_rpcs=max_concurrent,  # more calls queued than this: RESOURCE_EXHAUSTED, not memory
            options=[
                # Without this a second receiver on the same port "binds" silently
                # and the two split the traffic.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {METHOD: grpc.unary_unary_rpc_method_handler(self._export)},  # bytes in, bytes out
        )
        self._server.add_generic_rpc_handlers((handler,))
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
