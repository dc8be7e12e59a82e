"""ISO 20022 decoder: pacs.008 (FI to FI customer credit transfer), pacs.002 (payment status
report), pain.001 (customer credit transfer initiation) and pain.002.

Kept: message type and version (from the Document namespace), MsgId, and of the first
transaction its UETR, EndToEndId, TxId, amount with currency, settlement (value) date and, for
status reports, the status (TxSts/GrpSts), reason code and the original ids; NbOfTxs says how many
transactions the message carried. Names, addresses, account numbers and remittance text are never
kept: the keys a payment is followed by are the UETR and the EndToEndId.

Framing on a raw stream: one XML document after another (an optional ``<?xml?>`` declaration, an
optional business application header ``AppHdr`` in an envelope, then ``Document``), ended by the
closing tag of the outermost element. Documents with a DOCTYPE are refused and counted
(entity expansion is an attack surface, and ISO 20022 messages never declare one).

Pairing: a pacs.008 or pain.001 sent by one side is answered by a pacs.002 or pain.002 naming
its UETR, EndToEndId or MsgId as original; the exchange's latency is request first byte to
status report last byte, and a rejected status (``RJCT``) marks it an error.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .base import MAX_BUFFER, DecodeStats, Direction, Exchange, safe_text

__all__ = ["Iso20022Decoder", "parse_document"]

_NS = re.compile(r"urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.\d{3})\.(\d{3}\.\d{2})")
_ROOT_OPEN = re.compile(rb"<(?![?!/])([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s>/]")
REQUESTS = frozenset({"pacs.008", "pain.001", "pacs.009", "pacs.004"})
REPORTS = frozenset({"pacs.002", "pain.002"})
_REJECTED = frozenset({"RJCT"})
_MAX_OPEN = 4096


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(el: ET.Element, *path: str) -> ET.Element | None:
    """First descendant following ``path`` by local names, namespace-agnostic."""
    cur: ET.Element | None = el
    for name in path:
        if cur is None:
            return None
        nxt = None
        for child in cur.iter():
            if child is not cur and _local(child.tag) == name:
                nxt = child
                break
        cur = nxt
    return cur


def _first(el: ET.Element, *names: str) -> ET.Element | None:
    """The first of ``names`` found (an Element with no children is falsy, so no ``or``)."""
    for name in names:
        found = _find(el, name)
        if found is not None:
            return found
    return None


def _text(el: ET.Element, *path: str) -> str | None:
    found = _find(el, *path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def parse_document(data: bytes) -> dict[str, str | int] | None:
    """Keys of one ISO 20022 document; None when it is not one (raises ValueError when malformed)."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError("DOCTYPE in an ISO 20022 message")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError, UnicodeError) as exc:  # LookupError: an unknown encoding= declaration
        raise ValueError(f"not well-formed XML: {exc}") from exc
    doc = root if _local(root.tag) == "Document" else _find(root, "Document")
    if doc is None:
        return None
    m = _NS.search(doc.tag)
    if m is None:
        return None
    kind, version = m.group(1), m.group(2)
    out: dict[str, str | int] = {"type": kind, "version": version}

    def put(key: str, value: str | None) -> None:
        if value:
            out[key] = safe_text(value, 140)

    put("msg_id", _text(doc, "GrpHdr", "MsgId"))
    put("nb_of_txs", _text(doc, "GrpHdr", "NbOfTxs"))
    if kind in REPORTS:
        tx = _first(doc, "TxInfAndSts", "OrgnlPmtInfAndSts")
        grp = _find(doc, "OrgnlGrpInfAndSts")
        put("orgnl_msg_id", _text(grp, "OrgnlMsgId") if grp is not None else None)
        status = None
        if tx is not None:
            put("orgnl_end_to_end_id", _text(tx, "OrgnlEndToEndId"))
            put("orgnl_uetr", _text(tx, "OrgnlUETR"))
            put("orgnl_tx_id", _text(tx, "OrgnlTxId"))
            status = _text(tx, "TxSts") or _text(tx, "PmtInfSts")
            put("reason", _text(tx, "StsRsnInf", "Rsn", "Cd"))
        if status is None and grp is not None:
            status = _text(grp, "GrpSts")
            put("reason", _text(grp, "StsRsnInf", "Rsn", "Cd"))
        put("status", status)
        return out
    tx = _first(doc, "CdtTrfTxInf", "TxInf")
    if tx is not None:
        put("end_to_end_id", _text(tx, "PmtId", "EndToEndId"))
        put("uetr", _text(tx, "PmtId", "UETR"))
        put("tx_id", _text(tx, "PmtId", "TxId"))
        put("instr_id", _text(tx, "PmtId", "InstrId"))
        amt = _first(tx, "IntrBkSttlmAmt", "InstdAmt")
        if amt is not None and amt.text:
            put("amount", amt.text.strip())
            put("currency", amt.get("Ccy"))
    put("settlement_date", _text(doc, "GrpHdr", "IntrBkSttlmDt") or _text(doc, "IntrBkSttlmDt")
        or _text(doc, "ReqdExctnDt", "Dt") or _text(doc, "ReqdExctnDt"))
    return out


