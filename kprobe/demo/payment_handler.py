"""payment-handler: an OpenTelemetry-instrumented service that settles each payment with a TCP call.

For each line ``pay <payment-id> <amount> <card-number>`` on stdin it opens a span ``POST /pay``
(real OTel SDK, exported over OTLP/gRPC or HTTP to ``--otlp-endpoint`` as soon as it ends), sends
``SETTLE <id> <amount>`` to the settlement service and waits for the answer with a receive timeout
(``--timeout-ms``, SO_RCVTIMEO, the way many C and JVM clients do it). A missing answer fails the
payment: span status ERROR. The resource carries ``process.pid`` and ``host.name`` and each span
``thread.id``, which is all kprobe needs to join the span to kernel events. One JSON line per
payment on stdout: ``{"event": "payment", "payment", "ok", "span_id", "trace_id", "start_ns",
"end_ns", "pid", "tid", "error"}``.

    python -m kprobe.demo.payment_handler --target 127.0.0.1:9000 --otlp-endpoint 127.0.0.1:4317

With ``--no-otel`` the same service exports nothing, the way most of a payment estate does: it is an
HTTP service (``POST /pay`` with a JSON body ``{"payment_id", "amount", "card"}`` on the port it
reports in its ``ready`` line) that settles with ``POST /settle`` over HTTP/1.1 and answers 200, or
504 when the settlement times out. kprobe then sees the payment only in the bytes on its sockets.
It still reports one ``payment`` line per request (without span ids) for the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

from kprobe.demo.proc import emit, set_comm, wait_go


def _tracer(service: str, endpoint: str, transport: str):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=endpoint, timeout=30)
    provider = TracerProvider(resource=Resource.create(
        {"service.name": service, "host.name": socket.gethostname(), "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # export at span end: no batching delay
    return provider, provider.get_tracer("kprobe.demo.payment_handler")


def settle(target: tuple[str, int], payment: str, amount: str, timeout_ms: int) -> str:
    """One settlement call; raises TimeoutError when no answer arrives within the timeout."""
    with socket.create_connection(target, timeout=5) as s:
        s.settimeout(None)  # blocking socket; the kernel enforces the receive timeout
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                     struct.pack("ll", timeout_ms // 1000, (timeout_ms % 1000) * 1000))
        s.sendall(f"SETTLE {payment} {amount}\n".encode())
        try:
            answer = s.recv(4096)
        except BlockingIOError as e:  # EAGAIN from SO_RCVTIMEO
            raise TimeoutError(f"settlement timeout after {timeout_ms} ms") from e
        if not answer:
            raise ConnectionError("settlement service closed the connection")
        return answer.decode(errors="replace").strip()


def settle_http(target: tuple[str, int], payment: str, amount: str, timeout_ms: int) -> str:
    """The settlement call as HTTP/1.1 (``--no-otel``): same socket timeout, same failure."""
    body = json.dumps({"payment_id": payment, "amount": amount}).encode()
    with socket.create_connection(target, timeout=5) as s:
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                     struct.pack("ll", timeout_ms // 1000, (timeout_ms % 1000) * 1000))
        s.sendall(b"POST /settle HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (target[0].encode(), target[1], len(body), body))
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("settlement service closed the connection")
                answer += chunk
        except BlockingIOError as e:  # EAGAIN from SO_RCVTIMEO
            raise TimeoutError(f"settlement timeout after {timeout_ms} ms") from e
        return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def serve_http(target: tuple[str, int], timeout_ms: int) -> None:
    """``--no-otel``: payments arrive as HTTP requests, served one at a time on one thread."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Pay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            start = time.time_ns()
            doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            payment, amount = str(doc.get("payment_id", "?")), str(doc.get("amount", "0"))
            error = ""
            try:
                settle_http(target, payment, amount, timeout_ms)
            except (TimeoutError, OSError) as e:
                error = str(e)
            out = {"payment_id": payment, "status": "failed" if error else "settled"}
            if error:
                out["error"] = error
            data = json.dumps(out).encode()
            self.send_response(504 if error else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            emit(event="payment", payment=payment, ok=not error, error=error, span_id="", trace_id="",
                 start_ns=start, end_ns=time.time_ns(), pid=os.getpid(), tid=threading.get_native_id())

    with HTTPServer(("127.0.0.1", 0), Pay) as server:
        emit(event="ready", pid=os.getpid(), tid=threading.get_native_id(), port=server.server_address[1])
        threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
        server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="payment-handler", help="process name (comm) (default: %(default)s)")
    ap.add_argument("--service", default=None, help="OTel service.name (default: --name)")
    ap.add_argument("--target", required=True, help="settlement service host:port")
    ap.add_argument("--timeout-ms", type=int, default=750, help="settlement call timeout (default: %(default)s)")
    ap.add_argument("--no-otel", action="store_true",
                    help="export nothing: an HTTP service settling over HTTP (kprobe decodes its traffic)")
    ap.add_argument("--otlp-endpoint", default=None,
                    help="gRPC host:port, or http://host:port/v1/traces with --otlp-transport http")
    ap.add_argument("--otlp-transport", choices=("grpc", "http"), default="grpc")
    args = ap.parse_args(argv)
    set_comm(args.name)
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    if args.no_otel:
        wait_go()
        serve_http(target, args.timeout_ms)
        return 0
    if not args.otlp_endpoint:
        ap.error("--otlp-endpoint is required unless --no-otel")
    provider, tracer = _tracer(args.service or args.name, args.otlp_endpoint, args.otlp_transport)
    from opentelemetry.trace import SpanKind, Status, StatusCode

    wait_go()
    emit(event="ready", pid=os.getpid(), tid=threading.get_native_id())
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        payment, amount, card = (parts + ["?", "0", ""])[1:4]
        error = ""
        with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as span:
            span.set_attribute("thread.id", threading.get_native_id())
            span.set_attribute("payment.id", payment)
            span.set_attribute("payment.amount", amount)
            if card:
                span.set_attribute("card.number", card)  # masked by kprobe before anything is stored
            try:
                settle(target, payment, amount, args.timeout_ms)
                span.set_status(Status(StatusCode.OK))
            except (TimeoutError, OSError) as e:
                error = str(e)
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, error))
            ctx = span.get_span_context()
        emit(event="payment", payment=payment, ok=not error, error=error, span_id=f"{ctx.span_id:016x}",
             trace_id=f"{ctx.trace_id:032x}", start_ns=span.start_time, end_ns=span.end_time, pid=os.getpid(),
             tid=threading.get_native_id())
    provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
