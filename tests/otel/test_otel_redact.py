"""PAN masking and sensitive-key rules.

Luhn-valid numbers that are *not* cards (an order id, an epoch-ms timestamp
that happens to pass the checksum) are masked too, deliberately: the masker
cannot tell them apart from a PAN, and over-masking an id is the cheap
mistake. ``test_luhn_valid_non_card_id_is_masked_on_purpose`` pins that.
"""

from __future__ import annotations

import pytest

from kprobe.otel.attributes import is_sensitive_key
from kprobe.otel.redact import luhn_valid, may_contain_pan, redact, redact_bytes, redact_with_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "411111******1111"),
        ("4111 1111 1111 1111", "411111******1111"),
        ("4111-1111-1111-1111", "411111******1111"),
        ("card=5555555555554444;", "card=555555******4444;"),
        ("amex 378282246310005 ok", "amex 378282*****0005 ok"),  # 15 digits
        ("visa13 4222222222222.", "visa13 422222***2222."),  # 13 digits
        ("6011 0009 9013 9424", "601100******9424"),
    ],
)
def test_luhn_valid_pans_are_masked_to_bin_and_last4(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_luhn_invalid_runs_are_kept() -> None:
    for text in ["4111111111111112", "order 1234567890123 done", "id=99999999999999999"]:
        digits = "".join(c for c in text if c.isdigit())
        assert not luhn_valid(digits), "fixture must fail Luhn"
        assert redact(text) == text


def test_short_runs_and_long_unbroken_ids_are_kept() -> None:
    assert redact("pin-less 411111111111") == "pin-less 411111111111"  # 12 digits
    # 20 digits without separators is an id, even if a 16-digit slice is a PAN.
    long_id = "41111111111111110000"
    assert redact(long_id) == long_id


def test_multiple_pans_in_one_string_are_all_masked_and_counted() -> None:
    text, n = redact_with_count("a 4111111111111111 b 5555-5555-5555-4444 c 378282246310005")
    assert text == "a 411111******1111 b 555555******4444 c 378282*****0005"
    assert n == 3


def test_pan_glued_to_an_amount_by_a_space_is_still_masked() -> None:
    assert redact("4111 1111 1111 1111 1250") == "411111******1111 1250"


def test_luhn_valid_non_card_id_is_masked_on_purpose() -> None:
    order_id = "1234567890128"  # 13 digits, passes Luhn, is not a card
    assert luhn_valid(order_id)
    assert redact(f"order {order_id}") == "order 123456***0128"


def test_no_pan_returns_the_same_object() -> None:
    text = "GET /v1/accounts/1234 took 12ms"
    assert redact(text) is text
    assert redact_with_count(text) == (text, 0)


def test_prefilter_agrees_with_regex_and_handles_unicode_digits() -> None:
    assert not may_contain_pan("x" * 100)
    assert may_contain_pan("4111 1111 1111 1111")
    assert may_contain_pan(b"4111-1111-1111-1111")
    fullwidth = "４１１１１１１１１１１１１１１１"  # non-ASCII digits take the regex path
    assert may_contain_pan(fullwidth)
    assert redact(fullwidth) == "４１１１１１******１１１１"


def test_redact_bytes_for_captured_payloads() -> None:
    payload = b"\x00\xffPAN=4111-1111-1111-1111&amt=12\xfe"
    assert redact_bytes(payload) == (b"\x00\xffPAN=411111******1111&amt=12\xfe", 1)
    clean = b"\x00" * 64 + b"1234567890123"  # Luhn-invalid
    assert redact_bytes(clean) == (clean, 0)
    assert redact_bytes(clean)[0] is clean


@pytest.mark.parametrize(
    "key",
    ["cvv", "CVV", "card.cvv", "payment_cvv2", "card.cvc", "track1", "card.track2", "pin", "PIN",
     "pin_block", "card.pin_block", "cardCvv", "cardPinBlock", "http.request.header.x-cvv"],
)  # fmt: skip
def test_sensitive_keys(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key", ["spin", "shipping", "pinned", "tracking.id", "card.cvv_checked", "card.number", "pinyin", "Spin"]
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)
