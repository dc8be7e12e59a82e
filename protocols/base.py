"""What every protocol decoder shares: decoded messages, counters, and the streaming contract.

Why one small contract: payload capture hands the agent bounded pieces of one connection's two
byte streams, split wherever the kernel split the reads and writes. Every decoder therefore takes
``feed(direction, data, ts_ns)`` for one connection and returns the messages completed by that
piece; it buffers at most :data:`MAX_BUFFER` bytes of an unfinished message and never raises on
what it reads. Input it cannot make sense of is counted in :class:`DecodeStats` (``malformed``)
and the decoder re-synchronises or gives up on the connection (``abandoned``): a peer's bytes must
never crash the agent, and nothing dropped is silent (the counts reach ``kprobe stats``).

Sensitive data: a decoder keeps only the fields it names in its docstring. Free text it keeps
(an HTTP path, an SQL statement shape, a FIX Text) still goes through :mod:`kprobe.masking`
before it leaves the decoder, so a card number in a URL is masked like in an OTLP span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from kprobe.masking import mask_text

__all__ = [
    "MAX_BUFFER",
    "Direction",
    "DecodeStats",
    "Message",
    "Exchange",
    "ConnectionDecoder",
    "safe_text",
]

#: Bytes of an unfinished message a decoder holds per direction; beyond it the message is
#: counted as oversized and skipped (payload capture only keeps bounded prefixes anyway).
MAX_BUFFER = 1 << 20


class Direction(IntEnum):
    """Which way the bytes flow on the connection, seen from the side that opened it."""

    TO_SERVER = 0  #: written by the client (connect side), read by the server (accept side)
    TO_CLIENT = 1  #: written by the server, read by the client


@dataclass(slots=True)
class DecodeStats:
    """Counters a decoder keeps; summed per protocol into ``kprobe stats``."""

    bytes: int = 0  #: bytes fed
    messages: int = 0  #: messages decoded
    exchanges: int = 0  #: request/response pairs completed
    malformed: int = 0  #: messages or stretches of bytes that could not be decoded
    oversized: int = 0  #: messages larger than MAX_BUFFER, skipped
    unanswered: int = 0  #: requests still open when the connection closed
    unmatched: int = 0  #: responses with no request to pair them with
    abandoned: int = 0  #: connections given up on after bytes that cannot be re-synchronised

    def add(self, other: DecodeStats) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class Message:
    """One decoded protocol message (an HTTP request, a FIX ExecutionReport, a PG Query...)."""

    protocol: str
    direction: Direction
    kind: str  #: protocol-specific message type: "GET", "D", "0200", "pacs.008", "Q"...
    first_ts_ns: int  #: time of the piece that carried its first byte
    last_ts_ns: int  #: time of the piece that carried its last byte
    fields: dict[str, str | int] = field(default_factory=dict)


@dataclass(slots=True)
class Exchange:
    """A request and what answered it: the unit that becomes a span."""

    protocol: str
    name: str  #: span name: "GET /accounts/{id}", "SELECT * FROM t WHERE id = $1", "NewOrderSingle"
    start_ns: int  #: first byte of the request
    end_ns: int  #: last byte of the response
    error: bool
    attributes: dict[str, str | int] = field(default_factory=dict)
    #: excluded from latency statistics (a FIX PossDup resend, a pipelined request queued behind another)
    latency_excluded: bool = False


class ConnectionDecoder(Protocol):
    """One connection's decoder; both directions go through the same object."""

    protocol: str
    stats: DecodeStats

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        """Add the next piece of one direction; return the exchanges it completed."""
        ...

    def close(self, ts_ns: int) -> list[Exchange]:
        """The connection ended: count what stays unanswered, return nothing half-known.

        A decoder whose connection has start-up state (PostgreSQL's startup packet) may also have
        ``resume()``: called on the fresh decoder the assembler starts after a gap, mid-stream."""
        ...


def safe_text(raw: bytes | str, limit: int = 512) -> str:
    """Bytes from the wire as bounded, card-masked text (what a decoder may keep of free text)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if len(text) > limit:
        text = text[:limit]
    return mask_text(text)[0]
