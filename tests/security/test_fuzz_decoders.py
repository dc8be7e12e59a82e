"""Fuzz (hypothesis) the decoders that read bytes from outside: OTLP requests, gzip bodies, the Kafka
wire format and the disk spool. Whatever the bytes, the only outcomes are a result or the decoder's own
error type: no other exception, no crash."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from kprobe.otel.http_server import gunzip_bounded
from kprobe.otel.otlp_decode import DecodeError, decode_export_request
from kprobe.schemas.tables import BY_NAME
from kprobe.sinks.spool import CorruptSpoolFile, DiskSpool
from kprobe.sinks.spool import decode as spool_decode
from kprobe.sinks.spool import encode as spool_encode
from kprobe.topics import wire

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_wire() -> bytes:
    et = BY_NAME["syscall"]
    r = np.zeros(20, dtype=et.record)
    r["enter_ns"] = np.arange(20) + 1
    cols = et.columns(r, 1_764_000_000 * 10**9)
    cols["host"] = np.full(20, "h", dtype=object)
    cols["service"] = np.array([f"s{i % 3}" for i in range(20)], dtype=object)
    return bytes(wire.encode(wire.BatchHeader("syscall", "h", 1, 1, 20, 0, 0, 0), cols, b"k" * 16))


VALID_WIRE = _valid_wire()

# -- OTLP ------------------------------------------------------------------------------------------

texts = st.text(max_size=40) | st.sampled_from(["4111 1111 1111 1111", "cvv", "thread.id", "process.pid", "\udcff"[:0]])
scalars = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), texts),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=40)),
    st.just(AnyValue()),
)


def _nest(children):
    def arr(vs):
        a = AnyValue()
        a.array_value.values.extend(vs)
        return a

    def kv(pairs):
        a = AnyValue()
        a.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
        return a

    return st.lists(children, max_size=4).map(arr) | st.lists(st.tuples(texts, children), max_size=4).map(kv)


any_values = st.recursive(scalars, _nest, max_leaves=12)
attrs = st.lists(st.tuples(texts, any_values), max_size=6)


@st.composite
def export_requests(draw) -> bytes:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attrs))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(texts)
            for _ in range(draw(st.integers(0, 3))):
                sp = ss.spans.add()
                sp.trace_id = draw(st.binary(min_size=0, max_size=17))
                sp.span_id = draw(st.binary(min_size=0, max_size=9))
                sp.parent_span_id = draw(st.binary(max_size=9))
                sp.name = draw(texts)
                sp.start_time_unix_nano = draw(st.integers(0, 2**64 - 1))
                sp.end_time_unix_nano = draw(st.integers(0, 2**64 - 1))
                sp.kind = draw(st.integers(0, 5))
                sp.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attrs))
                sp.status.message = draw(texts)
                sp.status.code = draw(st.integers(0, 2))
                for _ in range(draw(st.integers(0, 2))):
                    ev = sp.events.add()
                    ev.name = draw(texts)
                    ev.time_unix_nano = draw(st.integers(0, 2**64 - 1))
                    ev.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attrs))
    return req.SerializeToString()


def _otlp(body: bytes) -> None:
    try:
        batch = decode_export_request(body)
    except DecodeError:
        return
    batch.to_arrow()  # what the store inserts: must be buildable from anything that decoded


@FUZZ
@given(export_requests())
def test_otlp_structured_requests_decode_or_refuse(body: bytes) -> None:
    _otlp(body)


@FUZZ
@given(export_requests(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_otlp_mutated_requests_decode_or_refuse(body: bytes, flips: list[tuple[int, int]]) -> None:
    b = bytearray(body or b"\x0a\x00")
    for pos, val in flips:
        b[pos % len(b)] = val
    _otlp(bytes(b))


@FUZZ
@given(st.binary(max_size=2000))
def test_otlp_random_bytes_decode_or_refuse(body: bytes) -> None:
    _otlp(body)


@FUZZ
@given(st.binary(max_size=500), st.integers(1, 10_000))
def test_gzip_bodies_inflate_or_refuse(data: bytes, limit: int) -> None:
    for body in (data, zlib.compress(data)[:-3], b"\x1f\x8b\x08\x00" + data):
        try:
            assert len(gunzip_bounded(body, limit)) <= limit
        except (ValueError, zlib.error):
            pass


# -- Kafka wire format -------------------------------------------------------------------------------

def _wire(data: bytes, key: bytes | None) -> None:
    try:
        _, rb = wire.decode(data, key)
    except wire.WireError:
        return
    wire.columns_of(rb)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       st.sampled_from([None, b"k" * 16]))
def test_wire_mutated_batches_decode_or_refuse(flips: list[tuple[int, int]], key: bytes | None) -> None:
    b = bytearray(VALID_WIRE)
    for pos, val in flips:
        b[pos % len(b)] = val
    _wire(bytes(b), key)


@FUZZ
@given(st.binary(max_size=3000), st.integers(0, len(VALID_WIRE)))
def test_wire_random_and_truncated_bytes_decode_or_refuse(data: bytes, cut: int) -> None:
    _wire(data, None)
    _wire(b"KPRB\x01\x00" + data, None)
    _wire(VALID_WIRE[:cut], None)
    _wire(VALID_WIRE[:cut], b"k" * 16)


# -- disk spool ------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=400), st.text(max_size=20), st.integers(0, 2**32 - 1))
def test_spool_files_decode_or_are_corrupt(data: bytes, topic: str, rows: int) -> None:
    for blob in (data, spool_encode(topic or "t", b"k", rows, data)[: max(1, len(data))], b"KPS1" + data):
        try:
            spool_decode(Path("x.kpb"), blob)
        except CorruptSpoolFile:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_spool_directory_of_garbage_opens_and_drains(tmp_path_factory, files: list[bytes]) -> None:
    d = tmp_path_factory.mktemp("spool")
    for i, blob in enumerate(files):
        (d / f"0000-{i:012d}.kpb").write_bytes(blob)
    sp = DiskSpool(d)
    seen = 0
    while not sp.empty():
        items = sp.peek(4)
        if not items:
            break
        for it in items:
            sp.remove(it)
            seen += 1
    assert seen + sp.quarantined == len(files)
