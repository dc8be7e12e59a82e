"""The masking rules, one example each: what is masked, to what, and what is kept.

Moved here from tests/otel/test_otel_redact.py when masking became one module for every path
(kprobe.masking). Changes from the old rules, on purpose (issue 18): a Luhn-valid id outside
every card scheme's issuer range is no longer masked; more separators are recognised; a PAN
inside a long digit run is found where the run's shape says it is one (ISO 8583 LLVAR, zero
padding); track data and sensitive values are dropped whole.
"""

from __future__ import annotations

import pytest

from kprobe.masking import (
    TRACK_REMOVED,
    is_pan,
    is_sensitive_key,
    luhn_valid,
    mask_bytes,
    mask_same_length,
    mask_text,
    may_need_masking,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "411111******1111"),
        ("4111 1111 1111 1111", "411111******1111"),
        ("4111-1111-1111-1111", "411111******1111"),
        ("4111.1111.1111.1111", "411111******1111"),
        ("4111/1111/1111/1111", "411111******1111"),
        ("4111_1111_1111_1111", "411111******1111"),
        ("4111+1111+1111+1111", "411111******1111"),
        ("4111%201111%201111%201111", "411111******1111"),
        ("4111  1111  1111  1111", "411111******1111"),
        ("4111 1111  1111 1111", "411111******1111"),  # one doubled space
        ("card=5555555555554444;", "card=555555******4444;"),
        ("amex 378282246310005 ok", "amex 378282*****0005 ok"),  # 15 digits
        ("amex 3782 822463 10005 ok", "amex 378282*****0005 ok"),  # Amex 4-6-5
        ("visa13 4222222222222.", "visa13 422222***2222."),  # 13 digits
        ("6011 0009 9013 9424", "601100******9424"),
        ("diners 3056 930902 5904", "diners 305693****5904"),
        ("mc2 2223 0031 2200 3222", "mc2 222300******3222"),
    ],
)
def test_pans_are_masked_to_bin_and_last4(text: str, expected: str) -> None:
    assert mask_text(text)[0] == expected


def test_pan_inside_iso8583_field_2_with_its_llvar_prefix() -> None:
    msg = "0200" + "7234054128C08000" + "16" + "4111111111111111" + "000000" + "000000012500"
    assert mask_text(msg)[0] == "02007234054128C0800016411111******1111000000000000012500"
    assert mask_text("DE2=164111111111111111")[0] == "DE2=16411111******1111"  # field 2 logged alone
    assert mask_text("ts=1765098312345678901")[0] == "ts=1765098312345678901"  # "17" + 17 digits: a timestamp


def test_zero_padded_pan_in_a_fixed_width_field() -> None:
    assert mask_text("acct=0004111111111111111;")[0] == "acct=000411111******1111;"


def test_track_data_is_dropped_whole() -> None:
    t2 = ";4111111111111111=25121011234567890?"
    assert mask_text(f"swipe {t2} ok") == (f"swipe {TRACK_REMOVED} ok", 1)
    t1 = "%B4111111111111111^DOE/JOHN^25121010000000000000?"
    assert mask_text(f"t1={t1}")[0] == f"t1={TRACK_REMOVED}"
    emv57 = "4111111111111111D25121011234567890F"
    assert mask_text(f"57 {emv57}")[0] == f"57 {TRACK_REMOVED}"
    same, n = mask_same_length(f"x {t2} y".encode())
    assert n == 1 and same == b"x " + b"*" * len(t2) + b" y"


@pytest.mark.parametrize(
    "text",
    ['{"cvvCode":"123"}', '{"securityCode": 123}', '{"card":{"cvv2":"123"}}', "user.pin_number=123&x=1",
     "Security Code: 123", "<CVV2>123</CVV2>", "%22cvv%22%3A%22123%22", "X-Card-CVC: 123", "pin => '123'"],
)  # fmt: skip
def test_sensitive_values_in_free_text_are_dropped(text: str) -> None:
    out, n = mask_text(text)
    assert n == 1 and "123" not in out and "***" in out
    same = mask_same_length(text.encode())[0]
    assert len(same) == len(text) and b"123" not in same


def test_luhn_invalid_or_out_of_range_runs_are_kept() -> None:
    for text in ["4111111111111112", "order 1234567890123 done", "id=99999999999999999"]:
        assert mask_text(text) == (text, 0)
    order_id = "1234567890128"  # passes Luhn but no scheme issues 1...: not a card
    assert luhn_valid(order_id) and not is_pan(order_id)
    assert mask_text(f"order {order_id}") == (f"order {order_id}", 0)


