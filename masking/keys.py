"""Which field names hold data that must never be stored (PCI DSS 3.3.1: sensitive
authentication data): card verification codes, PINs and PIN blocks, magnetic-stripe track
data, and the full PAN when a field is named for it.

Why token matching instead of a list of spellings: the same field is written ``cvv``,
``CVV2``, ``card.cvv``, ``cvvCode``, ``card_security_code``, ``SecurityCode``,
``security-code``, ``x-card-cvc``, ``user.pin_number``, ``PINBlock``... A key is split into
lower-case words at separators and camelCase humps; it is sensitive when one word, or two or
three adjacent words joined, is a name in :data:`SENSITIVE`. Short names that are common
inside ordinary words (``pin`` in ``shipping``, ``pan`` in ``span``, ``cid`` in ``acid``) only
match as whole words, so ``spinner``, ``span_id`` or ``tracking.id`` are kept. A key whose
last word says it is *about* the value rather than the value (``card.cvv_checked``,
``cvv_result``, ``pin_verified``, ``pin.attempts``) is kept too: those are what an operator
needs to debug a decline, and they never hold the code itself.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["SENSITIVE", "is_sensitive_key", "key_words"]

#: Names (words already joined, lower case) whose values are dropped.
SENSITIVE: frozenset[str] = frozenset({
    # card verification value/code, under every scheme's name
    "cvv", "cvv2", "cvc", "cvc2", "cvn", "cvn2", "cvd", "cav", "cav2", "cid", "csc", "cvs",
    "securitycode", "cardsecuritycode", "cardverification", "cardverificationvalue",
    "cardverificationcode", "cardverificationnumber", "verificationcode", "verificationvalue",
    # PIN material
    "pin", "pins", "pinnumber", "pincode", "pinblock", "pinblk", "encryptedpin", "pinoffset", "pvv",
    # magnetic stripe / chip track data
    "track", "track1", "track2", "track3", "trackdata", "track1data", "track2data", "tracks",
    "magstripe", "magneticstripe", "stripedata", "track2equivalent", "track2equivalentdata",
    # a field named for the full card number: dropped, not just masked
    "pan", "primaryaccountnumber",
})

#: Last words that make a key a property of the secret, not the secret (see module doc).
QUALIFIERS: frozenset[str] = frozenset({
    "checked", "check", "result", "results", "status", "present", "presence", "provided", "match",
    "matched", "response", "verified", "valid", "validated", "validation", "enabled",
    "required", "supported", "length", "len", "type", "format", "mode", "policy", "attempts", "retries",
    "tries", "count", "error", "errors", "ok", "failed", "failure", "outcome", "indicator", "flag",
    "id", "ids", "entry", "capability", "method",
})

# Words longer than this are also matched as a suffix of a single lower-case word
# (``cardcvv``, ``usersecuritycode``): long enough not to occur inside ordinary words.
_SUFFIX_SAFE_T = tuple(sorted(w for w in SENSITIVE if len(w) >= 6 or w.startswith(("cvv", "cvc"))))

_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_HUMP = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def key_words(key: str) -> list[str]:
    """``"card.cvvCode"`` -> ``["card", "cvv", "code"]``; digits stay words (``track``, ``2``)."""
    return [w.lower() for part in _SPLIT.split(key) for w in _HUMP.findall(part)]


@lru_cache(maxsize=16384)
def is_sensitive_key(key: str) -> bool:
    """True when ``key`` names CVV/CVC/PIN/track data or the PAN itself (see module doc).

    Memoised: real traffic repeats a few dozen keys millions of times.
    """
    words = key_words(key)
    if len(words) > 1 and words[-1] in QUALIFIERS:
        return False  # "cvv_checked": a property of the secret, not the secret
    n = len(words)
    for i in range(n):
        joined = ""
        for j in range(i, min(n, i + 4)):
            joined += words[j]
            if joined in SENSITIVE:
                return True
    # one lower-case word that ends with a distinctive name: "cardcvv", "usersecuritycode"
    return any(len(w) > 6 and w.endswith(_SUFFIX_SAFE_T) for w in words)
