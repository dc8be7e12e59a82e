"""Mask a byte stream that arrives in pieces, so a card number split across two reads is
still masked.

Why: a replay log used to be masked one syscall payload at a time, and a process reading
``4111 1111`` then ``1111 1111`` stored a whole PAN (issue 18). The masker keeps a bounded
tail of the stream unreleased until it knows nothing in it can still be part of a finding.

The bound comes from :data:`~.scan.MAX_SPAN` (M): every finding, with the context its decision
needs, spans at most M characters. After each piece, findings whose context ends at least M
before the end of what we have are final and applied; everything but the last 2M bytes is
released. A finding not yet final ends within M of the end, so it starts within 2M of it:
inside the held tail, never in released bytes. The last few released bytes are kept as
read-only context, so a run that continues across the cut is not mistaken for a new one.

Same length only: the output is byte for byte as long as the input (replay needs it), and
the concatenation of everything :meth:`StreamMasker.feed` and :meth:`StreamMasker.finish`
return is exactly :func:`~.render.mask_same_length` of the whole stream, up to findings whose
context crossed a cut (which are masked at least as much).
"""

from __future__ import annotations

from .render import apply_same_length, clusters, find_in_bytes
from .scan import MAX_SPAN, may_need_masking

__all__ = ["StreamMasker"]

_CONTEXT = 32  # released bytes kept to give the scanner the left edge of a run


class StreamMasker:
    """Stateful same-length masker for one stream (one fd and direction of one process)."""

    def __init__(self, span: int = MAX_SPAN) -> None:
        self._span = span
        self._held = bytearray()  # received, not yet released; findings already applied in place
        self._ctx = b""  # the last released bytes, read-only
        self._offset = 0  # stream offset of _held[0]
        self._applied_to = 0  # clusters whose context ended at or before this stream offset are done
        self.masked = 0  #: clusters (PANs, track data, sensitive values) masked so far

    @property
    def held(self) -> int:
        """Bytes received but not yet released."""
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """Add the next piece; return the bytes now final (possibly empty), masked."""
        self._held += data
        if len(self._held) <= 2 * self._span:
            return b""
        return self._release(final=False)

    def finish(self) -> bytes:
        """The stream ended: mask and return everything still held."""
        return self._release(final=True)

    def _release(self, final: bool) -> bytes:
        held = self._held
        ctx = self._ctx
        base = self._offset - len(ctx)  # stream offset of the scanned buffer's first byte
        buf = ctx + bytes(held)
        limit = len(buf) if final else len(buf) - self._span
        if may_need_masking(buf) or b"\0" in buf:
            chars: list[str] | None = None
            for cl in clusters(find_in_bytes(buf)):
                ctx_end = max(f.ctx_end for f in cl)
                if ctx_end > limit or base + ctx_end <= self._applied_to:
                    continue  # not final yet, or already applied in an earlier round
                if chars is None:
                    chars = list(buf.decode("latin-1"))
                apply_same_length(chars, cl, floor=len(ctx))
                self.masked += 1
            if chars is not None:
                held[:] = "".join(chars[len(ctx) :]).encode("latin-1")
        self._applied_to = max(self._applied_to, base + limit)
        cut = len(held) if final else max(0, len(held) - 2 * self._span)
        out = bytes(held[:cut])
        del held[:cut]
        self._offset += cut
        self._ctx = (ctx + out)[-_CONTEXT:]
        return out
