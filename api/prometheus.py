"""A tiny Prometheus text-format endpoint (``GET /metrics``) for the agent and the dataflows.

No client library: the exposition format is a few lines of text, and a scrape must never touch
the capture path, so the server only calls a ``collect`` function that reads counters.

Why in api/: it is one of kprobe's read-only HTTP endpoints, like `kprobe serve`'s API, built on
the same bounded server (otel/http_limits.py); its users are several long-running processes (the
Kafka agent, the ingest and causality dataflows), so it belongs to none of them. It imports
nothing else of api/, so a process that serves only /metrics loads only this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kprobe.otel.http_limits import HttpLimits, LimitedHandler, LimitedHTTPServer


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    kind: str  # counter | gauge
    samples: tuple[tuple[dict[str, str], float], ...] = field(default_factory=tuple)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in sorted(labels.items()))
    return "{" + body + "}"


def render(metrics: Iterable[Metric]) -> str:
    lines = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            lines.append(f"{m.name}{_labels(labels)} {float(value):g}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, float]:
    """`name{labels}` -> value; for tests and `kprobe stats` reading a remote endpoint."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


class MetricsServer:
    """``GET /metrics`` on ``bind`` (127.0.0.1 unless configured), with the same limits as the OTLP/HTTP
    receiver (otel/http_limits.py): a connection cap and a whole-request deadline, both counted and
    exported as ``kprobe_metrics_http_{connections_refused,deadline_exceeded}_total``."""

    def __init__(self, port: int, collect: Callable[[], Iterable[Metric]], bind: str = "127.0.0.1",
                 limits: HttpLimits | None = None):
        self.counts = {"connections_refused": 0, "deadline_exceeded": 0}
        lock = threading.Lock()

        def count(name: str) -> None:
            with lock:
                self.counts[name] = self.counts.get(name, 0) + 1

        def collect_all() -> list[Metric]:
            own = [Metric(f"kprobe_metrics_http_{k}_total", f"metrics endpoint: {k.replace('_', ' ')}", "counter",
                          (({}, float(v)),)) for k, v in sorted(self.counts.items())]
            return [*collect(), *own]

        def handler_factory(*args, **kwargs):
            return _Handler(collect_all, *args, **kwargs)

        self._server = LimitedHTTPServer((bind, port), handler_factory, limits or HttpLimits(max_connections=16,
                                         request_deadline_s=10.0, idle_timeout_s=10.0), count)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kprobe-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(LimitedHandler):
    def __init__(self, collect: Callable[[], Iterable[Metric]], *args, **kwargs):
        self._collect = collect
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        try:
            body = render(self._collect()).encode()
            code = 200
        except Exception as e:  # a broken collector shows as an error, never kills the server
            body, code = f"# collect failed: {e}\n".encode(), 500
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
