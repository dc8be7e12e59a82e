"""PostgreSQL frontend/backend protocol 3.0 decoder: one exchange per statement executed.

Simple query (``Q``): the exchange runs from the Query's first byte to the ReadyForQuery (``Z``)
that ends it. Extended query (Parse/Bind/Describe/Execute/Sync, pipelined or not): one exchange
per Execute, from the first byte of the messages that prepared it (its Parse and Bind, or the
Bind alone for a prepared statement) to the CommandComplete, EmptyQueryResponse, PortalSuspended
or ErrorResponse that answers it. Statements are tracked by name (Parse -> Bind -> portal) so a
prepared statement executed a thousand times is named by its text each time.

Kept: the statement *shape* (:mod:`.sqlshape`, literals replaced), its first keyword, the command
tag and row count, the SQLSTATE and severity of an error (not its message: it may quote a value),
user and database from the startup packet. Never kept: Bind parameter values (the decoder does not
even read them), password and SASL messages, DataRow contents, COPY data.

A connection that switches to TLS (SSLRequest answered ``S``) or GSS encryption is given up on
(counted ``abandoned``); the plaintext comes from the OpenSSL uprobes instead, when attached.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from .base import DecodeStats, Direction, Exchange, safe_text
from .sqlshape import normalise, operation

__all__ = ["PgDecoder"]

_SSL_REQUEST, _GSS_REQUEST, _CANCEL = 80877103, 80877104, 80877102
_PROTO_3 = 196608
_KEEP = 256 * 1024  # message bodies larger than this are skipped (DataRow, COPY), not buffered
_MAX_LEN = 1 << 30
_MAX_NAMES = 4096  # prepared statements remembered per connection
_MAX_SHAPES = 256  # statement shapes whose span attributes are kept ready per connection
_MAX_STARTUP = 10000  # the server refuses longer startup packets too
_CLIENT_TYPES = frozenset(b"QPBDECSHXFpdcf")
_SERVER_TYPES = frozenset(b"RSKZTDCEN123nstIGHWAcdfVv")


@dataclass(slots=True)
class _Side:
    buf: bytearray = field(default_factory=bytearray)
    first_ts: int = 0
    started: bool = False  # client: startup packet seen
    skip: int = 0  # bytes of an oversized message still to discard
    dead: bool = False


@dataclass(slots=True)
class _Pending:
    start: int
    shape: str
    mode: str
    rows: int = 0
    tag: str = ""
    error: dict[str, str] | None = None


class PgDecoder:
    """One PostgreSQL connection (both directions)."""

    protocol = "postgresql"

    def __init__(self) -> None:
        self.stats = DecodeStats()
        self._sides = (_Side(), _Side())
        self._expect_ssl_answer = False
        self._statements: dict[str, str] = {}  # prepared statement name -> shape
        self._portals: dict[str, str] = {}  # portal name -> shape
        self._batch_start: int | None = None  # first byte of messages not yet tied to an Execute
        self._executes: deque[_Pending] = deque()  # extended: Executes awaiting their answer
        self._simple: deque[_Pending] = deque()  # simple: Queries awaiting ReadyForQuery
        self._syncs = 0  # Syncs sent and not yet answered by ReadyForQuery
        self._failed_batch = False
        self.user = ""
        self.database = ""
        self._resync = [False, False]  # per direction: after a gap, until a message parses again
        # shape -> (masked statement text, operation): a connection runs the same few shapes over and
        # over (pgbench: 5), and masking + keyword per statement were a sixth of the capture's CPU
        self._shape_attrs: dict[str, tuple[str, str]] = {}
        # Parse text -> shape: drivers that parse an unnamed statement before every execution send
        # the same text each time (only Parse: simple queries carry their literals, rarely repeated)
        self._parsed: dict[str, str] = {}

    def resume(self) -> None:
        """The connection goes on after bytes were lost (a gap): its startup packet is long gone, and
        the next piece of each direction starts at a read or write boundary, where a message usually
        starts. Pieces that do not parse are skipped until one does (the gap is counted already)."""
        self._sides[Direction.TO_SERVER].started = True
        self._resync = [True, True]

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        self.stats.bytes += len(data)
        side = self._sides[direction]
        if side.dead:
            return []
        if not side.buf:
            side.first_ts = ts_ns
        if side.skip:
            n = min(side.skip, len(data))
            side.skip -= n
            data = data[n:]
        side.buf += data
        out: list[Exchange] = []
        seen = self.stats.messages
        try:
            if direction == Direction.TO_SERVER:
                self._client(side, ts_ns)
            else:
                self._server(side, ts_ns, out)
        except (ValueError, struct.error, IndexError, UnicodeDecodeError):
            if self._resync[direction] and self.stats.messages == seen:
                side.buf.clear()  # not at a message start after the gap: wait for the next piece
                side.skip = 0
                return out
            self.stats.malformed += 1
            self._give_up(side)
            return out
        if self.stats.messages != seen:
            self._resync[direction] = False
        return out

    def close(self, ts_ns: int) -> list[Exchange]:
        self.stats.unanswered += len(self._executes) + len(self._simple)
        self._executes.clear()
        self._simple.clear()
        return []

    def _give_up(self, side: _Side) -> None:
        """No resynchronisation is possible in a length-prefixed stream that lost its step."""
        side.dead = True
        side.buf.clear()
        self.stats.abandoned += 1

    # -- framing ---------------------------------------------------------------------------
    def _messages(self, side: _Side, typed: bool, ts: int, types: frozenset[int] = frozenset()):
        """Yield (type, body, first_ts) of whole messages; oversized bodies come back as None."""
        buf = side.buf
        while not side.dead:
            head = 5 if typed else 4
            if len(buf) < head:
                return
            kind = buf[0] if typed else 0
            (length,) = struct.unpack_from("!i", buf, 1 if typed else 0)
            if length < 4 or length > (_MAX_LEN if typed else _MAX_STARTUP):
                raise ValueError(f"impossible message length {length}")
            if typed and kind not in types:
                raise ValueError(f"unknown message type {kind:#x}")
            total = length + (1 if typed else 0)
            first_ts = side.first_ts
            if total - head > _KEEP and len(buf) >= head:
                available = len(buf)
                del buf[:total]
                side.skip = max(0, total - available)
                side.first_ts = ts
                self.stats.messages += 1
                yield kind, None, first_ts
                continue
            if len(buf) < total:
                return
            body = bytes(buf[head:total])
            del buf[:total]
            side.first_ts = ts
            self.stats.messages += 1
            yield kind, body, first_ts

    # -- client -> server ---------------------------------------------------------------------
    def _client(self, side: _Side, ts: int) -> None:
        if not side.started:
            for _, body, _first in self._messages(side, typed=False, ts=ts):
                if body is None or len(body) < 4:
                    raise ValueError("startup packet")
                (code,) = struct.unpack_from("!i", body, 0)
                if code in (_SSL_REQUEST, _GSS_REQUEST):
                    self._expect_ssl_answer = True
                    continue
                if code == _CANCEL:
                    return
                if code != _PROTO_3:
                    raise ValueError(f"unknown startup code {code}")
                params = body[4:].split(b"\0")
                kv = dict(zip(params[0::2], params[1::2], strict=False))
                self.user = safe_text(kv.get(b"user", b""), 64)
                self.database = safe_text(kv.get(b"database", b""), 64)
                side.started = True
                break
            if not side.started:
                return
        for kind, body, first_ts in self._messages(side, typed=True, ts=ts, types=_CLIENT_TYPES):
            t = chr(kind)
            if self._batch_start is None and t in "QPBDEC":
                self._batch_start = first_ts
            if t == "Q":
                shape = normalise(_cstr(body, 0)[0]) if body is not None else "<statement too long>"
                self._simple.append(_Pending(self._batch_start or first_ts, shape, "simple"))
                self._batch_start = None
            elif t == "P":
                if body is None:
                    raise ValueError("Parse larger than kept")
                name, pos = _cstr(body, 0)
                text, _ = _cstr(body, pos)
                if len(self._statements) >= _MAX_NAMES and name not in self._statements:
                    self._statements.pop(next(iter(self._statements)))
                shape = self._parsed.get(text)
                if shape is None:
                    if len(self._parsed) >= _MAX_SHAPES:
                        self._parsed.clear()
                    shape = self._parsed[text] = normalise(text)
                self._statements[name] = shape
            elif t == "B":
                if body is None:
                    raise ValueError("Bind larger than kept")
                portal, pos = _cstr(body, 0)  # parameter values after this are never read
                stmt, _ = _cstr(body, pos)
                if len(self._portals) >= _MAX_NAMES and portal not in self._portals:
                    self._portals.pop(next(iter(self._portals)))
                self._portals[portal] = self._statements.get(stmt, "<unknown prepared statement>")
            elif t == "E":
                portal, _ = _cstr(body or b"\0", 0)
                shape = self._portals.get(portal, "<unknown portal>")
                self._executes.append(_Pending(self._batch_start or first_ts, shape, "extended"))
                self._batch_start = None
            elif t == "S":
                self._syncs += 1
            elif t == "X":
                return

    # -- server -> client ---------------------------------------------------------------------
    def _server(self, side: _Side, ts: int, out: list[Exchange]) -> None:
        if self._expect_ssl_answer:
            if not side.buf:
                return
            answer = side.buf[0]
            del side.buf[0]
            self._expect_ssl_answer = False
            if answer in b"SG":
                self.stats.abandoned += 1  # encrypted from here on
                side.dead = True
                self._sides[Direction.TO_SERVER].dead = True
                side.buf.clear()
                return
            if answer != ord("N"):
                raise ValueError("bad SSL answer")
        for kind, body, _first in self._messages(side, typed=True, ts=ts, types=_SERVER_TYPES):
            t = chr(kind)
            current = self._executes[0] if self._executes else (self._simple[0] if self._simple else None)
            if t == "D" and current is not None:
                current.rows += 1
            elif t == "C" and current is not None:
                current.tag = _cstr(body or b"\0", 0)[0][:64]
                if self._executes:
                    self._done(self._executes.popleft(), ts, out, None)
            elif t in "Is" and self._executes:
                self._done(self._executes.popleft(), ts, out, None)
            elif t == "E":
                fields = _error_fields(body or b"")
                if self._executes:
                    self._done(self._executes.popleft(), ts, out, fields)
                    # the server skips the rest of the batch up to Sync: those never ran
                    self.stats.unanswered += len(self._executes)
                    self._executes.clear()
                elif self._simple:
                    self._simple[0].error = fields
            elif t == "Z":
                if self._simple and self._syncs == 0:
                    p = self._simple.popleft()
                    self._done(p, ts, out, p.error)
                elif self._syncs:
                    self._syncs -= 1
                    if not self._syncs and self._executes:
                        self.stats.unanswered += len(self._executes)
                        self._executes.clear()

    def _done(self, p: _Pending, ts: int, out: list[Exchange], error: dict[str, str] | None) -> None:
        known = self._shape_attrs.get(p.shape)
        if known is None:
            if len(self._shape_attrs) >= _MAX_SHAPES:
                self._shape_attrs.clear()
            text = safe_text(p.shape, 2048)
            known = self._shape_attrs[p.shape] = (text, operation(p.shape))
        attrs: dict[str, str | int] = {
            "db.system": "postgresql",
            "db.statement": known[0],
            "db.operation": known[1],
            "db.pg.mode": p.mode,
        }
        if self.user:
            attrs["db.user"] = self.user
        if self.database:
            attrs["db.name"] = self.database
        if error is not None:
            attrs["db.pg.sqlstate"] = safe_text(error.get("C", ""), 8)
            attrs["db.pg.severity"] = safe_text(error.get("V", error.get("S", "")), 16)
        else:
            attrs["db.pg.command_tag"] = safe_text(p.tag, 64)
            attrs["db.rows"] = p.rows
        self.stats.exchanges += 1
        name = attrs["db.statement"]
        out.append(Exchange("postgresql", str(name)[:200], p.start, ts, error is not None, attrs))


def _cstr(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\0", pos)  # ValueError when unterminated
    return body[pos:end].decode("utf-8", "replace"), end + 1


def _error_fields(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        value, pos = _cstr(body, pos + 1)
        if code in "SVC":  # severity, non-localised severity, SQLSTATE; never the message text
            out[code] = value
    return out
