"""Mask payment card numbers (PANs) in arbitrary text.

Why this exists: spans, syscall payloads and socket captures from payment
systems routinely carry card numbers in attribute values, SQL text or log
lines. PCI DSS allows at most the BIN (first 6) and the last 4 digits to be
stored, so every string that leaves a decoder goes through :func:`redact`.

What counts as a PAN: a run of 13–19 digits, optionally separated by single
spaces or dashes (``4111 1111 1111 1111``, ``4111-1111-1111-1111``), whose
digits pass the Luhn check. Runs failing Luhn (order ids, most timestamps) are
left alone.

Deliberate false positives: roughly 1 in 10 random 13–19 digit numbers passes
Luhn, so a Luhn-valid order id, account id or epoch-millisecond timestamp
*will* be masked. We accept that: over-masking an id costs a lookup, leaking a
PAN costs a PCI incident. Runs longer than 19 digits are masked only where a
separator-delimited window of 13–19 digits inside them passes Luhn (a PAN
followed by an amount, e.g. ``4111 1111 1111 1111 1250``); an unbroken run of
20+ digits is an id, not a card, and is kept.

The masked form is the digits only: BIN, one ``*`` per hidden digit, last 4
(``411111******1111``), separators dropped.
"""

from __future__ import annotations

import re

__all__ = [
    "luhn_valid",
    "mask_pan",
    "redact",
    "redact_with_count",
    "redact_bytes",
    "may_contain_pan",
    "DIGIT_RUN",
]

#: A maximal run of >= 13 digits with at most one space/dash between digits.
#: No look-arounds are needed: scanning left to right, a match always starts
#: at the first digit of a run and greedily takes the whole run.
DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){12,}")

_MIN_PAN = 13
_MAX_PAN = 19
_SEPARATORS = re.compile(r"[ -]")

# Pre-filter: map ASCII digits to "0", everything else to "x", delete the
# separators, then look for 13 zeros. bytes.translate + `in` run at memory
# speed, ~10x faster than a regex scan on the (mostly PAN-free) hot path.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_THIRTEEN_ZEROS = b"0" * _MIN_PAN


def may_contain_pan(data: str | bytes) -> bool:
    """Cheap test: False guarantees ``data`` holds no 13+ digit run (separators allowed).

    Non-ASCII text takes the regex path so Unicode digits are still found.
    """
    if len(data) < _MIN_PAN:
        return False
    if isinstance(data, str):
        if not data.isascii():
            return DIGIT_RUN.search(data) is not None
        data = data.encode("ascii")
    elif not data.isascii():
        return DIGIT_RUN.search(data.decode("utf-8", "replace")) is not None
    return _THIRTEEN_ZEROS in data.translate(_DIGITS_TO_ZERO, b" -")


def luhn_valid(digits: str) -> bool:
    """Return True when a string of decimal digits passes the Luhn checksum."""
    total = 0
    double = False
    for ch in reversed(digits):
        d = int(ch)
        if double:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        double = not double
    return total % 10 == 0


def mask_pan(digits: str) -> str:
    """Keep BIN (6) + last 4 of a digits-only PAN, one ``*`` per hidden digit."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def _mask_run(run: str) -> tuple[str, int]:
    """Mask the PAN(s) inside one digit run; return (replacement, number masked)."""
    digits = _SEPARATORS.sub("", run)
    n = len(digits)
    if _MIN_PAN <= n <= _MAX_PAN:
        if luhn_valid(digits):
            return mask_pan(digits), 1
        if run.isdigit():
            return run, 0
    elif n < _MIN_PAN or run.isdigit():
        return run, 0
    # Separated run that is too long, or of PAN length but failing Luhn as a
    # whole: look for Luhn-valid windows of whole separator-delimited groups
    # (a PAN glued to an amount or a CVV-like suffix by a space).
    groups = _SEPARATORS.split(run)
    seps = _SEPARATORS.findall(run)
    out: list[str] = []
    masked = 0
    i = 0
    while i < len(groups):
        found = -1
        length = 0
        for j in range(i, len(groups)):
            length += len(groups[j])
            if length > _MAX_PAN:
                break
            if length >= _MIN_PAN and luhn_valid("".join(groups[i : j + 1])):
                found = j  # keep extending: prefer the longest valid window
        if found >= 0:
            out.append(mask_pan("".join(groups[i : found + 1])))
            masked += 1
            i = found + 1
        else:
            out.append(groups[i])
            i += 1
        if i < len(groups):
            out.append(seps[i - 1])
    return "".join(out), masked


def redact_with_count(text: str) -> tuple[str, int]:
    """Mask every PAN in ``text``; return (masked text, number of PANs masked).

    The common case (no run of 13+ digits) costs one ``bytes.translate`` and
    returns ``text`` itself, unchanged and uncopied.
    """
    if not may_contain_pan(text):
        return text, 0
    parts: list[str] = []
    masked = 0
    last = 0
    for m in DIGIT_RUN.finditer(text):
        replacement, n = _mask_run(m.group())
        parts.append(text[last : m.start()])
        parts.append(replacement)
        masked += n
        last = m.end()
    if masked == 0:
        return text, 0
    parts.append(text[last:])
    return "".join(parts), masked


def redact(text: str) -> str:
    """Mask every Luhn-valid 13–19 digit card number in ``text`` (see module doc)."""
    return redact_with_count(text)[0]


def redact_bytes(data: bytes) -> tuple[bytes, int]:
    """Mask PANs (ASCII digits) in a raw payload, e.g. a captured socket buffer.

    Bytes are mapped 1:1 through latin-1, so non-text payloads survive
    unchanged outside the masked runs. A masked run loses its separators, so
    the payload can get shorter: do not redact in place inside fixed-offset
    records. Returns (payload, number of PANs masked); ``data`` itself when
    nothing was masked.
    """
    if len(data) < _MIN_PAN or _THIRTEEN_ZEROS not in data.translate(_DIGITS_TO_ZERO, b" -"):
        return data, 0
    text, n = redact_with_count(data.decode("latin-1"))
    return (text.encode("latin-1"), n) if n else (data, 0)


def redact_bytes_same_length(data: bytes) -> tuple[bytes, int]:
    """Mask PANs like :func:`redact_bytes` but keep every byte at its offset.

    Replay logs need this: a recorded read must hand the replayed process exactly as
    many bytes as the kernel did, so hidden digits become ``*`` one for one and the
    separators stay where they were. Returns (payload, number of PANs masked).
    """
    if len(data) < _MIN_PAN or _THIRTEEN_ZEROS not in data.translate(_DIGITS_TO_ZERO, b" -"):
        return data, 0
    text = data.decode("latin-1")
    out = list(text)
    masked = 0
    for m in DIGIT_RUN.finditer(text):
        replacement, n = _mask_run(m.group())
        if not n:
            continue
        masked += n
        new_digits = iter(_SEPARATORS.sub("", replacement))
        for i in range(m.start(), m.end()):
            if text[i].isdigit():
                out[i] = next(new_digits)
    return ("".join(out).encode("latin-1"), masked) if masked else (data, 0)
