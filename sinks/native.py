"""ClickHouse Native format blocks built from Arrow columns with numpy, for ``INSERT ... FORMAT Native``.

Why: the ingest dataflow's cost per event was dominated by clickhouse-driver's INSERT (its Python
column writers, ~0.7 us a row of client CPU) and by turning Arrow strings into Python objects.
The Native format is ClickHouse's own columnar layout, so numeric columns are their Arrow buffers
as they are (zero copy) and a string column is built from its Arrow offsets and bytes with a few
vectorised numpy operations; no Python object is created per row. A message's block is cheap
enough to build on the ingest's hot path, and the server parses Native faster than anything else.

Layout of one block (all integers little-endian)::

    varint columns | varint rows | per column: string name, string type, column data

where a ``string`` is ``varint length + UTF-8 bytes``; fixed-width columns are their values back
to back; a String column is one ``string`` per row. Several blocks may follow each other in one
INSERT body. A null string (none are produced by the agent) is written as the empty string.

A LowCardinality(String) column is written as ClickHouse serialises it itself (a dictionary of
distinct values, then one index per row), straight from an Arrow dictionary array: the agent's
repeated strings (syscall name, comm, host, service) then cost the client a few bytes per row and
the server no string per row to parse or hash. ClickHouse 18.16 refuses a String block for a
LowCardinality column ("Bad cast from type DB::ColumnString"), so the block carries the table's
own type::

    UInt64 1 (keys version) | UInt64 index width code | flags | UInt64 keys | keys as String data
    | UInt64 rows | indexes (UInt8/16/32)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from kprobe.schemas.varint import varint

NUMPY_OF = {
    "UInt8": np.dtype("<u1"), "UInt16": np.dtype("<u2"), "UInt32": np.dtype("<u4"), "UInt64": np.dtype("<u8"),
    "Int8": np.dtype("<i1"), "Int16": np.dtype("<i2"), "Int32": np.dtype("<i4"), "Int64": np.dtype("<i8"),
    "Float32": np.dtype("<f4"), "Float64": np.dtype("<f8"),
}


LOW_CARDINALITY_STRING = "LowCardinality(String)"


class NativeError(ValueError):
    """A column that cannot be written as the table's type (the batch goes to the dead-letter topic)."""


def _str(s: str) -> bytes:
    b = s.encode()
    return varint(len(b)) + b


def _varints(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(varint byte count per value, the varint bytes of all values back to back) for lengths >= 0."""
    lengths = lengths.astype(np.int64, copy=False)
    width = np.ones(len(lengths), dtype=np.int64)
    for shift in (7, 14, 21, 28, 35):
        width += lengths >= (1 << shift)
    if (width == 1).all():
        return width, lengths.astype(np.uint8)
    out = np.empty(int(width.sum()), dtype=np.uint8)
    start = np.cumsum(width) - width
    rest = lengths.copy()
    for k in range(int(width.max())):  # byte k of every value that has one
        has = width > k
        more = width > k + 1
        out[start[has] + k] = ((rest[has] & 0x7F) | (more[has] << 7)).astype(np.uint8)
        rest >>= 7
    return width, out


def _plain_strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of each value's Native string back to back, byte length of each) of a string array."""
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = arr.fill_null("")
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets).astype(np.int64)
    width, heads = _varints(lengths)
    sizes = width + lengths
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]) if n else 0, dtype=np.uint8)
    if (width == 1).all():
        out[starts] = heads
    else:
        head_pos = np.repeat(starts - (np.cumsum(width) - width), width) + np.arange(len(heads))
        out[head_pos] = heads
    total = int(lengths.sum())
    if total:
        # Arrow keeps the values back to back: byte j of value i is data[offsets[i] + j] and goes to
        # out[starts[i] + width[i] + j]
        src = np.arange(offsets[0], offsets[0] + total, dtype=np.int64)
        out[src + np.repeat(starts + width - offsets[:-1], lengths)] = data[src]
    return out, sizes


def _within(lengths: np.ndarray, total: int) -> np.ndarray:
    """0..len-1 for every value, back to back."""
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def string_column(arr: pa.Array) -> bytes:
    """A String column's Native data from an Arrow string or dictionary-of-string array."""
    if pa.types.is_dictionary(arr.type):
        pool, sizes = _plain_strings(arr.dictionary)  # each distinct value encoded once
        indices = arr.indices
        if indices.null_count:  # a null row is the empty string, one slot past the dictionary
            indices = indices.fill_null(len(sizes))
            pool, sizes = np.concatenate([pool, np.zeros(1, np.uint8)]), np.append(sizes, 1)
        idx = indices.to_numpy(zero_copy_only=False)
        if len(sizes) == 0:
            return b""
        if (sizes == sizes[0]).all():  # one width: a row is a whole row of a 2-D table
            return pool.reshape(len(sizes), int(sizes[0]))[idx].tobytes()
        pool_start = np.cumsum(sizes) - sizes
        row_sizes = sizes[idx]
        total = int(row_sizes.sum())
        return pool[np.repeat(pool_start[idx], row_sizes) + _within(row_sizes, total)].tobytes()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise NativeError(f"{arr.type} is not a string")
    return _plain_strings(arr)[0].tobytes()


