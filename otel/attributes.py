"""Turn OTLP ``KeyValue`` lists into redacted Python dicts and compact JSON.

Why a module of its own: attribute handling is where the decoder spends its
time and where sensitive data lives. The masking rules themselves are in
:mod:`kprobe.masking` (shared with replay logs and kprobe's own logs); this module
applies them to every part of an attribute, tuned for speed:

* keys: a key naming CVV/PIN/track data or the PAN drops its attribute; a card
  number written *into* a key (``card_4111111111111111``) is masked;
* values: strings, numbers (through their JSON text), and bytes, which are masked
  as raw payloads *before* being base64-encoded (base64 hides digits from a scan).

For speed, values are converted without redaction first, serialised once, and the
JSON text goes through the masker's cheap pre-filter once; only spans that may
hold card data pay for the per-value pass (which then re-serialises). The key
verdict is memoised per key (a pure function of the key), because real traffic
repeats a few dozen keys millions of times.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from kprobe.masking import is_sensitive_key, mask_bytes, mask_text, may_need_masking

__all__ = [
    "Tally",
    "is_sensitive_key",
    "stored_key",
    "any_value_to_py",
    "attributes_to_dict",
    "dumps",
    "redact_tree",
    "redacted_json",
]

_encode = msgspec.json.Encoder().encode


def dumps(obj: Any) -> str:
    """Compact JSON (no spaces, UTF-8 kept) as ``str``; msgspec for speed."""
    return _encode(obj).decode()


@lru_cache(maxsize=8192)
def stored_key(key: str) -> tuple[str | None, int]:
    """(key as stored, PANs masked in it); None when the attribute must be dropped.

    Memoised: a pure function of the key, and real traffic repeats a few dozen keys.
    """
    if is_sensitive_key(key):
        return None, 0
    return mask_text(key)


@dataclass(slots=True)
class Tally:
    """Redaction counters for one decode call (no shared state between calls)."""

    dropped: int = 0  #: sensitive attributes removed
    masked: int = 0  #: values (strings / numbers) in which a PAN was masked


def any_value_to_py(v: Any, tally: Tally) -> Any:
    """Convert an OTLP ``AnyValue`` to a JSON-able Python value (unredacted).

    Bytes become base64 (as in OTLP/JSON); non-finite doubles become strings
    because JSON and ClickHouse's JSON functions have no NaN/Inf. Sensitive
    keys are also dropped inside ``kvlist`` values.
    """
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else str(d)
    if kind == "array_value":
        return [any_value_to_py(x, tally) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(v.kvlist_value.values, tally)
    if kind == "bytes_value":
        raw, n = mask_bytes(v.bytes_value)
        tally.masked += bool(n)
        return base64.b64encode(raw).decode("ascii")
    return None


def attributes_to_dict(kvs: Iterable[Any], tally: Tally) -> dict[str, Any]:
    """KeyValue list -> dict, sensitive keys dropped, keys masked (both counted). Values not masked yet.

    Strings, ints and bools (nearly all real attributes) are converted inline:
    this loop runs ~10x per span and a function call per value would cost
    more than the conversion.
    """
    out: dict[str, Any] = {}
    for kv in kvs:
        key, n = stored_key(kv.key)
        if key is None:
            tally.dropped += 1
            continue
        if n:
            tally.masked += 1
        v = kv.value
        text = v.string_value  # '' unless the oneof holds a non-empty string
        if text:
            out[key] = text
            continue
        kind = v.WhichOneof("value")
        if kind == "int_value" or kind == "bool_value":
            out[key] = getattr(v, kind)
        else:
            out[key] = any_value_to_py(v, tally)
    return out


def redact_tree(value: Any, tally: Tally) -> Any:
    """Return ``value`` with PANs masked in every string and number inside it.

    Numbers are checked through their JSON text and, when masked, become
    strings (``"411111******1111"``): a card number typed as int is still a
    card number.
    """
    if isinstance(value, str):
        text, n = mask_text(value)
        tally.masked += bool(n)
        return text
    if isinstance(value, dict):
        return {k: redact_tree(v, tally) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, tally) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = dumps(value)
        masked, n = mask_text(text)
        if n:
            tally.masked += 1
            return masked
    return value


def redacted_json(d: Any, tally: Tally) -> tuple[Any, str]:
    """Serialise ``d`` and mask card data, paying for redaction only if the JSON may hold some."""
    raw = _encode(d)
    if not may_need_masking(raw):
        return d, raw.decode()
    before = tally.masked
    d = redact_tree(d, tally)
    return d, (dumps(d) if tally.masked != before else raw.decode())
