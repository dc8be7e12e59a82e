"""The payload record header as the drain parses it (protocols/capture.py HEADER) against the layout
generated from schemas/records.h: a field moved in the C struct must fail here, not mis-decode."""

from __future__ import annotations

import numpy as np

from kprobe.protocols.capture import HEADER, HEADER_LEN
from kprobe.schemas import layouts as L


def test_header_struct_reads_every_field_where_the_layout_puts_it() -> None:
    rec = np.zeros(1, dtype=L.KP_PAYLOAD)
    values = {"ts_ns": 0x1122334455667788, "skaddr": 0xFFFF888812345678, "tgid": 4242, "tid": 4243, "fd": -7,
              "len": 96, "total": 70000, "dir": 1, "flags": L.KP_PAYLOAD_F_TLS, "family": 10, "sport": 5432,
              "dport": 40001, "pad2": 0}
    for k, v in values.items():
        rec[k] = v
    rec["saddr"][0] = np.arange(16, dtype=np.uint8)
    rec["daddr"][0] = np.arange(100, 116, dtype=np.uint8)
    got = HEADER.unpack_from(rec.tobytes(), 0)
    names = [n for n in L.KP_PAYLOAD.names if n != "data"]
    assert HEADER_LEN == L.KP_PAYLOAD.fields["data"][1] == HEADER.size
    assert dict(zip(names, got, strict=True)) == {**values, "saddr": bytes(range(16)), "daddr": bytes(range(100, 116))}