# Index width codes and flags of ClickHouse's LowCardinality serialisation (IndexesSerializationType).
_LC_KEYS_VERSION = 1  # SharedDictionariesWithAdditionalKeys
_LC_HAS_ADDITIONAL_KEYS = 1 << 9
_LC_NEED_UPDATE_DICTIONARY = 1 << 10
_LC_INDEX_TYPES = ((1 << 8, 0, np.dtype("<u1")), (1 << 16, 1, np.dtype("<u2")), (1 << 32, 2, np.dtype("<u4")))


def low_cardinality_column(arr: pa.Array) -> list[bytes | memoryview]:
    """A LowCardinality(String) column's Native data from an Arrow string or dictionary-of-string array."""
    if not pa.types.is_dictionary(arr.type):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise NativeError(f"{arr.type} is not a string")
        arr = arr.dictionary_encode()
    dictionary = arr.dictionary
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        raise NativeError(f"dictionary of {dictionary.type} is not a string")
    prefix = np.array([_LC_KEYS_VERSION], dtype="<u8").tobytes()
    if len(arr) == 0:
        return [prefix]
    indices = arr.indices
    if indices.null_count:  # a null row is the empty string, one key past the dictionary
        indices = indices.fill_null(len(dictionary))
        dictionary = pa.concat_arrays([dictionary.cast(pa.string()), pa.array([""], type=pa.string())])
    keys = len(dictionary)
    code, dtype = next((c, d) for limit, c, d in _LC_INDEX_TYPES if keys <= limit)
    idx = indices.to_numpy(zero_copy_only=False)
    head = np.array([_LC_HAS_ADDITIONAL_KEYS | _LC_NEED_UPDATE_DICTIONARY | code, keys], dtype="<u8").tobytes()
    return [prefix + head, string_column(dictionary), np.array([len(idx)], dtype="<u8").tobytes(),
            memoryview(np.ascontiguousarray(idx, dtype=dtype)).cast("B")]


def fixed_column(arr: pa.Array | np.ndarray, ch_type: str) -> bytes | memoryview:
    """A fixed-width column's Native data (the Arrow/numpy buffer itself when the width matches)."""
    dtype = NUMPY_OF.get(ch_type)
    if dtype is None:
        raise NativeError(f"ClickHouse type {ch_type} is not supported by the Native writer")
    if isinstance(arr, pa.Array):
        if arr.null_count:
            raise NativeError(f"{arr.null_count} nulls in a {ch_type} column")
        values = arr.to_numpy(zero_copy_only=False)
    else:
        values = arr
    if values.dtype.kind not in "uif" or (values.dtype.kind == "f") != (dtype.kind == "f"):
        raise NativeError(f"{values.dtype} does not fit {ch_type}")
    if values.dtype != dtype:
        values = values.astype(dtype)
    return memoryview(np.ascontiguousarray(values)).cast("B")


def block(columns: list[tuple[str, str, pa.Array | np.ndarray]], rows: int) -> list[bytes | memoryview]:
    """One Native block as a list of buffers (join them, or hand them to a socket one by one).

    ``columns``: (name, ClickHouse type, values); string columns take Arrow string/dictionary arrays.
    A LowCardinality(String) column is sent as one; other wrapped strings (Nullable) as String.
    """
    parts: list[bytes | memoryview] = [varint(len(columns)) + varint(rows)]
    for name, ch_type, values in columns:
        if len(values) != rows:
            raise NativeError(f"{name}: {len(values)} values for {rows} rows")
        if ch_type == LOW_CARDINALITY_STRING:
            parts.append(_str(name) + _str(ch_type))
            if isinstance(values, np.ndarray):
                values = pa.array(values, type=pa.string())
            parts += low_cardinality_column(values)
            continue
        parts.append(_str(name) + _str("String" if ch_type.endswith("String)") else ch_type))
        if ch_type == "String" or ch_type.endswith("String)"):
            if isinstance(values, np.ndarray):
                values = pa.array(values, type=pa.string())
            parts.append(string_column(values))
        else:
            parts.append(fixed_column(values, ch_type))
    return parts
