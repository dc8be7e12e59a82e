"""HTTP/1.1 decoder: method, path template, status, latency, and business-key candidates.

Kept: method, a path *template* (``/payments/98721`` becomes ``/payments/{id}``, the raw path is
kept masked under ``http.target`` because a payment id in the URL is often the business key),
status, content type, Host, and from a JSON or form body the top-level scalar fields whose name
says they are an identifier (``payment_id``, ``orderRef``, ``uetr``...), masked. The query string
and every other header (cookies, authorization) are never kept. An XML body is handed to the
ISO 20022 decoder so a pacs.008 POSTed over HTTP still yields its UETR.

Framing follows RFC 9112: Content-Length, chunked transfer coding, bodies that end with the
connection (responses without either), and no body for HEAD, 1xx, 204 and 304. Requests are
paired with responses first in, first out (pipelining). A response that arrives while more than
one request is open is marked ``latency_excluded``: its time includes queueing behind another.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from kprobe.masking import is_sensitive_key

from .base import DecodeStats, Direction, Exchange, safe_text
from .iso20022 import parse_document

__all__ = ["HttpDecoder", "path_template", "METHODS"]

METHODS = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH".split()
)
_MAX_HEAD = 64 * 1024  # request line + headers
_BODY_KEEP = 64 * 1024  # body bytes looked at for keys (the rest is skipped, not buffered)
_ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{12,}|(?=[^/]*\d)[A-Za-z0-9_.:-]{6,})$"
)
_KEY_WORDS = frozenset({"id", "ref", "reference", "uetr", "key"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _is_key_name(name: str) -> bool:
    """``payment_id``, ``orderRef``, ``UETR`` yes; ``paid``, ``api_key``, ``pan`` no."""
    if is_sensitive_key(name):
        return False
    words = _WORD.findall(name)
    return bool(words) and words[-1].lower() in _KEY_WORDS and not (len(words) > 1 and words[-1].lower() == "key")


def path_template(path: str) -> str:
    """``/payments/98721/status`` -> ``/payments/{id}/status``: ids out, so spans group by route."""
    segs = path.split("/")
    return "/".join("{id}" if s and _ID_SEGMENT.match(s) else s for s in segs)


@dataclass(slots=True)
class _Head:
    first_ts: int
    start_line: str
    headers: dict[str, str]


@dataclass(slots=True)
class _Side:
    """Parser state of one direction."""

    buf: bytearray = field(default_factory=bytearray)
    head: _Head | None = None
    remaining: int = 0  # body bytes still expected (Content-Length mode)
    chunked: bool = False
    chunk_left: int = -1  # -1: expecting a chunk-size line
    in_trailer: bool = False
    until_close: bool = False
    body: bytearray = field(default_factory=bytearray)
    dead: bool = False


class HttpDecoder:
    """One HTTP/1.1 connection (both directions)."""

    protocol = "http"

    def __init__(self) -> None:
        self.stats = DecodeStats()
        self._sides = (_Side(), _Side())
        self._open: deque[tuple[int, int, str, dict[str, str | int]]] = deque()  # requests

    # -- public ---------------------------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Exchange]:
        self.stats.bytes += len(data)
        side = self._sides[direction]
        if side.dead:
            return []
        side.buf += data
        out: list[Exchange] = []
        while True:
            try:
                done = self._step(direction, side, ts_ns, out)
            except (ValueError, UnicodeDecodeError):
                self.stats.malformed += 1
                self._resync(side)
                done = False
            if not done:
                return out

    def close(self, ts_ns: int) -> list[Exchange]:
        out: list[Exchange] = []
        side = self._sides[Direction.TO_CLIENT]
        if side.head is not None and side.until_close and not side.dead:
            self._finish(Direction.TO_CLIENT, side, ts_ns, out)
        self.stats.unanswered += len(self._open)
        self._open.clear()
        return out

    # -- parsing ---------------------------------------------------------------------------
    def _step(self, direction: Direction, side: _Side, ts: int, out: list[Exchange]) -> bool:
        """Advance one state; True when more may be parsed from the buffer."""
        buf = side.buf
        if side.head is None:
            if not buf:
                return False
            while buf[:2] == b"\r\n":  # stray CRLF between messages is allowed (RFC 9112 2.2)
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD or (len(buf) >= 8 and not self._plausible_start(direction, buf)):
                    raise ValueError("not an HTTP message head")
                return False
            raw = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            lines = raw.split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip():
                    raise ValueError("bad header line")
                headers[name.lower()] = value.strip()
            start = lines[0]
            self._check_start(direction, start)
            side.head = _Head(ts, start, headers)
            side.body.clear()
            self._frame_body(direction, side)
            return True
        if side.chunked:
            return self._step_chunked(direction, side, ts, out)
        if side.until_close:
            self._take_body(side, len(buf))
            return False
        take = min(side.remaining, len(buf))
        self._take_body(side, take)
        side.remaining -= take
        if side.remaining == 0:
            self._finish(direction, side, ts, out)
            return True
        return False

    def _step_chunked(self, direction: Direction, side: _Side, ts: int, out: list[Exchange]) -> bool:
        buf = side.buf
        if side.in_trailer:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("trailer too long")
                return False
            del buf[: end + 2]
            if end == 0:
                side.in_trailer = False
                self._finish(direction, side, ts, out)
            return True
        if side.chunk_left < 0:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 1024:
                    raise ValueError("chunk size line too long")
                return False
            size_txt = bytes(buf[:end]).split(b";", 1)[0].strip()
            del buf[: end + 2]
            size = int(size_txt, 16)  # ValueError on garbage
            if size < 0:
                raise ValueError("negative chunk")
            if size == 0:
                side.in_trailer = True
                return True
            side.chunk_left = size
            return True
        if side.chunk_left > 0:
            take = min(side.chunk_left, len(buf))
            self._take_body(side, take)
            side.chunk_left -= take
            if side.chunk_left > 0:
                return False
        if len(buf) < 2:
            return False
        if buf[:2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        del buf[:2]
        side.chunk_left = -1
        return True

    def _take_body(self, side: _Side, n: int) -> None:
        room = _BODY_KEEP - len(side.body)
        if room > 0:
            side.body += side.buf[: min(n, room)]
        del side.buf[:n]

    def _plausible_start(self, direction: Direction, buf: bytearray) -> bool:
        if direction == Direction.TO_CLIENT:
            return buf.startswith(b"HTTP/")
        word = bytes(buf[:8]).split(b" ", 1)[0]
        return word in METHODS or (len(word) == len(buf[:8]) and any(m.startswith(word) for m in METHODS))

    def _check_start(self, direction: Direction, start: str) -> None:
        parts = start.split(" ", 2)
        if direction == Direction.TO_SERVER:
            if len(parts) != 3 or parts[0].encode() not in METHODS or not parts[2].startswith("HTTP/1."):
                raise ValueError("bad request line")
        else:
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
                raise ValueError("bad status line")

    def _frame_body(self, direction: Direction, side: _Side) -> None:
        head = side.head
        assert head is not None
        h = head.headers
        side.chunked = side.until_close = False
        side.remaining = 0
        side.chunk_left = -1
        if direction == Direction.TO_CLIENT:
            status = int(head.start_line.split(" ", 2)[1])
            req_method = str(self._open[0][2]) if self._open else ""
            if status < 200 or status in (204, 304) or req_method == "HEAD":
                return
        if "chunked" in h.get("transfer-encoding", "").lower():
            side.chunked = True
        elif "content-length" in h:
            n = int(h["content-length"])
            if n < 0:
                raise ValueError("negative content-length")
            side.remaining = n
        elif direction == Direction.TO_CLIENT:
            side.until_close = True

    def _finish(self, direction: Direction, side: _Side, ts: int, out: list[Exchange]) -> None:
        head = side.head
        assert head is not None
        side.head = None
        self.stats.messages += 1
        if direction == Direction.TO_SERVER:
            method, target, _ = head.start_line.split(" ", 2)
            path = target.split("?", 1)[0]
            attrs: dict[str, str | int] = {
                "http.method": method,
                "http.route": safe_text(path_template(path)),
                "http.target": safe_text(path),
            }
            if "host" in head.headers:
                attrs["http.host"] = safe_text(head.headers["host"], 256)
            attrs.update(_body_keys(head.headers.get("content-type", ""), bytes(side.body)))
            self._open.append((head.first_ts, ts, method, attrs))
            return
        status = int(head.start_line.split(" ", 2)[1])
        if status < 200:
            return  # 1xx interim: the final response follows
        if not self._open:
            self.stats.unmatched += 1
            return
        queued = len(self._open) > 1
        start, _req_end, method, attrs = self._open.popleft()
        attrs = dict(attrs)
        attrs["http.status_code"] = status
        ctype = head.headers.get("content-type", "")
        if ctype:
            attrs["http.response_content_type"] = safe_text(ctype, 128)
        for k, v in _body_keys(ctype, bytes(side.body)).items():
            attrs.setdefault(k.replace("body.", "response.", 1), v)
        self.stats.exchanges += 1
        out.append(Exchange(
            protocol="http",
            name=f"{method} {attrs['http.route']}",
            start_ns=start,
            end_ns=ts,
            error=status >= 500,
            attributes=attrs,
            latency_excluded=queued,
        ))

    def _resync(self, side: _Side) -> None:
        """After garbage: drop the partial message; look for the next plausible start line."""
        side.head = None
        side.chunked = side.until_close = side.in_trailer = False
        side.chunk_left = -1
        side.remaining = 0
        buf = side.buf
        for marker in (b"\r\nHTTP/1.", *(b"\r\n" + m + b" " for m in METHODS)):
            i = buf.find(marker)
            if i >= 0:
                del buf[: i + 2]
                return
        side.buf.clear()


def _body_keys(content_type: str, body: bytes) -> dict[str, str | int]:
    """Identifier-like top-level fields of a JSON/form body, or an ISO 20022 document's keys."""
    if not body:
        return {}
    ct = content_type.lower()
    out: dict[str, str | int] = {}
    try:
        if "json" in ct:
            doc = json.loads(body)
            if isinstance(doc, dict):
                for k, v in list(doc.items())[:64]:
                    if isinstance(k, str) and _is_key_name(k) and isinstance(v, str | int) and not isinstance(v, bool):
                        out[f"body.{safe_text(k, 64)}"] = safe_text(str(v), 128)
        elif "x-www-form-urlencoded" in ct:
            for k, v in parse_qsl(body.decode("latin-1"))[:64]:
                if _is_key_name(k):
                    out[f"body.{safe_text(k, 64)}"] = safe_text(v, 128)
        elif "xml" in ct:
            msg = parse_document(body)
            if msg is not None:
                out.update({f"iso20022.{k}": v for k, v in msg.items()})
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return out
