"""The ClickHouse sink's string encoding (pure: no server needed)."""

from __future__ import annotations

import numpy as np

from kprobe.sinks.clickhouse_server import utf8


def test_utf8_encodes_each_value_keeps_order_missing_and_bytes() -> None:
    values = np.array(["write", "read", None, "write", "é", b"raw"], dtype=object)
    out = utf8(values)
    assert out.dtype == object
    assert list(out) == [b"write", b"read", None, b"write", "é".encode(), b"raw"]
    assert len(utf8(np.array([], dtype=object))) == 0
