"""Columnar span batches decoded from OTLP ``ExportTraceServiceRequest`` bodies.

Why columnar: spans are joined with kernel events in chDB/ClickHouse on
host + pid + thread + time, and both are inserted through pyarrow. A batch is
a dataclass of equal-length Python lists (cheapest to build from a protobuf
walk) with :meth:`SpanBatch.to_arrow` producing a table with fixed types.

Column conventions
------------------
* ``ts_ns`` / ``end_ns``: span start / end, UTC ns since the epoch (UInt64);
  ``duration_ns`` is ``end_ns - ts_ns`` (0 if the client sent end < start).
* ids are lower-case hex (32 / 16 chars); ``parent_span_id`` is '' for roots.
* ``kind`` is the OTLP ``SpanKind`` number (0 unspecified, 1 internal,
  2 server, 3 client, 4 producer, 5 consumer).
* ``service`` / ``host`` / ``pid`` come from the *resource* attributes
  ``service.name`` / ``host.name`` / ``process.pid``; ``tid`` from the *span*
  attribute ``thread.id`` (0 when absent).
* ``attributes`` is a JSON object of the span attributes, with two reserved
  keys appended: ``"@resource"`` (the resource attributes as an object) and
  ``"@scope"`` (instrumentation scope name). Resource attributes are thus
  kept *under their own key*, not merged, so a span attribute never shadows a
  resource one. Values keep their JSON type; bytes are base64.
* ``events`` is a JSON array of ``{"name", "ts_ns", "attributes"}`` (e.g.
  ``exception`` events with ``exception.type`` / ``exception.message``).

Sensitive data never leaves :func:`decode_export_request`: attribute keys
naming CVV/CVC/track/PIN data or the PAN are dropped (span, event and resource
attributes), and card data is masked (see :mod:`kprobe.masking`) in attribute
keys and values (bytes decoded first), span and event names, status messages
and the instrumentation scope name. How many of each is reported on the batch
(``sensitive_dropped``, ``values_masked``).

Spans with malformed ids (trace_id not 16 bytes, span_id not 8 bytes,
parent_span_id neither empty nor 8 bytes) are skipped and counted in
``invalid_spans`` so the receiver can answer with an OTLP partial success.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from kprobe.masking import mask_text

from .attributes import Tally, attributes_to_dict, dumps, redacted_json

__all__ = ["SPAN_SCHEMA", "SpanBatch", "decode_export_request", "DecodeError"]

#: Arrow schema of :meth:`SpanBatch.to_arrow`, in column order. Fields are
#: non-nullable (absent values are 0 / '') so ClickHouse sees plain UInt64 /
#: String rather than Nullable(...), which would slow the joins.
SPAN_SCHEMA = pa.schema(
    [
        pa.field("ts_ns", pa.uint64(), nullable=False),
        pa.field("end_ns", pa.uint64(), nullable=False),
        pa.field("duration_ns", pa.uint64(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string(), nullable=False),
        pa.field("parent_span_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("kind", pa.uint8(), nullable=False),
        pa.field("service", pa.string(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("pid", pa.uint32(), nullable=False),
        pa.field("tid", pa.uint32(), nullable=False),
        pa.field("status_code", pa.uint8(), nullable=False),
        pa.field("status_message", pa.string(), nullable=False),
        pa.field("attributes", pa.string(), nullable=False),
        pa.field("events", pa.string(), nullable=False),
    ]
)

_COLUMNS = tuple(SPAN_SCHEMA.names)

#: Span, event and scope names repeat (OTel asks for low-cardinality names): mask each once.
_mask_name = lru_cache(maxsize=4096)(mask_text)
_U32_MAX = 0xFFFFFFFF


class DecodeError(ValueError):
    """The body is not a valid ``ExportTraceServiceRequest`` protobuf."""


@dataclass(slots=True)
class SpanBatch:
    """Equal-length column lists, one row per span (see module docstring)."""

    ts_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)
    duration_ns: list[int] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    parent_span_id: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    host: list[str] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    tid: list[int] = field(default_factory=list)
    status_code: list[int] = field(default_factory=list)
    status_message: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    # Decode metadata, not columns.
    sensitive_dropped: int = 0
    values_masked: int = 0
    invalid_spans: int = 0

    def __len__(self) -> int:
        return len(self.ts_ns)

    def column(self, name: str) -> list[Any]:
        """The list backing column ``name``."""
        if name not in _COLUMNS:
            raise KeyError(name)
        return getattr(self, name)  # type: ignore[no-any-return]

    def rows(self) -> list[dict[str, Any]]:
        """Row dicts, for tests and debugging (not for the hot path)."""
        cols = [getattr(self, n) for n in _COLUMNS]
        return [dict(zip(_COLUMNS, vals, strict=True)) for vals in zip(*cols, strict=True)]

    def to_arrow(self) -> pa.Table:
        """A ``pyarrow.Table`` with :data:`SPAN_SCHEMA` (ready for chDB/ClickHouse)."""
        arrays = [pa.array(getattr(self, f.name), type=f.type) for f in SPAN_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)

    @classmethod
    def from_rows(cls, rows: list[tuple[Any, ...]], **meta: int) -> SpanBatch:
        """Build from row tuples in :data:`SPAN_SCHEMA` order (transposed in C by zip)."""
        if not rows:
            return cls(**meta)
        cols = [list(c) for c in zip(*rows, strict=True)]
        return cls(*cols, **meta)


assert [f.name for f in fields(SpanBatch)][: len(_COLUMNS)] == list(_COLUMNS)


def _as_u32(value: Any) -> int:
    """Resource/span attribute -> UInt32 (ints or digit strings), else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 <= value <= _U32_MAX else 0
    if isinstance(value, str) and value.isdigit():
        n = int(value)
        return n if n <= _U32_MAX else 0
    return 0


