"""Card numbers written the ways payment systems write them, for the masking tests of every
path (tests/masking, tests/otel, tests/replay), and the check that none survived.

Why shared: issue 18 asks for the same corpus in every sink; a shape added here is tried by
every test at once. Only the schemes' public test numbers are used.
"""

from __future__ import annotations

import base64
import random
import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from hypothesis import strategies as st

#: Public test PANs (Visa, Mastercard 5- and 2-series, Amex, Discover, JCB, Diners, UnionPay, Maestro).
TEST_PANS = (
    "4111111111111111", "5555555555554444", "378282246310005", "6011111111111117",
    "3530111333300000", "30569309025904", "4012888888881881", "5105105105105100",
    "371449635398431", "6011000990139424", "3566002020360505", "38520000023237",
    "4222222222222", "2223003122003222", "6200000000000005", "6759649826438453",
)  # fmt: skip

SEPARATORS = (" ", ".", "-", "/", "_", "%20", "+", "  ")
# How cards are grouped when written: 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4, 13-digit 4-4-5.
GROUPINGS = {13: [(4, 4, 5)], 14: [(4, 6, 4), (4, 4, 6)], 15: [(4, 6, 5), (4, 4, 4, 3)],
             16: [(4, 4, 4, 4)], 19: [(4, 4, 4, 4, 3)]}  # fmt: skip
TRACK_TAIL = "25121011234567890"  # expiry 2512, service code 101, discretionary data
SECRETS = ("123", "9876")
# Context text never holds digits, so a stray test PAN can only come from the shape itself.
_CONTEXT_CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?()[]{}<>'\"=&#@*\t\n-_/éü€中"
_BOUNDARY = (" ", ":", "=", '"', ",", "\n", "(", "[", "'", ">", "|")
_SEP_RE = re.compile(r"%20|%2[bBdDeEfF]|%5[fF]|[ \t.\-/_+\x00]")


def grouped(pan: str, sep: str, groups: tuple[int, ...]) -> str:
    out, i = [], 0
    for g in groups:
        out.append(pan[i : i + g])
        i += g
    return sep.join(out)


def written(pan: str, sep: str | None, style: int = 0) -> str:
    """``pan`` as a person or a system writes it: plain, or grouped with ``sep``."""
    if sep is None:
        return pan
    shapes = GROUPINGS.get(len(pan), [(4,) * (len(pan) // 4) + ((len(pan) % 4,) if len(pan) % 4 else ())])
    return grouped(pan, sep, shapes[style % len(shapes)])


def iso8583(pan: str, bitmap_end: str = "C08000") -> str:
    """ASCII ISO 8583: MTI, primary bitmap, field 2 (LLVAR), field 3, field 4."""
    return "0200" + "7234054128" + bitmap_end + f"{len(pan):02d}" + pan + "000000" + "000000012500"


def track2(pan: str) -> str:
    return f";{pan}={TRACK_TAIL}?"


def track1(pan: str) -> str:
    return f"%B{pan}^CARDHOLDER/TEST^{TRACK_TAIL}000000?"


def leaked(output: str | bytes, pan: str) -> bool:
    """Could ``pan`` be read back from ``output``? Separators and URL/base64 encodings are undone
    first, so ``4111 1111 ...`` or ``NDExMTEx...`` count as leaks."""
    if isinstance(output, bytes):
        texts = [output.decode("latin-1"), output.decode("utf-16-le", "ignore"), output.decode("utf-16-be", "ignore")]
    else:
        texts = [output]
    for text in list(texts):
        texts += [unquote(text), unquote_plus(text)]
        for m in re.finditer(r"[A-Za-z0-9+/]{16,}={0,2}", text):
            try:
                texts.append(base64.b64decode(m.group() + "=" * (-len(m.group()) % 4)).decode("latin-1"))
            except ValueError:
                pass
    return any(pan in _SEP_RE.sub("", t) or pan in t.replace("\x00", "") for t in texts)


def track_leaked(output: str | bytes) -> bool:
    """Track data must be dropped whole: its expiry/service code/discretionary data too."""
    text = output.decode("latin-1") if isinstance(output, bytes) else output
    return TRACK_TAIL in text or "CARDHOLDER" in text


context = st.text(alphabet=_CONTEXT_CHARS, max_size=40)


@st.composite
def pan_text(draw: st.DrawFn) -> tuple[str, str]:
    """(pan, text holding it): every separator, grouping, wrapper and encoding of a test PAN."""
    pan = draw(st.sampled_from(TEST_PANS))
    sep = draw(st.sampled_from((None, *SEPARATORS)))
    core = written(pan, sep, draw(st.integers(0, 3)))
    wrap = draw(st.sampled_from(("plain", "json", "url", "url_plus", "iso8583", "field2", "zero_pad", "amount", "kv",
                                 "xml")))
    if wrap == "json":
        core = '{"card":{"number":"' + core + '","amount":12.5}}'
    elif wrap == "url":
        core = "card=" + quote(core, safe="") + "&amount=12"
    elif wrap == "url_plus":
        core = "q=" + quote_plus(core)
    elif wrap == "iso8583":
        core = iso8583(pan, draw(st.sampled_from(("C08000", "A18018", "008000"))))
    elif wrap == "field2":  # field 2 logged with its LLVAR prefix (16-digit PANs: see masking/scan.py)
        core = f"DE2={len(pan):02d}{pan}" if len(pan) == 16 else iso8583(pan)
    elif wrap == "zero_pad":
        core = pan.rjust(19, "0") if len(pan) < 19 else pan
    elif wrap == "amount":
        core = core + (sep or " ") + "1250"
    elif wrap == "kv":
        core = draw(st.sampled_from(("card_number", "PAN", "acct", "cardNo"))) + "=" + core
    elif wrap == "xml":
        core = "<CardNumber>" + core + "</CardNumber>"
    return pan, draw(context) + draw(st.sampled_from(_BOUNDARY)) + core + draw(st.sampled_from(_BOUNDARY)) + draw(context)


@st.composite
def secret_text(draw: st.DrawFn) -> tuple[str, str]:
    """(secret value, text where a sensitive key holds it)."""
    value = draw(st.sampled_from(SECRETS))
    key = draw(st.sampled_from(("cvv", "CVV2", "cvvCode", "securityCode", "card.cvv2", "card_security_code",
                                "Security Code", "user.pin_number", "PIN", "cvc", "x-card-cid", "csc")))
    form = draw(st.sampled_from(('"{k}":"{v}"', '"{k}": {v}', "{k}={v}", "{k}: {v}", "<{k}>{v}</{k}>",
                                 "%22{k}%22%3A%22{v}%22", "{k} => '{v}'")))
    if form.startswith("<") and " " in key:
        key = key.replace(" ", "")
    return value, draw(context) + " " + form.format(k=key, v=value) + "; " + draw(context)


def corpus(n: int, seed: int = 18) -> list[tuple[str, str]]:
    """A fixed list of (pan, text) shapes for tests that cannot use hypothesis (end to end)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        pan = TEST_PANS[i % len(TEST_PANS)]
        sep = (None, *SEPARATORS)[i % (len(SEPARATORS) + 1)]
        core = written(pan, sep, i)
        wrap = i % 5
        if wrap == 1:
            core = '{"pan_holder":"' + core + '"}'
        elif wrap == 2:
            core = "card=" + quote(core, safe="")
        elif wrap == 3:
            core = iso8583(pan)
        elif wrap == 4:
            core = f"charge {core} EUR"
        out.append((pan, "".join(rnd.choice("abcdef xyz:") for _ in range(5)) + " " + core))
    return out
