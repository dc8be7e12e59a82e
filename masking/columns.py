"""Mask the free-text string columns of an event batch (numpy columns) before a sink stores or
ships it.

Why only some columns: kernel event batches carry strings the kernel copied from the process
(``path`` of an openat, ``filename`` of an exec), and a payment service can name files after
card numbers (``/var/spool/cards/4111111111111111.json``). Process names (``comm``) are at most
15 bytes, set by the program, and repeated in every row: masking them costs on the hottest
tables and protects nothing real. Spans are masked at decode (kprobe.otel), not here.

Why unique values: a batch repeats a few paths thousands of times; each distinct value is
scanned once, and a whole column without any candidate costs one join and one pre-filter.
"""

from __future__ import annotations

import numpy as np

from .render import mask_text
from .scan import may_need_masking

__all__ = ["FREE_TEXT_COLUMNS", "mask_columns"]

#: Event-table columns holding text a process controls (schemas/tables.py).
FREE_TEXT_COLUMNS = ("path", "filename")


def mask_columns(columns: dict[str, np.ndarray], names: tuple[str, ...] = FREE_TEXT_COLUMNS) -> dict[str, np.ndarray]:
    """``columns`` with card data masked in the object (string) columns named in ``names``.

    Returns ``columns`` itself when nothing changed; otherwise a new dict sharing the untouched
    arrays (the caller's arrays are never modified).
    """
    out = columns
    for name in names:
        col = columns.get(name)
        if col is None or col.dtype != object or not len(col):
            continue
        values = {v for v in col.tolist() if isinstance(v, str)}
        if not may_need_masking("\x1f".join(values)):
            continue
        masked = {v: m for v in values if (m := mask_text(v)[0]) is not v}
        if masked:
            if out is columns:
                out = dict(columns)
            out[name] = np.array([masked.get(v, v) for v in col.tolist()], dtype=object)
    return out
