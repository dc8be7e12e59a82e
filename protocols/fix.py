"""FIX decoder: FIX 4.2, 4.4 and FIXT 1.1 (FIX 5.0 application messages) over one TCP session.

Framing is the standard's own: ``8=BeginString|9=BodyLength|`` then exactly BodyLength bytes,
then ``10=CheckSum|`` (three digits, the byte sum modulo 256 of everything before it). A message
whose length or checksum does not hold is counted malformed and the decoder re-synchronises on
the next ``8=FIX``; nothing is guessed.

Kept per message: MsgType, sender/target CompIDs, MsgSeqNum, SendingTime, PossDupFlag, and for
orders ClOrdID, OrigClOrdID, OrderID, ExecType, OrdStatus, Symbol, Side, OrderQty, the reject
reasons and (masked) Text. Account (1), and every party or allocation field, are not kept.

Exchanges (the span each becomes is named by the request):

* NewOrderSingle (D) -> the first ExecutionReport (8) for its ClOrdID: the order-to-ack time;
  an ExecType of Rejected (8) makes it an error;
* OrderCancelRequest (F) / OrderCancelReplaceRequest (G) -> ExecutionReport Canceled (4) /
  Replaced (5), or OrderCancelReject (9, an error): cancel-to-ack and replace-to-ack;
* Logon (A) -> Logon, TestRequest (1) -> Heartbeat (0) with its TestReqID;
* a session Reject (3) or BusinessMessageReject (j) closes the request whose MsgSeqNum it names
  (RefSeqNum), as an error;
* every later ExecutionReport of an order (partial fill, fill, done, expired...) is a
  zero-length lifecycle exchange named ``ExecutionReport <ExecType>`` carrying the order's
  ids, so ``kprobe timeline --order`` has the whole lifecycle.

PossDup (43=Y) or PossResend (97=Y) copies are resends of messages already timed: they are kept
but marked ``latency_excluded`` so order-to-ack statistics are not polluted by replays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .base import MAX_BUFFER, DecodeStats, Direction, Exchange, safe_text

__all__ = ["FixDecoder", "parse_fields", "checksum", "MSG_NAMES", "EXEC_TYPES"]

SOH = b"\x01"
_HEAD = re.compile(rb"8=(FIX\.4\.[0-4]|FIXT\.1\.1)\x019=(\d{1,7})\x01")

MSG_NAMES = {
    "0": "Heartbeat", "1": "TestRequest", "2": "ResendRequest", "3": "Reject", "4": "SequenceReset",
    "5": "Logout", "A": "Logon", "D": "NewOrderSingle", "F": "OrderCancelRequest",
    "G": "OrderCancelReplaceRequest", "8": "ExecutionReport", "9": "OrderCancelReject",
    "j": "BusinessMessageReject",
}
EXEC_TYPES = {
    "0": "New", "1": "PartialFill", "2": "Fill", "3": "DoneForDay", "4": "Canceled", "5": "Replaced",
    "6": "PendingCancel", "7": "Stopped", "8": "Rejected", "9": "Suspended", "A": "PendingNew",
    "B": "Calculated", "C": "Expired", "D": "Restated", "E": "PendingReplace", "F": "Trade",
    "G": "TradeCorrect", "H": "TradeCancel", "I": "OrderStatus",
}
#: tag -> attribute name of what is kept (everything else is dropped at decode)
KEPT = {
    35: "msg_type", 49: "sender", 56: "target", 34: "seq", 52: "sending_time", 43: "poss_dup",
    97: "poss_resend", 11: "cl_ord_id", 41: "orig_cl_ord_id", 37: "order_id", 150: "exec_type",
    39: "ord_status", 55: "symbol", 54: "side", 38: "order_qty", 45: "ref_seq", 372: "ref_msg_type",
    373: "session_reject_reason", 102: "cxl_rej_reason", 434: "cxl_rej_response_to", 112: "test_req_id",
    380: "business_reject_reason", 1128: "appl_ver_id", 58: "text",
}
_ACK_EXEC = {"D": {"0", "A", "8", "1", "2", "F"}, "F": {"4", "6", "8"}, "G": {"5", "E", "8"}}
_MAX_OPEN = 65536


def checksum(data: bytes) -> int:
    """FIX CheckSum: the sum of the bytes modulo 256."""
    return sum(data) % 256


def parse_fields(body: bytes) -> dict[int, bytes]:
    """``tag=value|`` pairs of a framed message (later repeats of a tag do not overwrite)."""
    out: dict[int, bytes] = {}
    for part in body.split(SOH):
        if not part:
            continue
        tag, sep, value = part.partition(b"=")
        if not sep or not tag.isdigit():
            raise ValueError(f"bad field {part[:20]!r}")
        out.setdefault(int(tag), value)
    return out


@dataclass(slots=True)
class _Side:
    buf: bytearray = field(default_factory=bytearray)
    first_ts: int = 0


@dataclass(slots=True)
class _Open:
    direction: Direction
    start: int
    kind: str
    attrs: dict[str, str | int]
    excluded: bool


class FixDecoder:
    """One FIX session (both directions of its TCP connection)."""

    protocol = "fix"

    def __init__(self) -> None:
        self.stats = DecodeStats()
        self._sides = (_Side(), _Side())
        self._by_clordid: dict[str, _Open] = {}
        self._by_seq: dict[tuple[int, int], _Open] = {}  # (direction, MsgSeqNum) -> open request
        self._test_reqs: dict[str, _Open] = {}
        self._logon: list[_Open | None] = [None, None]
        self._orders: dict[str, tuple[int, dict[str, str | int]]] = {}  # acked ClOrdID -> (start, ids)

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        self.stats.bytes += len(data)
        side = self._sides[direction]
        if not side.buf:
            side.first_ts = ts_ns
        side.buf += data
        out: list[Exchange] = []
        while True:
            msg = self._next(side)
            if msg is None:
                break
            first_ts = side.first_ts
            side.first_ts = ts_ns
            try:
                fields = parse_fields(msg)
            except ValueError:
                self.stats.malformed += 1
                continue
            self.stats.messages += 1
            self._on_message(direction, fields, first_ts, ts_ns, out)
        if len(side.buf) > MAX_BUFFER:
            self.stats.oversized += 1
            side.buf.clear()
        if not side.buf:
            side.first_ts = ts_ns
        return out

    def close(self, ts_ns: int) -> list[Exchange]:
        pending = {id(o) for o in self._by_clordid.values()} | {id(o) for o in self._test_reqs.values()}
        self.stats.unanswered += len(pending) + sum(o is not None for o in self._logon)
        self._by_clordid.clear()
        self._by_seq.clear()
        self._test_reqs.clear()
        return []

    # -- framing ---------------------------------------------------------------------------
    def _next(self, side: _Side) -> bytes | None:
        """The next whole, verified message (its fields, from 8= up to and including 10=nnn|)."""
        buf = side.buf
        while buf:
            m = _HEAD.match(buf)
            if m is None:
                n = min(5, len(buf))
                if len(buf) < 26 and buf.count(SOH) < 2 and bytes(buf[:n]) == b"8=FIX"[:n]:
                    return None  # a head still arriving
                self._resync(buf)
                continue
            body_len = int(m.group(2))
            end = m.end() + body_len
            total = end + 7  # "10=" + 3 digits + SOH
            if total > MAX_BUFFER:
                self.stats.oversized += 1
                self._resync(buf)
                continue
            if len(buf) < total:
                return None
            trailer = bytes(buf[end:total])
            if not (trailer.startswith(b"10=") and trailer[3:6].isdigit() and trailer.endswith(SOH)) or int(
                trailer[3:6]
            ) != checksum(buf[:end]) or (body_len and buf[end - 1 : end] != SOH):
                self._resync(buf)
                continue
            msg = bytes(buf[:end])
            del buf[:total]
            return msg
        return None

    def _resync(self, buf: bytearray) -> None:
        self.stats.malformed += 1
        i = buf.find(b"\x018=FIX", 1)
        if i < 0:
            j = buf.find(b"8=FIX", 1)
            del buf[: j if j > 0 else len(buf)]
        else:
            del buf[: i + 1]

    # -- pairing ---------------------------------------------------------------------------
    def _on_message(self, direction: Direction, f: dict[int, bytes], first_ts: int, ts: int,
                    out: list[Exchange]) -> None:
        attrs: dict[str, str | int] = {}
        for tag, name in KEPT.items():
            if tag in f:
                value = f[tag].decode("latin-1")
                attrs[f"fix.{name}"] = safe_text(value, 256) if tag == 58 else value
        attrs["fix.begin_string"] = f[8].decode("latin-1")
        kind = str(attrs.get("fix.msg_type", ""))
        resend = attrs.get("fix.poss_dup") == "Y" or attrs.get("fix.poss_resend") == "Y"
        seq = int(f[34]) if f.get(34, b"").isdigit() else -1
        opp = Direction(1 - direction)

        def open_request() -> _Open:
            o = _Open(direction, first_ts, kind, attrs, resend)
            if seq >= 0:
                self._by_seq[(direction, seq)] = o
            return o

        def close(o: _Open, name_suffix: str, error: bool) -> None:
            for key in [k for k, v in self._by_seq.items() if v is o]:
                del self._by_seq[key]
            merged = dict(o.attrs)
            for k, v in attrs.items():
                merged.setdefault(k.replace("fix.", "fix.response.", 1), v)
                if k in ("fix.order_id", "fix.exec_type", "fix.ord_status"):
                    merged[k] = v
            merged["fix.response.msg_type"] = kind
            self.stats.exchanges += 1
            out.append(Exchange("fix", MSG_NAMES.get(o.kind, o.kind) + name_suffix, o.start, ts, error, merged,
                                latency_excluded=o.excluded or resend))

        if kind in ("D", "F", "G"):
            cl = str(attrs.get("fix.cl_ord_id", ""))
            if not cl:
                self.stats.malformed += 1
                return
            if resend and cl in self._by_clordid:
                return  # the original is still open: its time stands
            self._by_clordid[cl] = open_request()
            if len(self._by_clordid) > _MAX_OPEN:
                del self._by_clordid[next(iter(self._by_clordid))]
                self.stats.unanswered += 1
        elif kind in ("8", "9"):
            cl = str(attrs.get("fix.cl_ord_id", ""))
            o = self._by_clordid.get(cl)
            if o is not None and o.direction == opp:
                exec_type = str(attrs.get("fix.exec_type", ""))
                if kind == "9" or exec_type in _ACK_EXEC.get(o.kind, set()):
                    del self._by_clordid[cl]
                    error = kind == "9" or exec_type == "8"
                    close(o, "", error)
                    if o.kind in ("D", "G") and not error:
                        self._orders[cl] = (o.start, _order_ids(o.attrs, attrs))
                        if len(self._orders) > _MAX_OPEN:
                            del self._orders[next(iter(self._orders))]
                    if kind == "8" and exec_type not in ("0", "A", "4", "5", "6", "E"):
                        self._lifecycle(cl, attrs, ts, out)  # an immediate fill is also a fill
                    return
            if kind == "8" and (cl in self._orders or str(attrs.get("fix.orig_cl_ord_id", "")) in self._orders):
                self._lifecycle(cl, attrs, ts, out)
                return
            self.stats.unmatched += 1
        elif kind == "A":
            pending = self._logon[opp]
            if pending is not None:
                self._logon[opp] = None
                close(pending, "", False)
            else:
                self._logon[direction] = open_request()
        elif kind == "1":
            tid = str(attrs.get("fix.test_req_id", ""))
            self._test_reqs[tid] = open_request()
        elif kind == "0" and "fix.test_req_id" in attrs:
            o = self._test_reqs.pop(str(attrs["fix.test_req_id"]), None)
            if o is not None and o.direction == opp:
                close(o, "", False)
        elif kind in ("3", "j"):
            ref = attrs.get("fix.ref_seq")
            o = self._by_seq.get((opp, int(ref))) if isinstance(ref, str) and ref.isdigit() else None
            if o is None:
                self.stats.unmatched += 1
                return
            for table in (self._by_clordid, self._test_reqs):
                for key in [k for k, v in table.items() if v is o]:
                    del table[key]
            close(o, " rejected", True)

    def _lifecycle(self, cl: str, attrs: dict[str, str | int], ts: int, out: list[Exchange]) -> None:
        key = cl if cl in self._orders else str(attrs.get("fix.orig_cl_ord_id", ""))
        start, ids = self._orders.get(key, (ts, {}))
        merged = {**ids, **attrs, "fix.order_start_ns": start}
        exec_type = str(attrs.get("fix.exec_type", ""))
        name = f"ExecutionReport {EXEC_TYPES.get(exec_type, exec_type)}"
        if str(attrs.get("fix.ord_status", "")) in ("2", "4", "C", "8"):
            self._orders.pop(key, None)  # filled, canceled, expired, rejected: the order is done
        out.append(Exchange("fix", name, ts, ts, exec_type == "8", merged, latency_excluded=True))


def _order_ids(req: dict[str, str | int], resp: dict[str, str | int]) -> dict[str, str | int]:
    keep = ("fix.cl_ord_id", "fix.orig_cl_ord_id", "fix.symbol", "fix.side", "fix.sender", "fix.target")
    out = {k: req[k] for k in keep if k in req}
    if "fix.order_id" in resp:
        out["fix.order_id"] = resp["fix.order_id"]
    return out
