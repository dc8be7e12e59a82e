"""What a payment card number (PAN) looks like: issuer ranges, lengths, Luhn.

Why a range table and not Luhn alone: one random digit string in ten passes Luhn, so
Luhn-only masking hid order ids, epoch timestamps and the decimal part of hex ids (issue 18
counted 12 in one replay log of a journal service). A real PAN also starts with an issuer
identification number (IIN/BIN) that a card scheme owns, and has a length that scheme
issues. Epoch timestamps (``17...``) and most ids fall outside every range, so requiring
range + length + Luhn keeps nearly all of them while no real card is missed.

The table lists the major schemes' published ranges. Schemes whose ranges are very broad
(UATP ``1...``, the whole ``6...`` Maestro space) are left out or narrowed on purpose: they
would reintroduce the timestamp false positives this table exists to remove. Adding a range
is one line in :data:`RANGES`.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RANGES", "MIN_PAN", "MAX_PAN", "IinRange", "luhn_valid", "scheme_of", "is_pan", "mask_pan"]

MIN_PAN = 13  #: shortest PAN we mask (Visa's legacy 13 digits); 12-digit Maestro is too close to ids
MAX_PAN = 19  #: ISO/IEC 7812 maximum


class IinRange(NamedTuple):
    """PANs whose first ``len(str(lo))`` digits lie in ``lo..hi`` and whose length is in ``lengths``."""

    scheme: str
    lo: int
    hi: int
    lengths: frozenset[int]


def _r(scheme: str, lo: int, hi: int, lengths: range | tuple[int, ...]) -> IinRange:
    assert len(str(lo)) == len(str(hi))
    return IinRange(scheme, lo, hi, frozenset(lengths))


_16_19 = range(16, 20)

#: Issuer ranges by scheme (sources: the schemes' published IIN tables as summarised in ISO/IEC
#: 7812 registries). Overlaps are harmless: a number is a PAN if any range accepts it.
RANGES: tuple[IinRange, ...] = (
    _r("visa", 4, 4, (13, 16, 19)),
    _r("mastercard", 51, 55, (16,)),
    _r("mastercard", 2221, 2720, (16,)),
    _r("amex", 34, 34, (15,)),
    _r("amex", 37, 37, (15,)),
    _r("discover", 6011, 6011, _16_19),
    _r("discover", 644, 649, _16_19),
    _r("discover", 65, 65, _16_19),
    _r("discover", 622126, 622925, _16_19),
    _r("jcb", 3528, 3589, _16_19),
    _r("diners", 300, 305, range(14, 20)),
    _r("diners", 3095, 3095, range(14, 20)),
    _r("diners", 36, 36, range(14, 20)),
    _r("diners", 38, 39, range(14, 20)),
    _r("unionpay", 62, 62, _16_19),
    _r("unionpay", 81, 81, _16_19),
    _r("maestro", 50, 50, range(13, 20)),
    _r("maestro", 56, 58, range(13, 20)),
    _r("maestro", 639, 639, range(13, 20)),
    _r("maestro", 67, 67, range(13, 20)),
    _r("mir", 2200, 2204, _16_19),
    _r("rupay", 60, 60, (16,)),
    _r("rupay", 82, 82, (16,)),
    _r("rupay", 508, 508, (16,)),
    _r("troy", 9792, 9792, (16,)),
)

# prefix length -> ranges with that prefix length, checked from the shortest prefix up
_BY_PREFIX: dict[int, tuple[IinRange, ...]] = {}
for _rng in RANGES:
    _k = len(str(_rng.lo))
    _BY_PREFIX[_k] = (*_BY_PREFIX.get(_k, ()), _rng)
_PREFIX_LENGTHS = tuple(sorted(_BY_PREFIX))


def luhn_valid(digits: str) -> bool:
    """True when a string of ASCII decimal digits passes the Luhn (mod 10) checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def scheme_of(digits: str) -> str | None:
    """The scheme whose IIN range and length fit ``digits`` (ASCII digits), or None."""
    n = len(digits)
    for k in _PREFIX_LENGTHS:
        head = int(digits[:k])
        for rng in _BY_PREFIX[k]:
            if rng.lo <= head <= rng.hi and n in rng.lengths:
                return rng.scheme
    return None


def is_pan(digits: str) -> bool:
    """A plausible card number: 13-19 ASCII digits, in a scheme's range and length, Luhn-valid."""
    return MIN_PAN <= len(digits) <= MAX_PAN and scheme_of(digits) is not None and luhn_valid(digits)


def mask_pan(digits: str) -> str:
    """BIN (first 6) + one ``*`` per hidden digit + last 4: the most PCI DSS 3.4.1 lets us keep."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
