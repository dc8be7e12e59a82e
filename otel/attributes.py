"""Turn OTLP ``KeyValue`` lists into redacted Python dicts and compact JSON.

Why a module of its own: attribute handling is where the decoder spends its
time and where sensitive data lives. Keeping conversion, the CVV/track/PIN
key filter and PAN masking together means one place enforces "nothing
sensitive leaves the decoder", and one place is tuned for speed:

* values are converted without redaction first, serialised once, and the
  JSON text is scanned once for a 13+ digit run; only spans that have such a
  run pay for the per-value redaction pass (which then re-serialises);
* the sensitive-key verdict is memoised per key (a pure function of the key),
  because real traffic repeats a few dozen keys millions of times.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from .redact import may_contain_pan, redact_with_count

__all__ = [
    "Tally",
    "is_sensitive_key",
    "any_value_to_py",
    "attributes_to_dict",
    "dumps",
    "redact_tree",
    "redacted_json",
]

#: Key names whose values must never be stored (card verification data and
#: PIN material, PCI DSS 3.3). Matched case-insensitively as the whole key or
#: as its last segment after ``.``, ``_``, ``-``, ``:``, ``/`` or a camelCase
#: boundary (``card.cvv``, ``payment_cvv2``, ``cardPinBlock``).
SENSITIVE_NAMES = ("cvv2", "cvv", "cvc2", "cvc", "track1", "track2", "pin_block", "pinblock", "pin")

_SENSITIVE_RE = re.compile(
    r"(?:^|[._\-:/ ])(?:" + "|".join(SENSITIVE_NAMES) + r")$",
    re.IGNORECASE,
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_encode = msgspec.json.Encoder().encode


def dumps(obj: Any) -> str:
    """Compact JSON (no spaces, UTF-8 kept) as ``str``; msgspec for speed."""
    return _encode(obj).decode()


@lru_cache(maxsize=8192)
def is_sensitive_key(key: str) -> bool:
    """True when an attribute key names CVV/CVC/track/PIN data (see SENSITIVE_NAMES)."""
    if _SENSITIVE_RE.search(key):
        return True
    # cardCvv / cardPinBlock: lower-case the camelCase humps into dot segments.
    if any(c.isupper() for c in key):
        return (
            _SENSITIVE_RE.search(_CAMEL_BOUNDARY.sub(".", key).replace("Pin.Block", "pin_block")) is not None
        )
    return False


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
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def attributes_to_dict(kvs: Iterable[Any], tally: Tally) -> dict[str, Any]:
    """KeyValue list -> dict, with sensitive keys dropped (and counted). Not PAN-masked yet.

    Strings, ints and bools (nearly all real attributes) are converted inline:
    this loop runs ~10x per span and a function call per value would cost
    more than the conversion.
    """
    out: dict[str, Any] = {}
    sensitive = is_sensitive_key
    for kv in kvs:
        key = kv.key
        if sensitive(key):
            tally.dropped += 1
            continue
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
        text, n = redact_with_count(value)
        tally.masked += bool(n)
        return text
    if isinstance(value, dict):
        return {k: redact_tree(v, tally) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, tally) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = dumps(value)
        masked, n = redact_with_count(text)
        if n:
            tally.masked += 1
            return masked
    return value


def redacted_json(d: Any, tally: Tally) -> tuple[Any, str]:
    """Serialise ``d`` and mask PANs, paying for redaction only if a digit run exists."""
    raw = _encode(d)
    if not may_contain_pan(raw):
        return d, raw.decode()
    before = tally.masked
    d = redact_tree(d, tally)
    return d, (dumps(d) if tally.masked != before else raw.decode())
