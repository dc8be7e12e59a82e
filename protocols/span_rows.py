"""Decoded exchanges as rows of the ``spans`` table, beside the OTLP spans.

Source marker: the ``attributes`` JSON carries ``"@source": "kprobe.decoded"`` (OTLP spans carry
``@scope``/``@resource`` instead), so no column is added to a table other paths own and every
existing query over ``spans`` keeps working; ``kprobe`` commands that must tell them apart filter
on ``JSONExtractString(attributes, '@source')``.

Linking across processes: both ends of a connection decode the same exchanges in the same order.
The trace id is derived from the connection's *socket pair* (the 4-tuple written with the lower
endpoint first, so client and server compute the same one) and the exchange's ordinal on the
connection; the client side's span (kind CLIENT, connect side) is the parent of the server side's
(kind SERVER). So a request between two services that export nothing is one trace of two spans,
found from either process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import msgspec
import numpy as np

from kprobe.schemas.store_tables import SPAN_COLUMNS, STATUS_ERROR, STATUS_UNSET

from .base import Exchange

__all__ = ["SOURCE", "SocketPair", "SpanRows", "trace_ids"]

SOURCE = "kprobe.decoded"
KIND_SERVER, KIND_CLIENT = 2, 3


@dataclass(frozen=True, slots=True)
class SocketPair:
    """One TCP connection as the capturing process sees it (local endpoint first)."""

    laddr: str
    lport: int
    raddr: str
    rport: int
    is_client: bool  #: True on the connect side

    def canonical(self) -> str:
        """The same string from both ends: the client endpoint first."""
        if self.is_client:
            return f"{self.laddr}:{self.lport}>{self.raddr}:{self.rport}"
        return f"{self.raddr}:{self.rport}>{self.laddr}:{self.lport}"


def trace_ids(pair: SocketPair, ordinal: int, canonical: str | None = None) -> tuple[str, str, str]:
    """(trace id, this side's span id, its parent span id) for the ``ordinal``-th exchange.
    ``canonical``: ``pair.canonical()`` when the caller has it already (one per connection)."""
    base = f"{canonical or pair.canonical()}#{ordinal}".encode()
    trace = hashlib.blake2b(base, digest_size=16, person=b"kprobe-trace").hexdigest()
    client = hashlib.blake2b(base, digest_size=8, person=b"kprobe-client").hexdigest()
    if pair.is_client:
        return trace, client, ""
    return trace, hashlib.blake2b(base, digest_size=8, person=b"kprobe-server").hexdigest(), client


_encode = msgspec.json.Encoder().encode


def _json(attrs: dict[str, object]) -> str:
    """Compact JSON of a span's attributes: msgspec's encoder, several times json.dumps' speed on
    the capture path (UTF-8 kept as is); json.dumps for what it refuses (a lone surrogate)."""
    try:
        return _encode(attrs).decode()
    except (msgspec.EncodeError, UnicodeError, TypeError, OverflowError):
        return json.dumps(attrs, separators=(",", ":"))


@dataclass
class SpanRows:
    """Accumulates decoded exchanges as span columns (see :data:`SPAN_COLUMNS`)."""

    host: str
    rows: list[tuple] = field(default_factory=list)
    _canonical: dict[SocketPair, str] = field(default_factory=dict, repr=False)

    def add(self, ex: Exchange, *, pair: SocketPair, ordinal: int, service: str, pid: int, tid: int) -> None:
        canonical = self._canonical.get(pair)
        if canonical is None:  # formatted once per connection (bounded: cleared with the rows)
            canonical = self._canonical[pair] = pair.canonical()
        trace, span, parent = trace_ids(pair, ordinal, canonical)
        attrs: dict[str, object] = {
            "@source": SOURCE,
            "protocol": ex.protocol,
            "net.sock.pair": canonical,
            "net.peer": f"{pair.raddr}:{pair.rport}",
            **ex.attributes,
        }
        if ex.latency_excluded:
            attrs["kprobe.latency_excluded"] = True
        self.rows.append((
            ex.start_ns, max(ex.end_ns, ex.start_ns), max(0, ex.end_ns - ex.start_ns), trace, span, parent,
            ex.name, KIND_CLIENT if pair.is_client else KIND_SERVER, service, self.host, pid, tid,
            STATUS_ERROR if ex.error else STATUS_UNSET, "", _json(attrs), "[]",
        ))

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as the numpy columns ``ColumnStore.write('spans', ...)`` takes; clears them."""
        out: dict[str, np.ndarray] = {}
        cols = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in SPAN_COLUMNS]
        for (name, ctype), values in zip(SPAN_COLUMNS, cols, strict=True):
            if "String" in ctype:
                out[name] = np.array(values, dtype=object)
            else:
                out[name] = np.array(values, dtype={"UInt64": np.uint64, "UInt32": np.uint32, "UInt8": np.uint8}[ctype])
        self.rows = []
        self._canonical.clear()
        return out