@dataclass(slots=True)
class _Side:
    buf: bytearray = field(default_factory=bytearray)
    first_ts: int = 0


class Iso20022Decoder:
    """One connection carrying ISO 20022 XML documents back to back (both directions)."""

    protocol = "iso20022"

    def __init__(self) -> None:
        self.stats = DecodeStats()
        self._sides = (_Side(), _Side())
        self._open: dict[str, tuple[int, dict[str, str | int]]] = {}  # any request key -> request

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        self.stats.bytes += len(data)
        side = self._sides[direction]
        if not side.buf.strip():
            side.first_ts = ts_ns
        side.buf += data
        out: list[Exchange] = []
        while True:
            doc = self._next_document(side)
            if doc is None:
                break
            first_ts = side.first_ts
            side.first_ts = ts_ns
            try:
                msg = parse_document(doc)
            except (ValueError, RecursionError):
                self.stats.malformed += 1
                continue
            if msg is None:
                self.stats.malformed += 1
                continue
            self.stats.messages += 1
            self._pair(msg, first_ts, ts_ns, out)
        if len(side.buf) > MAX_BUFFER:
            self.stats.oversized += 1
            side.buf.clear()
        return out

    def close(self, ts_ns: int) -> list[Exchange]:
        self.stats.unanswered += len({id(v) for v in self._open.values()})
        self._open.clear()
        return []

    def _next_document(self, side: _Side) -> bytes | None:
        buf = side.buf
        start = buf.find(b"<")
        if start < 0:
            if buf.strip():
                self.stats.malformed += 1
            buf.clear()
            return None
        if start and buf[:start].strip():
            self.stats.malformed += 1
        del buf[:start]
        pos = 0
        if buf.startswith(b"<?xml"):
            end = buf.find(b"?>")
            if end < 0:
                return None
            pos = end + 2
        m = _ROOT_OPEN.search(buf, pos)
        if m is None:
            return None
        prefix = m.group(1) or b""
        name = m.group(2)
        close = re.compile(rb"</" + re.escape(prefix + name) + rb"\s*>")
        c = close.search(buf, m.end())
        if c is None:
            return None
        doc = bytes(buf[: c.end()])
        del buf[: c.end()]
        return doc

    def _pair(self, msg: dict[str, str | int], first_ts: int, ts: int, out: list[Exchange]) -> None:
        kind = str(msg["type"])
        if kind in REPORTS:
            req = None
            for key in ("orgnl_uetr", "orgnl_end_to_end_id", "orgnl_msg_id"):
                if key in msg and (req := self._open.get(f"{key[6:]}:{msg[key]}")) is not None:
                    break
            if req is None:
                self.stats.unmatched += 1
                return
            start, attrs = req
            for k in [k for k, v in self._open.items() if v is req]:
                del self._open[k]
            status = str(msg.get("status", ""))
            merged: dict[str, str | int] = {f"iso20022.{k}": v for k, v in attrs.items()}
            merged["iso20022.status"] = status
            if "reason" in msg:
                merged["iso20022.reason"] = msg["reason"]
            merged["iso20022.report_type"] = kind
            self.stats.exchanges += 1
            out.append(Exchange("iso20022", str(attrs["type"]), start, ts, status in _REJECTED, merged))
            return
        if kind in REQUESTS:
            req = (first_ts, msg)
            for key in ("uetr", "end_to_end_id", "msg_id"):
                if key in msg:
                    self._open[f"{key}:{msg[key]}"] = req
            while len(self._open) > _MAX_OPEN:  # a peer that never answers must not grow us
                del self._open[next(iter(self._open))]
                self.stats.unanswered += 1
