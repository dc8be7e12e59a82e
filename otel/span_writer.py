"""Store received spans in the recorder's ``spans`` table, and count what happened to them.

Why a writer of its own: the recorder's capture loop batches kernel records on its own threads;
spans arrive on the receiver's threads at a very different rate. Writing each export request
straight through (the receiver already serialises calls) keeps a span queryable a few
milliseconds after the SDK exported it, which ``kprobe demo`` relies on. A failed insert raises,
so the receiver answers the exporter with a retryable error and counts it: nothing is dropped
silently.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kprobe.otel.otlp_decode import SPAN_SCHEMA, SpanBatch
from kprobe.schemas.store_tables import SPANS_TABLE

_STRING_COLUMNS = {f.name for f in SPAN_SCHEMA if str(f.type) == "string"}
_NUMPY_TYPES = {"uint64": np.uint64, "uint32": np.uint32, "uint8": np.uint8}


class ColumnStore(Protocol):
    def write(self, table: str, columns: dict[str, np.ndarray]) -> int: ...


def batch_columns(batch: SpanBatch) -> dict[str, np.ndarray]:
    """A decoded batch as the numpy columns the store's insert path takes (strings as object arrays)."""
    out: dict[str, np.ndarray] = {}
    for f in SPAN_SCHEMA:
        values = batch.column(f.name)
        if f.name in _STRING_COLUMNS:
            out[f.name] = np.array(values, dtype=object)
        else:
            out[f.name] = np.array(values, dtype=_NUMPY_TYPES[str(f.type)])
    return out


@dataclass
class SpanWriter:
    """``on_spans`` for :class:`~kprobe.otel.receiver.OtlpReceiver`: insert, count, re-raise on failure."""

    store: ColumnStore
    # the agent's host (kprobe record --host-name): spans naming this machine's hostname, or no host, are stored
    # under it, so they join the kernel rows of the same agent; "" keeps what the SDK said
    host: str = ""
    stored: int = 0
    write_errors: int = 0
    spans_failed: int = 0
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, batch: SpanBatch) -> None:
        try:
            cols = batch_columns(batch)
            if self.host:
                local = (socket.gethostname(), "")
                cols["host"] = np.array([self.host if h in local else h for h in cols["host"].tolist()], dtype=object)
            n = self.store.write(SPANS_TABLE.name, cols)
        except Exception as e:
            with self._lock:
                self.write_errors += 1
                self.spans_failed += len(batch)
                self.last_error = f"{type(e).__name__}: {e}"[:300]
            raise
        with self._lock:
            self.stored += n

    def snapshot(self) -> dict[str, int | str]:
        with self._lock:
            return {"spans_stored": self.stored, "span_write_errors": self.write_errors,
                    "spans_failed": self.spans_failed, "last_error": self.last_error}


def otel_summary(receiver_stats: dict[str, int], writer: dict[str, int | str]) -> dict[str, int | str]:
    """Receiver + writer counters in the shape `kprobe stats` shows: received, rejected, stored."""
    rx = receiver_stats
    received = sum(rx.get(f"{t}_spans_accepted", 0) + rx.get(f"{t}_invalid_spans", 0) for t in ("grpc", "http"))
    return {
        "spans_received": received,
        "spans_rejected_invalid_ids": sum(rx.get(f"{t}_invalid_spans", 0) for t in ("grpc", "http")),
        "requests": sum(rx.get(f"{t}_requests", 0) for t in ("grpc", "http")),
        "requests_rejected_malformed": sum(rx.get(f"{t}_rejected", 0) for t in ("grpc", "http")),
        "requests_sink_errors": sum(rx.get(f"{t}_sink_errors", 0) for t in ("grpc", "http")),
        "sensitive_attributes_dropped": rx.get("sensitive_attributes_dropped", 0),
        "values_masked": rx.get("values_masked", 0),
        "spans_time_clamped": rx.get("spans_time_clamped", 0),
        "http_connections_refused": rx.get("http_connections_refused", 0),
        "http_deadline_exceeded": rx.get("http_deadline_exceeded", 0),
        "grpc_calls_refused": rx.get("grpc_calls_refused", 0),
        "grpc_calls_cut": rx.get("grpc_calls_cut", 0),
        **writer,
        "receiver": dict(rx),
    }
