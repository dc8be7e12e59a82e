"""kprobe's own log output never carries card data: an error that quotes a span or a payload
(a failed insert, a decoder error) is masked before any handler formats it."""

from __future__ import annotations

import logging

import pytest

from kprobe.masking import install_log_masking


def test_log_messages_arguments_and_tracebacks_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    install_log_masking()
    install_log_masking()  # idempotent
    log = logging.getLogger("kprobe.otel.intake.test")
    with caplog.at_level(logging.INFO):
        log.info("span sink failed on %s", {"card.number": "4111 1111 1111 1111", "cvv": "737"})
        try:
            raise ValueError("insert failed: row ('5555555555554444', ';4111111111111111=25121011234567890?')")
        except ValueError:
            log.exception("otlp/http span sink failed on %d spans", 1)
    text = caplog.text
    assert "411111******1111" in text and "555555******4444" in text and "[track data removed]" in text
    assert "4111 1111 1111 1111" not in text and "5555555555554444" not in text and "737" not in text
    assert "2512101" not in text
