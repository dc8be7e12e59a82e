"""The one place kprobe masks card data, for every path that stores or prints something.

Why here, a top-level ``masking/`` folder (installed as ``kprobe.masking``) beside ``otel/``
and ``replay/``: masking is not a detail of one path. OTLP spans, replay logs, payload captures,
the Kafka sink and kprobe's own logs all need the same rule, and a newcomer asking "where are
card numbers masked?" should find it by name, not inside the OTLP decoder. It depends on
nothing else in kprobe, so any path can import it.

What it guarantees (PCI DSS v4.0.1 3.3.1, 3.4.1): what leaves it holds at most the BIN (first
6) and last 4 digits of a card number; card verification codes, PINs and track data are
dropped whole. What it finds, and why each rule is shaped the way it is, is in
:mod:`.scan` (PANs, track data, ``key: value`` secrets), :mod:`.cards` (issuer ranges, lengths,
Luhn) and :mod:`.keys` (sensitive field names).

Entry points:

* :func:`mask_text` / :func:`mask_bytes` - compact form for spans, logs, messages;
* :func:`mask_same_length` - same length, for fixed-offset records (replay logs);
* :class:`StreamMasker` - same length across pieces of one stream (reads of one socket);
* :func:`is_sensitive_key` - structured fields (span attributes) whose value is dropped;
* :func:`install_log_masking` - every log record of the process;
* :func:`mask_columns` - the free-text columns of an event batch (a file path named after a card).
"""

from .cards import is_pan, luhn_valid, mask_pan
from .columns import mask_columns
from .keys import is_sensitive_key
from .logs import install_log_masking
from .render import SECRET_REMOVED, TRACK_REMOVED, mask_bytes, mask_same_length, mask_text
from .scan import MAX_SPAN, find, may_need_masking
from .stream import StreamMasker

__all__ = [
    "MAX_SPAN",
    "SECRET_REMOVED",
    "TRACK_REMOVED",
    "StreamMasker",
    "find",
    "install_log_masking",
    "is_pan",
    "is_sensitive_key",
    "luhn_valid",
    "mask_columns",
    "mask_bytes",
    "mask_pan",
    "mask_same_length",
    "mask_text",
    "may_need_masking",
]
