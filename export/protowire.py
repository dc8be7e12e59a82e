"""Protocol Buffers wire format, write-only: the few field kinds a Perfetto trace needs.

Why not the protobuf runtime and Perfetto's generated classes: the exporter writes millions of
small messages, and building bytes directly is several times faster than populating message objects;
it also keeps Perfetto's Python package a test-only dependency (the test parses the output with it).
"""

from __future__ import annotations

import struct

from kprobe.schemas.varint import varint

_VARINT, _FIXED64, _LEN = 0, 1, 2


def uint(num: int, value: int) -> bytes:
    """A varint field (uint32/uint64/int32/int64/enum/bool); negative values as 64-bit two's complement."""
    return varint(num << 3 | _VARINT) + varint(value & 0xFFFFFFFFFFFFFFFF)


def fixed64(num: int, value: int) -> bytes:
    return varint(num << 3 | _FIXED64) + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def data(num: int, payload: bytes) -> bytes:
    """A length-delimited field: an embedded message or bytes."""
    return varint(num << 3 | _LEN) + varint(len(payload)) + payload


def string(num: int, text: str) -> bytes:
    return data(num, text.encode("utf-8", "replace"))
