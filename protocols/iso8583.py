"""ISO 8583 decoder (1987 field layout, ASCII encoding; bitmap as hex text or binary).

Kept: MTI, processing code (3), amount (4), transmission time (7), STAN (11), local time and date
(12, 13), acquirer id (32), RRN (37), authorisation id (38), response code (39), terminal and
merchant ids (41, 42), currency (49) and original data elements (90, what a reversal names).
Card and cardholder-verification data are parsed past and never kept: PAN (2), expiry (14),
extended PAN (34), track 2 / 3 / 1 (35, 36, 45), PIN block (52), security info (53), ICC/EMV data
(55) and account ids (102, 103). The decoder is a whitelist: a field not named above is skipped.

Framing on TCP: each message is preceded by its length, as a 2-byte big-endian binary number
(the most common) or as 4 ASCII digits; the first message of a connection decides which (or the
caller fixes it). A message whose fields do not parse is counted malformed and skipped whole (the
length prefix keeps the stream in step); a length prefix that cannot be one (zero, or larger than
the 9999 a 4-digit prefix allows) abandons the direction, since nothing tells where the next
message starts.

Pairing: a request MTI (third digit even: 0100, 0200, 0420, 0800...) is answered by the MTI with
the third digit plus one (0110, 0210, 0430, 0810) carrying the same STAN (and terminal id when
present). Response codes other than approvals are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import DecodeStats, Direction, Exchange, safe_text

__all__ = ["Iso8583Decoder", "FIELDS", "parse_message", "NEVER_STORED", "KEPT"]

_F, _LL, _LLL = 0, 2, 3


def _spec() -> dict[int, tuple[int, int]]:
    """Field number -> (length type: 0 fixed / 2 LLVAR / 3 LLLVAR, maximum length), ISO 8583:1987."""
    s: dict[int, tuple[int, int]] = {1: (_F, 16), 2: (_LL, 19), 3: (_F, 6)}
    s.update({n: (_F, 12) for n in (4, 5, 6)})
    s.update({7: (_F, 10), 8: (_F, 8), 9: (_F, 8), 10: (_F, 8), 11: (_F, 6), 12: (_F, 6)})
    s.update({n: (_F, 4) for n in range(13, 19)})
    s.update({n: (_F, 3) for n in range(19, 25)})
    s.update({25: (_F, 2), 26: (_F, 2), 27: (_F, 1)})
    s.update({n: (_F, 9) for n in range(28, 32)})
    s.update({32: (_LL, 11), 33: (_LL, 11), 34: (_LL, 28), 35: (_LL, 37), 36: (_LLL, 104)})
    s.update({37: (_F, 12), 38: (_F, 6), 39: (_F, 2), 40: (_F, 3), 41: (_F, 8), 42: (_F, 15), 43: (_F, 40)})
    s.update({44: (_LL, 25), 45: (_LL, 76), 46: (_LLL, 999), 47: (_LLL, 999), 48: (_LLL, 999)})
    s.update({49: (_F, 3), 50: (_F, 3), 51: (_F, 3), 52: (_F, 16), 53: (_F, 16), 54: (_LLL, 240), 55: (_LLL, 510)})
    s.update({n: (_LLL, 999) for n in range(56, 64)})
    s.update({64: (_F, 16), 65: (_F, 16), 66: (_F, 1), 67: (_F, 2), 68: (_F, 3), 69: (_F, 3), 70: (_F, 3)})
    s.update({71: (_F, 4), 72: (_F, 4), 73: (_F, 6)})
    s.update({n: (_F, 10) for n in range(74, 82)})
    s.update({n: (_F, 12) for n in range(82, 86)})
    s.update({n: (_F, 16) for n in range(86, 90)})
    s.update({90: (_F, 42), 91: (_F, 1), 92: (_F, 2), 93: (_F, 5), 94: (_F, 7), 95: (_F, 42), 96: (_F, 16)})
    s.update({97: (_F, 17), 98: (_F, 25), 99: (_LL, 11), 100: (_LL, 11), 101: (_LL, 17), 102: (_LL, 28)})
    s.update({103: (_LL, 28), 104: (_LLL, 100)})
    s.update({n: (_LLL, 999) for n in range(105, 128)})
    s[128] = (_F, 16)
    return s


FIELDS = _spec()
#: What is kept, by field number (attribute name)
KEPT = {
    3: "processing_code", 4: "amount", 7: "transmission_time", 11: "stan", 12: "local_time",
    13: "local_date", 32: "acquirer_id", 37: "rrn", 38: "auth_id", 39: "response_code",
    41: "terminal_id", 42: "merchant_id", 49: "currency", 90: "original_data",
}
#: Fields whose value must never reach storage (tests assert they do not)
NEVER_STORED = frozenset({2, 14, 34, 35, 36, 45, 52, 53, 55, 102, 103})
_APPROVED = frozenset({"00", "08", "10", "11", "16"})
_MAX_MESSAGE = 9999
_MAX_OPEN = 65536


def parse_message(msg: bytes) -> dict[str, str]:
    """MTI and kept fields of one message body (no length prefix). ValueError when malformed."""
    if len(msg) < 4 + 8 or not msg[:4].isdigit():
        raise ValueError("no MTI")
    out = {"mti": msg[:4].decode()}
    pos = 4
    bitmap, pos = _bitmap(msg, pos)
    if bitmap >> 63 & 1:  # field 1: a secondary bitmap follows
        second, pos = _bitmap(msg, pos)
        bitmap = (bitmap << 64) | second
        nbits = 128
    else:
        nbits = 64
    for n in range(2, nbits + 1):
        if not bitmap >> (nbits - n) & 1:
            continue
        len_type, max_len = FIELDS[n]
        if len_type:
            digits = msg[pos : pos + len_type]
            if len(digits) != len_type or not digits.isdigit():
                raise ValueError(f"field {n}: bad length prefix")
            size = int(digits)
            pos += len_type
            if size > max_len:
                raise ValueError(f"field {n}: {size} > {max_len}")
        else:
            size = max_len
        value = msg[pos : pos + size]
        if len(value) != size:
            raise ValueError(f"field {n}: truncated")
        pos += size
        if n in KEPT:
            out[KEPT[n]] = safe_text(value.decode("latin-1").strip(), 64)
    if pos != len(msg):
        raise ValueError(f"{len(msg) - pos} bytes after the last field")
    return out


def _bitmap(msg: bytes, pos: int) -> tuple[int, int]:
    hex_text = msg[pos : pos + 16]
    try:
        if len(hex_text) == 16 and all(c in b"0123456789abcdefABCDEF" for c in hex_text):
            return int(hex_text, 16), pos + 16
    except ValueError:
        pass
    raw = msg[pos : pos + 8]
    if len(raw) != 8:
        raise ValueError("truncated bitmap")
    return int.from_bytes(raw, "big"), pos + 8


@dataclass(slots=True)
class _Side:
    buf: bytearray = field(default_factory=bytearray)
    first_ts: int = 0
    dead: bool = False


class Iso8583Decoder:
    """One connection carrying length-prefixed ISO 8583 messages (both directions)."""

    protocol = "iso8583"

    def __init__(self, framing: str = "auto") -> None:
        if framing not in ("auto", "binary2", "ascii4"):
            raise ValueError(f"ISO 8583 framing must be auto, binary2 or ascii4, not {framing!r}")
        self.framing = framing
        self.stats = DecodeStats()
        self._sides = (_Side(), _Side())
        self._open: dict[tuple[str, str, str], tuple[int, dict[str, str]]] = {}

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        self.stats.bytes += len(data)
        side = self._sides[direction]
        if side.dead:
            return []
        if not side.buf:
            side.first_ts = ts_ns
        side.buf += data
        out: list[Exchange] = []
        buf = side.buf
        while len(buf) >= 4:
            if self.framing == "auto":
                self.framing = "ascii4" if bytes(buf[:4]).isdigit() else "binary2"
            if self.framing == "ascii4":
                if not bytes(buf[:4]).isdigit():
                    size = -1
                else:
                    size, head = int(buf[:4]), 4
            else:
                size, head = int.from_bytes(buf[:2], "big"), 2
            if size <= 0 or size > _MAX_MESSAGE:
                self.stats.abandoned += 1
                side.dead = True
                buf.clear()
                break
            if len(buf) < head + size:
                break
            body = bytes(buf[head : head + size])
            del buf[: head + size]
            first_ts, side.first_ts = side.first_ts, ts_ns
            try:
                msg = parse_message(body)
            except (ValueError, KeyError):
                self.stats.malformed += 1
                continue
            self.stats.messages += 1
            self._pair(msg, first_ts, ts_ns, out)
        return out

    def close(self, ts_ns: int) -> list[Exchange]:
        self.stats.unanswered += len(self._open)
        self._open.clear()
        return []

    def _pair(self, msg: dict[str, str], first_ts: int, ts: int, out: list[Exchange]) -> None:
        mti = msg["mti"]
        function = int(mti[2])
        stan = msg.get("stan", "")
        term = msg.get("terminal_id", "")
        if function % 2 == 0:
            self._open[(mti, stan, term)] = (first_ts, msg)
            if len(self._open) > _MAX_OPEN:
                del self._open[next(iter(self._open))]
                self.stats.unanswered += 1
            return
        req_mti = mti[:2] + str(function - 1) + mti[3]
        req = self._open.pop((req_mti, stan, term), None)
        if req is None:
            self.stats.unmatched += 1
            return
        start, req_msg = req
        attrs: dict[str, str | int] = {f"iso8583.{k}": v for k, v in req_msg.items()}
        attrs["iso8583.response_mti"] = mti
        for k, v in msg.items():
            if k not in ("mti",):
                attrs.setdefault(f"iso8583.{k}", v)
        rc = msg.get("response_code", "")
        attrs["iso8583.response_code"] = rc
        self.stats.exchanges += 1
        out.append(Exchange("iso8583", f"ISO8583 {req_mti}", start, ts, bool(rc) and rc not in _APPROVED, attrs))
