"""Protocol decoders: what services say to each other, read from captured socket bytes.

Why a package of its own (installed as ``kprobe.protocols``): each protocol is one module with
one job (frame, decode, pair requests with responses), and the capture path, the tests and the
benchmarks all use them the same way through :func:`new_decoder`. Decoders depend on nothing but
:mod:`kprobe.masking`, so they can be fuzzed and benchmarked without a kernel.

* :mod:`.http1` - HTTP/1.1;
* :mod:`.pgwire` - PostgreSQL frontend/backend protocol (simple and extended query);
* :mod:`.fix` - FIX 4.2 / 4.4 / FIXT 1.1;
* :mod:`.iso8583` - ISO 8583 card messages (length-prefixed);
* :mod:`.iso20022` - ISO 20022 XML (pacs.008, pacs.002, pain.001, pain.002);
* :mod:`.spans` - exchanges as rows of the ``spans`` table (source ``kprobe.decoded``).
"""

from __future__ import annotations

from collections.abc import Callable

from .base import MAX_BUFFER, ConnectionDecoder, DecodeStats, Direction, Exchange
from .fix import FixDecoder
from .http1 import HttpDecoder
from .iso8583 import Iso8583Decoder
from .iso20022 import Iso20022Decoder
from .pgwire import PgDecoder

__all__ = [
    "DECODERS",
    "MAX_BUFFER",
    "ConnectionDecoder",
    "DecodeStats",
    "Direction",
    "Exchange",
    "new_decoder",
    "sniff",
]

#: protocol name -> factory of a fresh per-connection decoder
DECODERS: dict[str, Callable[[], ConnectionDecoder]] = {
    "http": HttpDecoder,
    "postgresql": PgDecoder,
    "fix": FixDecoder,
    "iso8583": Iso8583Decoder,
    "iso20022": Iso20022Decoder,
}


def new_decoder(protocol: str) -> ConnectionDecoder:
    """A decoder for one connection; ValueError naming the known protocols otherwise."""
    try:
        return DECODERS[protocol]()
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(sorted(DECODERS))}") from None


_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ")


def sniff(first_client_bytes: bytes) -> str | None:
    """Guess the protocol from the first bytes the client sent, or None (then a port map decides).

    Only unambiguous openings are recognised: an HTTP method, ``8=FIX``, an XML declaration or
    ISO 20022 Document, a PostgreSQL startup/SSL request. ISO 8583 has no marker of its own and
    is configured by port in the domain map.
    """
    b = first_client_bytes
    if b.startswith(_HTTP_METHODS):
        return "http"
    if b.startswith(b"8=FIX"):
        return "fix"
    if b.lstrip().startswith((b"<?xml", b"<Document", b"<AppHdr", b"<BizMsg")):
        return "iso20022"
    if len(b) >= 8 and b[4:8] in (b"\x00\x03\x00\x00", b"\x04\xd2\x16\x2f", b"\x04\xd2\x16\x30"):
        return "postgresql"
    return None
