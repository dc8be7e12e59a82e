"""Payload records -> per-connection decoders -> span rows.

Why a layer between the probe and the decoders: a record says "process P read these bytes from
socket S at time T"; a decoder wants "the client sent these bytes on this connection". This
module keeps one :class:`Connection` per (process, socket), decides which side of the connection
that process is, which protocol it speaks, feeds the decoder in order and turns the exchanges it
returns into rows of the ``spans`` table (:mod:`.spans`).

* **Side**: a socket whose remote port is a configured server port is the client side, one whose
  local port is, the server side; otherwise the side that writes first is the client (true of
  HTTP, PostgreSQL, FIX, ISO 8583 and ISO 20022 over TCP).
* **Protocol**: the port map first (``{5432: "postgresql"}``, from the domain map), then
  :func:`kprobe.protocols.sniff` on the first bytes the client sends. A connection neither
  identifies is counted (``unidentified``) and ignored from then on.
* **Gaps**: a record shorter than the call (the probe keeps a prefix) or a lost record leaves a
  hole no decoder can bridge; the connection's decoder is closed (its open requests counted
  unanswered) and a fresh one starts at the next bytes that look like a message start (counted
  ``gaps``). Nothing half-decoded becomes a span.

Card data: the raw bytes exist only in this process's memory, are never stored or published, and
every value a decoder keeps has been through :mod:`kprobe.masking` (see :mod:`.base`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from . import new_decoder, sniff
from .base import ConnectionDecoder, DecodeStats, Direction
from .span_rows import SocketPair, SpanRows

__all__ = ["Assembler", "Connection", "Piece"]

_MAX_CONNECTIONS = 65536


class Piece(NamedTuple):
    """One captured read or write (UTC time), as the probe reports it. A named tuple: one is built
    per captured call, and a frozen dataclass's field-by-field ``__init__`` cost more than the
    connection lookup it feeds."""

    ts_ns: int
    tgid: int
    tid: int
    conn_id: int  #: the socket's identity (struct sock address) while the connection lives
    outbound: bool  #: written by this process
    data: bytes
    total: int  #: bytes the call moved (> len(data): the rest was not captured)
    laddr: str
    lport: int
    raddr: str
    rport: int
    tls: bool = False  #: plaintext of a TLS connection (OpenSSL uprobes), not the socket's own bytes


@dataclass
class Connection:
    pair: SocketPair | None = None
    protocol: str | None = None
    decoder: ConnectionDecoder | None = None
    pending: list[Piece] = field(default_factory=list)  # before the protocol is known
    exchanges: int = 0
    ignored: bool = False
    last_ts: int = 0
    tgid: int = 0
    tid: int = 0
    encrypted: bool = False  #: TLS seen on the socket: only the uprobes' plaintext is decoded


@dataclass
class Assembler:
    """All connections of the watched processes on one host."""

    host: str
    ports: dict[int, str] = field(default_factory=dict)  #: server port -> protocol
    service_of: Callable[[int], str] = str  #: tgid -> service name
    rows: SpanRows = field(init=False)
    stats: dict[str, DecodeStats] = field(default_factory=dict)  #: per protocol
    unidentified: int = 0
    gaps: int = 0
    evicted: int = 0
    decoder_errors: int = 0  #: exceptions a decoder raised (bugs: counted, the connection restarted)
    _conns: dict[tuple[int, int], Connection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = SpanRows(self.host)

    def add(self, p: Piece) -> None:
        key = (p.tgid, p.conn_id)
        c = self._conns.get(key)
        # a local port of 0: the socket was reset and unhashed during the call (a reply written to a
        # peer that had already closed, over loopback): the same connection, not a reused address
        if c is None or (c.pair is not None and p.lport and (c.pair.lport, c.pair.rport) != (p.lport, p.rport)):
            if c is not None:
                self._close(c, p.ts_ns)  # the socket address was reused by a new connection
            c = self._conns[key] = Connection()
            if len(self._conns) > _MAX_CONNECTIONS:
                old = next(iter(self._conns))
                self._close(self._conns.pop(old), p.ts_ns)
                self.evicted += 1
        c.last_ts, c.tgid, c.tid = p.ts_ns, p.tgid, p.tid
        if not p.tls and (c.encrypted or (c.protocol is None and not c.pending and p.data[:2] == b"\x16\x03")):
            c.encrypted = True  # a TLS record (handshake, alert) read or written outside SSL_read/SSL_write
            if c.pair is None:
                c.pair = SocketPair(p.laddr, p.lport, p.raddr, p.rport, is_client=self._is_client(p))
            return
        if c.ignored:
            return
        if c.pair is None:
            c.pair = SocketPair(p.laddr, p.lport, p.raddr, p.rport, is_client=self._is_client(p))
        if c.protocol is None:
            c.pending.append(p)
            proto = self.ports.get(p.rport if c.pair.is_client else p.lport)
            if proto is None:
                first_out = b"".join(x.data for x in c.pending if x.outbound == c.pair.is_client)[:64]
                if len(first_out) < 8 and len(c.pending) < 4:
                    return
                proto = sniff(first_out)
            if proto is None:
                self.unidentified += 1
                c.ignored = True
                c.pending.clear()
                return
            c.protocol = proto
            c.decoder = new_decoder(proto)
            pending, c.pending = c.pending, []
            for q in pending:
                self._feed(c, q)
            return
        self._feed(c, p)

    def _is_client(self, p: Piece) -> bool:
        if p.rport in self.ports:
            return True
        if p.lport in self.ports:
            return False
        return p.outbound

    def _feed(self, c: Connection, p: Piece) -> None:
        assert c.decoder is not None and c.pair is not None
        direction = Direction.TO_SERVER if p.outbound == c.pair.is_client else Direction.TO_CLIENT
        try:
            exchanges = c.decoder.feed(direction, p.data, p.ts_ns)
        except Exception:  # a decoder bug must cost one connection's state, never the capture
            self.decoder_errors += 1
            c.decoder.stats.malformed += 1
            self.gap(c, p.ts_ns)
            return
        for ex in exchanges:
            self.rows.add(ex, pair=c.pair, ordinal=c.exchanges, service=self.service_of(p.tgid), pid=p.tgid, tid=p.tid)
            c.exchanges += 1
        if p.total > len(p.data):
            self.gap(c, p.ts_ns)

    def gap(self, c: Connection, ts_ns: int) -> None:
        """Bytes of this connection were not captured: restart its decoder."""
        self.gaps += 1
        if c.decoder is not None and c.protocol is not None:
            self._close(c, ts_ns)
            c.decoder = new_decoder(c.protocol)
            resume = getattr(c.decoder, "resume", None)
            if resume is not None:  # a decoder with per-connection start-up state picks up mid-stream
                resume()

    def lost(self, count: int) -> None:
        """Records lost in the ring: every connection may have a hole; restart all decoders."""
        if count:
            for c in self._conns.values():
                self.gap(c, c.last_ts)

    def lost_on(self, conn_id: int) -> None:
        """Records of this socket were lost: restart its decoder (on every process that shares it)."""
        for (_tgid, cid), c in self._conns.items():
            if cid == conn_id:
                self.gap(c, c.last_ts)

    def close_all(self, ts_ns: int) -> None:
        for c in self._conns.values():
            self._close(c, ts_ns)
        self._conns.clear()

    def _close(self, c: Connection, ts_ns: int) -> None:
        if c.decoder is None or c.pair is None:
            return
        for ex in c.decoder.close(ts_ns):
            self.rows.add(ex, pair=c.pair, ordinal=c.exchanges, service=self.service_of(c.tgid), pid=c.tgid, tid=c.tid)
            c.exchanges += 1
        self.stats.setdefault(str(c.protocol), DecodeStats()).add(c.decoder.stats)
        c.decoder = None

    def protocol_stats(self) -> dict[str, dict[str, int]]:
        """Per protocol, closed connections' counters plus the open ones' (for ``kprobe stats``)."""
        out: dict[str, DecodeStats] = {}
        for proto, s in self.stats.items():
            out.setdefault(proto, DecodeStats()).add(s)
        for c in self._conns.values():
            if c.decoder is not None:
                out.setdefault(str(c.protocol), DecodeStats()).add(c.decoder.stats)
        return {k: v.as_dict() for k, v in out.items()}


def addr_text(raw: bytes, family: int) -> str:
    """A 16-byte address field of a payload record as text."""
    return str(ipaddress.IPv4Address(raw[:4])) if family == 2 else str(ipaddress.IPv6Address(raw[:16]))