def _events_json(events: Any, tally: Tally) -> str:
    """Span events -> JSON array text; names and attributes redacted."""
    out = []
    for ev in events:
        name, n = _mask_name(ev.name)
        tally.masked += bool(n)
        attrs = (
            redacted_json(attributes_to_dict(ev.attributes, tally), tally)[0] if len(ev.attributes) else {}
        )
        out.append({"name": name, "ts_ns": ev.time_unix_nano, "attributes": attrs})
    # Redacted part by part above: the event timestamps are 19-digit numbers
    # that must not go through PAN masking.
    return dumps(out)


def decode_export_request(body: bytes) -> SpanBatch:
    """Decode an OTLP ``ExportTraceServiceRequest`` protobuf into a redacted :class:`SpanBatch`.

    Raises :class:`DecodeError` if ``body`` is not a parseable request.
    """
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except Exception as exc:  # upb raises google.protobuf.message.DecodeError
        raise DecodeError(f"not an OTLP ExportTraceServiceRequest protobuf: {exc}") from exc

    tally = Tally()
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    invalid = 0
    for rs in req.resource_spans:
        res_attrs, res_json = redacted_json(attributes_to_dict(rs.resource.attributes, tally), tally)
        service = res_attrs.get("service.name", "")
        service = service if isinstance(service, str) else str(service)
        host = res_attrs.get("host.name", "")
        host = host if isinstance(host, str) else str(host)
        pid = _as_u32(res_attrs.get("process.pid"))
        for ss in rs.scope_spans:
            # Appended to each span's attribute object: `,"@resource":{..},"@scope":".."}`.
            scope, n = _mask_name(ss.scope.name)
            tally.masked += bool(n)
            tail = '"@resource":' + res_json + ',"@scope":' + dumps(scope) + "}"
            for sp in ss.spans:
                trace_id = sp.trace_id
                span_id = sp.span_id
                parent = sp.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or (parent and len(parent) != 8):
                    invalid += 1
                    continue
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                name, n = _mask_name(sp.name)
                tally.masked += bool(n)
                attrs, attrs_json = redacted_json(attributes_to_dict(sp.attributes, tally), tally)
                if len(attrs_json) == 2:  # "{}"
                    attrs_json = "{" + tail
                    tid = 0
                else:
                    attrs_json = attrs_json[:-1] + "," + tail
                    tid = attrs.get("thread.id", 0)
                    if type(tid) is not int or not 0 <= tid <= _U32_MAX:
                        tid = _as_u32(tid)
                status = sp.status
                message = status.message
                if message:
                    message, n = mask_text(message)
                    tally.masked += bool(n)
                events = sp.events
                append(
                    (
                        start,
                        end,
                        end - start if end > start else 0,
                        trace_id.hex(),
                        span_id.hex(),
                        parent.hex(),
                        name,
                        sp.kind,
                        service,
                        host,
                        pid,
                        tid,
                        status.code,
                        message,
                        attrs_json,
                        _events_json(events, tally) if events else "[]",
                    )
                )
    return SpanBatch.from_rows(
        rows, sensitive_dropped=tally.dropped, values_masked=tally.masked, invalid_spans=invalid
    )