def test_short_runs_and_long_unbroken_ids_are_kept() -> None:
    assert mask_text("pin-less 411111111111")[0] == "pin-less 411111111111"  # 12 digits
    long_id = "41111111111111110000"  # 20 digits, no LLVAR prefix: an id
    assert mask_text(long_id)[0] == long_id


def test_multiple_pans_in_one_string_are_all_masked_and_counted() -> None:
    text, n = mask_text("a 4111111111111111 b 5555-5555-5555-4444 c 378282246310005")
    assert text == "a 411111******1111 b 555555******4444 c 378282*****0005"
    assert n == 3


def test_pan_glued_to_an_amount_by_a_separator_is_still_masked() -> None:
    assert mask_text("4111 1111 1111 1111 1250")[0] == "411111******1111 1250"


def test_no_card_data_returns_the_same_object() -> None:
    text = "GET /v1/accounts/1234 took 12ms"
    assert mask_text(text)[0] is text
    assert mask_text(text) == (text, 0)


def test_prefilter_and_unicode_digits() -> None:
    assert not may_need_masking("x" * 100)
    assert may_need_masking("4111 1111 1111 1111") and may_need_masking(b"4111-1111-1111-1111")
    fullwidth = "４１１１１１１１１１１１１１１１"
    assert mask_text(fullwidth)[0] == "４１１１１１******１１１１"


def test_bytes_payloads_compact_and_same_length() -> None:
    payload = b"\x00\xffPAN=4111-1111-1111-1111&amt=12\xfe"
    assert mask_bytes(payload) == (b"\x00\xffPAN=***&amt=12\xfe", 1)  # a key named PAN drops its value
    payload = b"\x00\xffcard=4111-1111-1111-1111&amt=12\xfe"
    assert mask_bytes(payload) == (b"\x00\xffcard=411111******1111&amt=12\xfe", 1)
    assert mask_same_length(payload) == (b"\x00\xffcard=4111-11**-****-1111&amt=12\xfe", 1)
    utf16 = "card 4111111111111111".encode("utf-16-le")
    out = mask_same_length(utf16)[0]
    assert len(out) == len(utf16) and "4111111111111111" not in out.decode("utf-16-le")
    clean = b"\x00" * 64 + b"1234567890123"
    assert mask_bytes(clean)[0] is clean


@pytest.mark.parametrize(
    "key",
    ["cvv", "CVV", "card.cvv", "payment_cvv2", "card.cvc", "track1", "card.track2", "pin", "PIN",
     "pin_block", "card.pin_block", "cardCvv", "cardPinBlock", "http.request.header.x-cvv",
     "cvvCode", "securityCode", "card.cvv2", "user.pin_number", "SECURITY_CODE", "security-code",
     "Security Code", "PINBlock", "track_2", "Track2Data", "cid", "card.csc", "pan", "card.PAN",
     "primary_account_number", "cardcvv"],
)  # fmt: skip
def test_sensitive_keys(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    ["spin", "shipping", "pinned", "tracking.id", "card.cvv_checked", "card.number", "pinyin", "Spin",
     "span_id", "company", "japan", "acid", "cvv_result", "pin.attempts", "http.method", "thread.id"],
)  # fmt: skip
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)


def test_every_sensitive_name_contains_a_prefilter_stem() -> None:
    """The pre-filter skips the key=value scan unless a stem is present: it must cover every name."""
    from kprobe.masking.keys import SENSITIVE
    from kprobe.masking.scan import _has_stem

    assert [w for w in SENSITIVE if not _has_stem(w.encode())] == []


def test_event_columns_holding_paths_are_masked_for_the_sinks() -> None:
    import numpy as np

    from kprobe.masking import mask_columns

    cols = {"path": np.array(["/etc/hosts", "/spool/4111111111111111.json", "/etc/hosts"], dtype=object),
            "comm": np.array(["settle"] * 3, dtype=object), "fd": np.arange(3)}  # fmt: skip
    out = mask_columns(cols)
    assert out["path"].tolist() == ["/etc/hosts", "/spool/411111******1111.json", "/etc/hosts"]
    assert out["fd"] is cols["fd"] and cols["path"][1] == "/spool/4111111111111111.json"  # inputs untouched
    clean = {"path": np.array(["/etc/hosts"] * 3, dtype=object)}
    assert mask_columns(clean) is clean
