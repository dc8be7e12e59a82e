"""The corpus (issue 18): hundreds of shapes of the public test PANs, track data and sensitive
values, generated with hypothesis, through every entry point of kprobe.masking. Zero may leak.

The same shapes go through the OTLP decoder (tests/otel/test_otel_masking_sinks.py) and the
replay log masker (tests/replay/test_log_masking.py).
"""

from __future__ import annotations

import json

import pytest
from card_shapes import TEST_PANS, leaked, pan_text, secret_text, track1, track2, track_leaked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprobe.masking import StreamMasker, mask_bytes, mask_same_length, mask_text

CORPUS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CORPUS
@given(pan_text())
def test_no_pan_survives_text_masking(case: tuple[str, str]) -> None:
    pan, text = case
    out, n = mask_text(text)
    assert n >= 1 and not leaked(out, pan), (text, out)


@CORPUS
@given(pan_text(), st.sampled_from(("utf-8", "utf-16-le", "latin-1")))
def test_no_pan_survives_bytes_masking_compact_or_same_length(case: tuple[str, str], encoding: str) -> None:
    pan, text = case
    raw = text.encode(encoding, "replace")
    compact = mask_bytes(raw)[0]
    same = mask_same_length(raw)[0]
    assert len(same) == len(raw)
    assert not leaked(compact, pan) and not leaked(same, pan), (text, compact, same)


@CORPUS
@given(pan_text())
def test_no_pan_survives_json_embedding(case: tuple[str, str]) -> None:
    pan, text = case
    doc = json.dumps({"request": {"body": text, "note": "x"}})
    out = mask_text(doc)[0]
    assert not leaked(out, pan) and not leaked(json.loads(out)["request"]["body"], pan), (doc, out)


@pytest.mark.parametrize("body", [
    " 4111111111111111 CVCAa =",          # what the corpus found: a key and "=" at the end of a JSON string
    "=cvv 4111111111111111%22:", "x %22CVCAa:", "CVCAa:\"\n pin=", "cvv: '", "pin=\\",
])
def test_a_key_at_the_end_of_a_json_string_does_not_eat_the_next_quotes(body: str) -> None:
    """Between the quote that closes a string and the one opening the next lies no value: masking it broke the JSON."""
    doc = json.dumps({"request": {"body": body, "note": "x"}, "cvv": "123", "t": "pin='9876'"})
    out = json.loads(mask_text(doc)[0])
    assert out["request"]["note"] == "x" and "4111111111111111" not in out["request"]["body"], out
    assert out["cvv"] != "123" and "9876" not in out["t"], out   # real values next to it are still dropped


@CORPUS
@given(st.sampled_from(TEST_PANS), st.sampled_from((track1, track2)), st.text(max_size=20))
def test_track_data_is_dropped_whole(pan: str, track, around: str) -> None:  # noqa: ANN001
    text = f"{around} {track(pan)} {around}"
    for out in (mask_text(text)[0], mask_same_length(text.encode())[0]):
        assert not leaked(out, pan) and not track_leaked(out), (text, out)


@CORPUS
@given(secret_text())
def test_sensitive_values_are_dropped(case: tuple[str, str]) -> None:
    value, text = case
    out = mask_text(text)[0]
    same = mask_same_length(text.encode())[0].decode()
    key_and_rest = text.split(value, 1)
    assert value not in out.replace(key_and_rest[0], "", 1), (text, out)
    assert value not in same.replace(key_and_rest[0], "", 1), (text, same)


def _streamed(data: bytes, cuts: list[int]) -> bytes:
    m = StreamMasker()
    out = bytearray()
    last = 0
    for c in [*sorted(cuts), len(data)]:
        out += m.feed(data[last:c])
        last = c
    out += m.finish()
    return bytes(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pan_text(), st.integers(0, 2000), st.lists(st.integers(0, 4000), max_size=4))
def test_no_pan_survives_a_stream_split_anywhere(case: tuple[str, str], pad: int, cuts: list[int]) -> None:
    pan, text = case
    data = b"x" * pad + text.encode() + b"y" * 700
    cuts = [c % (len(data) + 1) for c in cuts]
    out = _streamed(data, cuts)
    assert len(out) == len(data) and not leaked(out, pan), (text, cuts)


def test_a_pan_split_across_two_reads_at_every_offset() -> None:
    """Every split point of a payload around each shape of one PAN (separators, track 2, LLVAR)."""
    for shape in ("4111 1111 1111 1111", "4111%201111%201111%201111", "4111111111111111",
                  track2("4111111111111111"), "0200" + "7234054128C08000164111111111111111000000000000012500"):
        data = b"a" * 900 + b"card: " + shape.encode() + b" ok " + b"b" * 900
        want = mask_same_length(data)[0]
        for cut in range(850, 980):
            out = _streamed(data, [cut])
            assert out == want and not leaked(out, "4111111111111111"), (shape, cut)
