"""Find card data in text: PANs (however they are written), track 1/2 data, and values of
sensitive fields written as ``key: value`` in free text (JSON, form bodies, logs, XML).

Why one scanner that only *finds*: the paths that store data need two renderings of the same
findings. Spans and logs want the compact form (``411111******1111``); replay logs and raw
payloads must keep every byte at its offset (``4111 11** **** 1111``). Both are in
:mod:`kprobe.masking.render`; a finding is where, what kind, and which characters are the PAN's
digits.

How a PAN is found (all on ``str``; bytes are scanned as latin-1, one character per byte):

* a *run* is digits joined by separators: ``space . - / _ +``, URL-encoded ``%20 %2D %2E %2F
  %2B %5F``, also encoded twice (``%2520``), up to three in a row (doubled spaces, `` - ``). Its
  *groups* are the digit stretches between separators (UTF-16 payloads are scanned with
  their NUL bytes taken out, see :func:`~.render.find_in_bytes`);
* any window of whole adjacent groups with 13-19 digits that passes :func:`~.cards.is_pan`
  (issuer range + scheme length + Luhn) is a PAN; from each group the longest such window
  wins, so ``4111 1111 1111 1111 1250`` masks the card and keeps the amount;
* inside one long group (a digit run with no separators) a PAN is found only where its shape
  says so: left-padded with zeros (``0004111111111111111``), or behind an ISO 8583 LLVAR length
  prefix (``..16 4111111111111111 000000..``: two digits equal to the PAN length, followed by
  at least :data:`LLVAR_TRAILING` more digits, the processing code that always follows field
  2; or a run that is exactly ``16`` + 16 digits or ``19`` + 19, a field 2 logged on its own;
  not ``17`` + 17, which is what a nanosecond epoch timestamp looks like). Any other window inside a long run is an id, a timestamp or a hex id's digits: masking it
  is what issue 18 reported as false positives.

Track data is dropped whole (PCI DSS 3.3.1): track 2 ``;PAN=YYMM SSS discretionary?`` (also
with ``D`` as separator, as in EMV tag 57, and URL-encoded), track 1
``%BPAN^NAME^YYMM...?``. A ``key = value`` pair whose key :func:`~.keys.is_sensitive_key`
accepts (``"cvv":"123"``, ``pin=1234``, ``Security Code: 123``, ``<CVV2>123</CVV2>``) has its
value dropped.

Every finding spans at most :data:`MAX_SPAN` characters including the context its decision
needs; :class:`~.stream.StreamMasker` relies on that bound to hold back a bounded tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .cards import MAX_PAN, MIN_PAN, is_pan
from .keys import is_sensitive_key

__all__ = ["Finding", "find", "may_need_masking", "MAX_SPAN", "LLVAR_TRAILING"]

PAN, TRACK, SECRET = "pan", "track", "secret"
PRIORITY = {PAN: 0, SECRET: 1, TRACK: 2}

#: Upper bound of a finding's context span (track 1 is 79 characters, a URL-encoded key=value
#: with its quotes well under 200): the streaming masker holds back twice this.
MAX_SPAN = 256
#: Digits that must follow an LLVAR-prefixed PAN inside one run (ISO 8583 field 3 is 6 digits).
LLVAR_TRAILING = 6

_SEP_UNIT = r"(?:[ \t.\-/_+]|(?:%|%25)(?:20|2[BDEFbdef]|5[Ff]))"
_SEP = rf"(?:{_SEP_UNIT}{{1,3}})"
# A run must not start inside a percent-escape (the "20" of "%20", or of "%2520" once more
# encoded) nor inside a JSON/Python \\uXXXX escape (the "2013" of an escaped en dash).
_NOT_IN_ESCAPE = r"(?<!%)(?<!%\d)(?<!%25)(?<!%25\d)" + "".join(rf"(?<!\\u[0-9a-fA-F]{{{k}}})" for k in range(4))
_RUN = re.compile(rf"{_NOT_IN_ESCAPE}\d(?:{_SEP}?\d){{{MIN_PAN - 1},}}")
_TOKEN = re.compile(rf"(\d+)|{_SEP}")

_TRACK2 = re.compile(
    r"(?:;|%3[Bb])?(?<!\d)(?P<pan>\d{12,19})"
    r"(?:(?:=|%3[Dd])[0-9=]{0,40}|D\d{7,36}F?)"
    r"(?:\?|%3[Ff])?"
)
_TRACK1 = re.compile(
    r"(?:%|%25)?[Bb](?P<pan>\d{12,19})(?:\^|%5[Ee])"
    r"(?:(?!\^|%5[Ee])[^\r\n]){0,45}(?:\^|%5[Ee])\d{0,79}(?:\?|%3[Ff])?"
)

_Q = r"(?:\\\"|\"|'|%22|&quot;)"
# What lies between a quote that closes a string and the one opening the next (``", "`` in
# ``{"body": "cvv =", "note": ""}``) is not a quoted value: masking it would break the document.
_NOT_STRING_GAP = r"(?![\s,:;{}\[\]]*(?:\\\"|\"|'))"
_KV = re.compile(
    r"(?:(?<=%22)|(?<![A-Za-z0-9]))(?P<key>[A-Za-z][A-Za-z0-9]{0,31}(?:[ ._\-][A-Za-z0-9]{1,32}){0,3})"
    rf"{_Q}?[ \t]*(?:=>|[:=]|%3[AaDd])[ \t]*"
    rf"(?:\\\"{_NOT_STRING_GAP}(?P<v1>[^\"\\]{{1,96}})\\\""
    rf"|\"{_NOT_STRING_GAP}(?P<v2>[^\"\\\r\n]{{1,96}})\""
    rf"|'{_NOT_STRING_GAP}(?P<v3>[^'\r\n]{{1,96}})'"
    r"|%22(?P<v4>(?:(?!%22)[^&\s]){1,96})%22"
    r"|&quot;(?P<v5>(?:(?!&quot;)[^<\r\n]){1,96})&quot;"
    r"|(?P<v6>[^\s\"'&;,<>{}\[\]\\]{1,64}))"
)
_XML = re.compile(r"<(?P<key>[A-Za-z][\w.\-:]{0,47})(?:\s[^<>]{0,60})?>(?P<val>[^<]{1,96})</")
# Every sensitive key (keys.SENSITIVE) contains one of these stems (a test checks it). Searched in
# lower-cased bytes: a case-insensitive alternation is ~5x slower, and this runs on every span.
_STEMS = re.compile(rb"c(?:v|av|id|sc)|p(?:in|an|vv|rimary)|track|secur|verif|stripe")


def _has_stem(raw: bytes) -> bool:
    return _STEMS.search(raw.lower()) is not None


_WIDE_DIGIT = re.compile(r"(?![0-9])\d")  # a decimal digit outside ASCII (fullwidth, Arabic-Indic...)

# Pre-filter: digits -> "0", separators deleted, anything else -> "x"; 13 zeros = maybe a PAN.
_SEP_BYTES = b" \t.-/_+"
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_ZEROS = b"0" * MIN_PAN


@dataclass(frozen=True, slots=True)
class Finding:
    """``text[start:end]`` must be masked. ``ctx_start..ctx_end`` is everything the decision
    looked at (the stream masker only applies findings whose context is complete).
    For a PAN, ``digits`` are the (start, end) stretches holding its digits, in order; for
    other kinds, when set, they are the only characters to mask (UTF-16: not the NULs)."""

    start: int
    end: int
    kind: str
    ctx_start: int
    ctx_end: int
    digits: tuple[tuple[int, int], ...] = ()


def may_need_masking(data: str | bytes) -> bool:
    """Cheap test: False guarantees :func:`find` returns nothing for ``data``."""
    if isinstance(data, str):
        if data.isascii():
            raw = data.encode("ascii")
        elif _WIDE_DIGIT.search(data):
            return True
        else:
            raw = data.encode("utf-8")
    else:
        raw = data
    if b"%" in raw:
        return True  # URL-encoded separators hide digit runs from the translate below
    if len(raw) >= MIN_PAN and _ZEROS in raw.translate(_DIGITS_TO_ZERO, _SEP_BYTES):
        return True
    return _has_stem(raw)


def find(text: str) -> list[Finding]:
    """All card data in ``text``, sorted by start; overlapping findings are all reported
    (rendering merges them, the strongest kind wins)."""
    out: list[Finding] = []
    tracks = _tracks(text)
    out.extend(tracks)
    if _has_stem(text.encode("utf-8", "surrogatepass")):
        out.extend(_secrets(text))
    for m in _RUN.finditer(text):
        out.extend(_pans_in_run(text, m.start(), m.end()))
    out.sort(key=lambda f: (f.start, -PRIORITY[f.kind]))
    return out


def _ascii_digits(s: str) -> str:
    return s if s.isascii() else "".join(str(int(c)) for c in s)


def _tracks(text: str) -> list[Finding]:
    found = []
    for rx in (_TRACK2, _TRACK1):
        for m in rx.finditer(text):
            if is_pan(_ascii_digits(m.group("pan"))):
                found.append(Finding(m.start(), m.end(), TRACK, m.start(), min(len(text), m.end() + 1)))
    return found


def _secrets(text: str) -> list[Finding]:
    found = []
    pos = 0
    while m := _KV.search(text, pos):
        if not is_sensitive_key(m.group("key")):
            pos = m.end("key")  # what looked like this key's value may be the next key ('a: "cvv":"1"')
            continue
        pos = m.end()
        for g in ("v1", "v2", "v3", "v4", "v5", "v6"):
            if m.group(g) is not None:
                found.append(Finding(m.start(g), m.end(g), SECRET, m.start(), min(len(text), m.end() + 1)))
                break
    for m in _XML.finditer(text):
        if is_sensitive_key(m.group("key")):
            found.append(Finding(m.start("val"), m.end("val"), SECRET, m.start(), m.end()))
    return found


def _letter(text: str, i: int) -> str:
    """The ASCII letter at ``text[i]``; '' if none, or if it belongs to an escape (``%3D``,
    ``\\n``, ``\\u00e9``), which separates like punctuation."""
    if 0 <= i < len(text) and ("a" <= text[i] <= "z" or "A" <= text[i] <= "Z"):
        if i >= 1 and text[i - 1] == "\\" or i >= 2 and text[i - 2] == "%":
            return ""
        return "" if any(text[i - k : i - k + 2] == "\\u" for k in range(2, 6) if i - k >= 0) else text[i]
    return ""


_ESCAPES = {"%20": " ", "+": " ", "%2b": "+", "%2d": "-", "%2e": ".", "%2f": "/", "%5f": "_", "\t": " "}
_UNIT = re.compile(rf"{_SEP_UNIT}|\x00")


@lru_cache(maxsize=1024)
def _sep_style(sep: str) -> str:
    """``" - "`` and ``"-"``, ``"  "`` and ``"%20"``: the same way of writing a separator."""
    units = [_ESCAPES.get(u.lower().replace("%25", "%"), u) for u in _UNIT.findall(sep)]
    if any(u != " " for u in units):
        units = [u for u in units if u != " "]
    return units[0] if len(set(units)) == 1 else "".join(units)


def _pans_in_run(text: str, start: int, end: int) -> list[Finding]:
    spans: list[list[tuple[int, int]]] = []
    seps: list[str] = []
    for m in _TOKEN.finditer(text, start, end):
        if m.group(1):
            spans.append([m.span(1)])
        else:
            seps.append(_sep_style(m.group()))
    digits = ["".join(_ascii_digits(text[a:b]) for a, b in g) for g in spans]
    # A run glued to a letter ("...07f5ac36", "a6978b3682...") is part of an id: its edge
    # group cannot be the edge of a PAN.
    first = 1 if _letter(text, start - 1) else 0
    last = len(spans) - 1 - (1 if _letter(text, end) else 0)
    found: list[Finding] = []
    covered = [False] * len(spans)
    ctx_end = min(len(text), end + 1)
    i = first
    while i <= last:
        best, total, joined = -1, 0, ""
        for j in range(i, last + 1):
            if j > i and not (3 <= len(digits[j]) <= 6 and 3 <= len(digits[i]) <= 6 and seps[j - 1] == seps[i]):
                break  # written PANs: groups of 3-6 digits, one separator style (not 8-4-4 uuids)
            total += len(digits[j])
            if total > MAX_PAN:
                break
            joined += digits[j]
            if total >= MIN_PAN and is_pan(joined):
                best = j
        if best < 0:
            i += 1
            continue
        parts = tuple(sp for g in spans[i : best + 1] for sp in g)
        found.append(Finding(parts[0][0], parts[-1][1], PAN, max(start, parts[0][0] - 1),
                             min(ctx_end, parts[-1][1] + 1), parts))
        for k in range(i, best + 1):
            covered[k] = True
        i = best + 1
    before, after = _letter(text, start - 1), _letter(text, end)
    hexish = before.islower() or after.islower()  # digits of a lower-case hex id
    for k, g in enumerate(spans):
        if not covered[k] and len(digits[k]) > MIN_PAN and not (hexish and k in (0, len(spans) - 1)):
            pos = [i for a, b in g for i in range(a, b)]
            found.extend(_inside_group(digits[k], pos, len(text), k == 0 and before.isupper()))
    return found


def _inside_group(d: str, pos: list[int], n: int, after_bitmap: bool) -> list[Finding]:
    """PANs inside one separator-free digit run ``d`` (its characters at ``pos``): zero-padded,
    or behind an LLVAR prefix.

    A prefix at the very start of the run counts only right after an upper-case letter (the
    end of an ASCII ISO 8583 bitmap, ``...C08000`` ``16 4111...``): otherwise the "prefix" is
    most often the ``16``/``17`` that starts an epoch timestamp.
    """

    def finding(i: int, j: int, ctx_from: int) -> Finding:
        parts = tuple((p, p + 1) for p in pos[i:j]) if pos[j - 1] - pos[i] != j - 1 - i else ((pos[i], pos[j - 1] + 1),)
        return Finding(pos[i], pos[j - 1] + 1, PAN, pos[ctx_from], min(n, pos[j - 1] + 2), parts)

    stripped = d.lstrip("0")
    pad = len(d) - len(stripped)
    if pad and MIN_PAN <= len(stripped) <= MAX_PAN and is_pan(stripped):
        return [finding(pad, len(d), 0)]
    if len(d) in (18, 21) and d[:2] == str(len(d) - 2) and is_pan(d[2:]):
        return [finding(2, len(d), 0)]  # exactly "16" + 16 digits (or "19" + 19): a field 2 on its own
    found = []
    p = 2 if after_bitmap else 3
    while p <= len(d) - MIN_PAN - LLVAR_TRAILING:
        if d[p - 2] == "1" and "3" <= d[p - 1] <= "9":
            length = 10 + ord(d[p - 1]) - 48
            if p + length + LLVAR_TRAILING <= len(d) and is_pan(d[p : p + length]):
                found.append(finding(p, p + length, p - 2))
                p += length + 2
                continue
        p += 1
    return found
