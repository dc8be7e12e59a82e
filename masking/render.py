"""Apply findings: the compact form for spans and logs, the same-length form for replay logs.

Compact (:func:`mask_text`): a PAN becomes its BIN, one ``*`` per hidden digit and its last 4,
separators dropped (``4111.1111.1111.1111`` -> ``411111******1111``); a sensitive value
becomes ``***`` (its length would tell a 3-digit CVV from an Amex 4-digit CID); track data
becomes ``[track data removed]``.

Same length (:func:`mask_same_length`): every byte stays at its offset, because a replayed
process must get exactly as many bytes as the kernel gave it. A PAN keeps BIN, last 4 and its
separators (``4111 11** **** 1111``); sensitive values and track data become ``*`` one for one.

Overlapping findings are merged into one cluster; the strongest kind decides (track data >
sensitive value > PAN), so ``"pan": "4111111111111111"`` loses the whole value, not just the
middle digits.
"""

from __future__ import annotations

from .scan import PAN, PRIORITY, TRACK, Finding, find, may_need_masking

__all__ = ["TRACK_REMOVED", "SECRET_REMOVED", "clusters", "find_in_bytes", "mask_text", "mask_same_length",
           "mask_bytes"]

TRACK_REMOVED = "[track data removed]"
SECRET_REMOVED = "***"


def clusters(found: list[Finding]) -> list[list[Finding]]:
    """Group findings (sorted by start) whose mask regions overlap."""
    out: list[list[Finding]] = []
    end = -1
    for f in found:
        if out and f.start < end:
            out[-1].append(f)
            end = max(end, f.end)
        else:
            out.append([f])
            end = f.end
    return out


def _strongest(cluster: list[Finding]) -> Finding:
    return max(cluster, key=lambda f: PRIORITY[f.kind])


def mask_text(text: str) -> tuple[str, int]:
    """Compact masking of ``text``; returns (text, number of clusters masked). ``text`` itself
    (not a copy) when nothing was found."""
    if not may_need_masking(text):
        return text, 0
    found = find(text)
    if not found:
        return text, 0
    parts: list[str] = []
    last = 0
    groups = clusters(found)
    for cl in groups:
        s, e = cl[0].start, max(f.end for f in cl)
        top = _strongest(cl)
        parts.append(text[last:s])
        if top.kind == PAN and len(cl) == 1:
            digits = "".join(text[a:b] for a, b in top.digits)
            parts.append(digits[:6] + "*" * (len(digits) - 10) + digits[-4:])
        elif top.kind == TRACK:
            parts.append(TRACK_REMOVED)
        else:
            parts.append(SECRET_REMOVED)
        last = e
    parts.append(text[last:])
    return "".join(parts), len(groups)


def apply_same_length(buf: list[str], cl: list[Finding], floor: int = 0) -> None:
    """Mask one cluster in ``buf`` (a list of characters) in place, never below index ``floor``."""
    top = _strongest(cl)
    if top.kind == PAN and len(cl) == 1:
        pos = [i for a, b in top.digits for i in range(a, b)]
        for i in pos[6:-4]:
            if i >= floor:
                buf[i] = "*"
        return
    if all(f.digits for f in cl):  # found in a UTF-16 view: mask the characters, not the NULs
        for i in {i for f in cl for a, b in f.digits for i in range(a, b)}:
            if i >= floor:
                buf[i] = "*"
        return
    for i in range(max(floor, cl[0].start), max(f.end for f in cl)):
        buf[i] = "*"


def _utf16_like(data: bytes) -> bool:
    return len(data) >= 8 and data.count(0) * 4 >= len(data)


def find_in_bytes(data: bytes) -> list[Finding]:
    """Findings in a raw payload, positions in ``data`` (scanned as latin-1). Text in UTF-16 (a
    NUL beside every ASCII character) is also scanned with its NULs taken out, so ``4\\0 1\\0...``
    is found like ``41...``; those findings point at the non-NUL bytes only."""
    found = find(data.decode("latin-1"))
    if _utf16_like(data):
        idx = [i for i, b in enumerate(data) if b]
        view = data.replace(b"\0", b"")
        for f in find(view.decode("latin-1")):
            at = tuple((idx[p], idx[p] + 1) for a, b in (f.digits or ((f.start, f.end),)) for p in range(a, b))
            found.append(Finding(idx[f.start], idx[f.end - 1] + 1, f.kind, idx[f.ctx_start],
                                 idx[f.ctx_end - 1] + 1, at))
        found.sort(key=lambda f: (f.start, -PRIORITY[f.kind]))
    return found


def mask_same_length(data: bytes) -> tuple[bytes, int]:
    """Mask ``data`` keeping every byte at its offset; returns (bytes, clusters masked).
    ``data`` itself when nothing was found."""
    if not may_need_masking(data) and not _utf16_like(data):
        return data, 0
    found = find_in_bytes(data)
    if not found:
        return data, 0
    buf = list(data.decode("latin-1"))
    groups = clusters(found)
    for cl in groups:
        apply_same_length(buf, cl)
    return "".join(buf).encode("latin-1"), len(groups)


def mask_bytes(data: bytes) -> tuple[bytes, int]:
    """Compact masking of a raw payload (scanned as latin-1, so binary survives unchanged
    outside the masked parts). The result may be shorter: use :func:`mask_same_length`
    inside fixed-offset records. UTF-16 text is masked in the same-length form."""
    if _utf16_like(data):
        return mask_same_length(data)
    if not may_need_masking(data):
        return data, 0
    text, n = mask_text(data.decode("latin-1"))
    return (text.encode("latin-1"), n) if n else (data, 0)
