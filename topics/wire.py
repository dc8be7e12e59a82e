"""Wire format of one Kafka message: many events of one table, columnar, with a versioned header.

Layout::

    b"KPRB" | u16 wire version | u32 header length | header (msgpack) | Arrow IPC stream

The header (:class:`BatchHeader`) says which table, which host, the batch id the ClickHouse sink
deduplicates on, the row count and the time range (so a sink can check a table cheaply after a
crash). The body is one Arrow record batch of the table's columns exactly as the agent's converter
produced them (``schemas/tables.py``): any Arrow reader (Java, Go, pandas) can consume the topics
without kprobe. A string column whose values repeat (comm, syscall, host, service: nearly all of
them) is an Arrow dictionary array (``dictionary<values=string, indices=int32>``): encoding each
distinct value once made the agent's encode ~4x cheaper, and the ClickHouse sink builds its insert
block from the dictionary directly. The topic's compression (producer-side lz4/zstd) compresses the
whole message.

Decoding failures raise :class:`WireError` with the reason: the dataflows route such messages to
the dead-letter topic instead of stopping.

Authentication: anyone who can write to the topics could otherwise send batches, or claim the id of
a batch an agent is about to send so the sink drops the real one as a duplicate. With a
per-deployment batch key (``--batch-key-file`` on the agent and the ingest dataflow), batch ids are
keyed and every header carries an HMAC-SHA256 of header and body; the sink refuses (dead-letter,
counted) a batch without a valid MAC. Readers without the key still decode everything.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from kprobe.schemas.arrow_strings import string_array

MAGIC = b"KPRB"
WIRE_VERSION = 1
_PREFIX = struct.Struct("<4sHI")

Columns = dict[str, np.ndarray]


class WireError(ValueError):
    """A message that is not a decodable kprobe batch (reason in the text)."""


class BatchHeader(msgspec.Struct, frozen=True):
    table: str
    host: str
    batch_id: int  # unique per (agent run, sequence): the sink's dedup key
    seq: int  # per agent run, increasing: spool and Kafka keep this order
    rows: int
    min_ts: int  # UTC ns, 0 when the table has no ts column
    max_ts: int
    produced_ns: int  # wall clock when the agent encoded it (freshness measurements)
    schema_version: int = WIRE_VERSION
    mac: bytes = b""  # HMAC-SHA256 over the header (mac empty) and the body, with the deployment's batch key


def batch_id(host: str, run_id: str, seq: int, key: bytes | None = None) -> int:
    """64-bit id of a batch; collision-free in practice across hosts and agent restarts. With the
    deployment's batch key it is keyed (blake2b MAC): nobody without the key can compute the id of a
    batch an agent will send, so nobody can pre-claim it (a sink drops a second batch with an id)."""
    digest = hashlib.blake2b(f"{host}\0{run_id}\0{seq}".encode(), digest_size=8, key=(key or b"")[:64]).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF  # fits Int64 and UInt64 alike


def to_arrow(columns: Columns) -> pa.RecordBatch:
    arrays, names = [], []
    for name, values in columns.items():
        names.append(name)
        if values.dtype == object:
            arrays.append(string_array(values))
        else:
            arrays.append(pa.array(np.ascontiguousarray(values)))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _mac(key: bytes, header: BatchHeader, body: bytes | memoryview | pa.Buffer) -> bytes:
    m = hmac.new(key, msgspec.msgpack.encode(msgspec.structs.replace(header, mac=b"")), hashlib.sha256)
    m.update(body)
    return m.digest()


def encode(header: BatchHeader, columns: Columns, key: bytes | None = None) -> pa.Buffer:
    """The message as one buffer (any bytes-like use works: produce, file write, decode).

    Sized first (a mock pass over the IPC writer costs no copy), then written once: growing an
    output stream and joining prefix, header and body copied a 3 MB message five times. With
    ``key`` the header carries an HMAC of header and body (one more copy of the body).
    """
    rb = to_arrow(columns)
    if key:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rb.schema) as w:
            w.write_batch(rb)
        body = sink.getvalue()
        head = msgspec.msgpack.encode(msgspec.structs.replace(header, mac=_mac(key, header, body)))
        return pa.py_buffer(_PREFIX.pack(MAGIC, WIRE_VERSION, len(head)) + head + body.to_pybytes())
    head = msgspec.msgpack.encode(header)
    mock = pa.MockOutputStream()
    with pa.ipc.new_stream(mock, rb.schema) as w:
        w.write_batch(rb)
    start = _PREFIX.size + len(head)
    buf = pa.allocate_buffer(start + mock.size())
    out = pa.FixedSizeBufferWriter(buf)
    out.write(_PREFIX.pack(MAGIC, WIRE_VERSION, len(head)) + head)
    with pa.ipc.new_stream(out, rb.schema) as w:
        w.write_batch(rb)
    return buf


def decode_header(data: bytes | pa.Buffer) -> tuple[BatchHeader, int]:
    """(header, offset of the Arrow body); raises WireError."""
    if len(data) < _PREFIX.size:
        raise WireError(f"message of {len(data)} bytes is shorter than the kprobe prefix")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}: not a kprobe batch")
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version} is not supported (this build reads {WIRE_VERSION})")
    end = _PREFIX.size + hlen
    if end > len(data):
        raise WireError("header length runs past the end of the message")
    try:
        header = msgspec.msgpack.decode(data[_PREFIX.size:end], type=BatchHeader)
    except msgspec.DecodeError as e:
        raise WireError(f"bad header: {e}") from e
    return header, end


def verify(data: bytes | pa.Buffer, key: bytes) -> BatchHeader:
    """The header of a message whose HMAC matches ``key``; WireError (reason ``unauthenticated``) otherwise."""
    header, off = decode_header(data)
    if not header.mac:
        raise WireError("unauthenticated: the batch carries no MAC and this sink requires one")
    body = memoryview(data)[off:] if isinstance(data, bytes | bytearray) else pa.py_buffer(data)[off:]
    if not hmac.compare_digest(header.mac, _mac(key, header, body)):
        raise WireError("unauthenticated: the batch's MAC does not match the deployment's batch key")
    return header


def decode(data: bytes | pa.Buffer, key: bytes | None = None) -> tuple[BatchHeader, pa.RecordBatch]:
    """Header and body; with ``key``, only a batch whose MAC matches (WireError otherwise)."""
    if key:
        verify(data, key)
    header, off = decode_header(data)
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data)[off:])
        batches = list(reader)
    except (pa.ArrowException, OSError, ValueError) as e:  # NotImplemented too: a flipped type id (fuzzing)
        raise WireError(f"bad Arrow body: {e}") from e
    if len(batches) != 1:
        raise WireError(f"expected one record batch, got {len(batches)}")
    rb = batches[0]
    try:  # offsets, dictionary indices and UTF-8 inside bounds (~4 ns a row): a corrupt body found by
        rb.validate(full=True)  # fuzzing decoded "fine" and then indexed out of range in columns_of
        rb.schema.names  # noqa: B018 - column names must be UTF-8 (raises UnicodeDecodeError otherwise)
    except (pa.ArrowException, ValueError) as e:
        raise WireError(f"bad Arrow body: {e}") from e
    if rb.num_rows != header.rows:
        raise WireError(f"header says {header.rows} rows, body has {rb.num_rows}")
    return header, rb


def columns_of(rb: pa.RecordBatch) -> Columns:
    """Arrow batch -> numpy columns (strings as object arrays), the shape every sink takes."""
    out: Columns = {}
    for name, col in zip(rb.schema.names, rb.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            values = np.empty(len(col.dictionary) + 1, dtype=object)
            values[:-1] = col.dictionary.to_pylist()
            values[-1] = None  # a null row
            indices = col.indices.fill_null(len(col.dictionary)) if col.null_count else col.indices
            out[name] = values[indices.to_numpy(zero_copy_only=False)]
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # decode each distinct string once (most columns are comm/host/syscall names): ~5x faster
            d = col.dictionary_encode()
            values = np.empty(len(d.dictionary), dtype=object)
            values[:] = d.dictionary.to_pylist()
            out[name] = values[d.indices.to_numpy(zero_copy_only=False)] if len(col) else np.empty(0, dtype=object)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def ts_range(columns: Columns) -> tuple[int, int]:
    """(min, max) of the row time (``ts``, or ``ts_ns`` for spans); (0, 0) when there is none."""
    ts = columns.get("ts", columns.get("ts_ns"))
    if ts is None or len(ts) == 0:
        return 0, 0
    return int(ts.min()), int(ts.max())


MIN_KEY_BYTES = 16


def load_batch_key(path: Path) -> bytes:
    """The deployment's batch key from a file (raw bytes, trailing newline ignored; at least 16 bytes).

    Refused when other users may read it: the key is what stops them from forging batches."""
    st = path.stat()
    if st.st_mode & 0o077:
        raise ValueError(f"{path}: the batch key is readable by other users (mode {st.st_mode & 0o777:o}); chmod 600")
    key = path.read_bytes().rstrip(b"\r\n")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path}: a batch key needs at least {MIN_KEY_BYTES} bytes, found {len(key)}")
    return key
