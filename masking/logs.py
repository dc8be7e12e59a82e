"""Card data never reaches kprobe's own log output.

Why a log-record factory and not a handler filter: a filter on a logger misses records that
child loggers propagate, and one on a handler misses handlers added later (pytest's, a
deployment's). The record factory runs for every record of every logger in the process, so
an exception text quoting a span or a payload (a chDB insert error, a decoder error) is
masked before any handler formats it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from .render import mask_text

__all__ = ["install_log_masking", "mask_record"]

_installed = False


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask the formatted message and the exception text of ``record`` in place."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep the record as logging would report it
        return record
    masked, n = mask_text(message)
    if n:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = mask_text(text)[0]
    return record


def install_log_masking() -> None:
    """Wrap the process's log-record factory (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
