"""`kprobe why --span/--trace` and `kprobe incidents` on spans from the real OTel SDK, real kernel.

Ground truth comes from the instrumented workload itself (span wall time minus its own CPU time
is the time it waited for the CPU it shares with a pinned real-time hog), never from our store.
The CLI runs as a separate process and reaches the store through the running recorder's socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import otel_span_beside_hog

pytestmark = pytest.mark.kernel



def _written(otel_session, mono_ns: int, timeout: float) -> bool:
    """Everything committed before mono_ns is in the store (the queue may already hold newer batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if otel_session.recorder.stats.last_written_mono_ns >= mono_ns:
            return True
        time.sleep(0.01)
    return False


def _kprobe(data: Path, *args: str) -> dict | list:
    out = subprocess.run([sys.executable, "-m", "kprobe", *args, "--data", str(data), "--json"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_why_span_names_the_preempting_hog_with_the_measured_delay(otel_session) -> None:
    truth, hog_pid, waited = otel_span_beside_hog(otel_session, hog_s=20.0)
    assert _written(otel_session, time.monotonic_ns(), 20.0), "recorder did not write what it drained in 20 s"

    got = _kprobe(otel_session.data_dir, "why", "--span", truth["span_id"])
    rc = got["root_cause"]
    assert rc["kind"] == "cpu_preemption", got
    assert rc["culprit"]["pid"] == hog_pid, got
    assert abs(rc["delay_ns"] - waited) <= 0.2 * waited, (rc["delay_ns"], waited)
    head = got["chain"][0]
    assert head["kind"] == "span" and head["span_id"] == truth["span_id"], head
    assert (head["pid"], head["tid"], head["service"]) == (truth["pid"], truth["tid"], "risk-engine")
    assert got["victim"]["tid"] == truth["tid"]

    by_trace = _kprobe(otel_session.data_dir, "why", "--trace", truth["trace_id"])
    assert by_trace["span"]["span_id"] == truth["span_id"]
    assert by_trace["root_cause"]["culprit"]["pid"] == hog_pid

    found = _kprobe(otel_session.data_dir, "incidents", "--slow-ms", "300")
    ids = [i["id"] for i in found]
    assert f"span-{truth['span_id']}" in ids, found
    via_incident = _kprobe(otel_session.data_dir, "why", "--incident", f"span-{truth['span_id']}")
    assert via_incident["root_cause"]["culprit"]["pid"] == hog_pid


def test_why_span_refuses_unknown_and_malformed_ids(otel_session) -> None:
    for args, msg in ((["--span", "00112233445566ff"], "no span"), (["--span", "xyz"], "16 hex digits"),
                      (["--trace", "12"], "32 hex digits"), (["--incident", "nonsense"], "not an incident id")):
        out = subprocess.run([sys.executable, "-m", "kprobe", "why", "--data", str(otel_session.data_dir), *args],
                             capture_output=True, text=True, timeout=240)
        assert out.returncode == 2 and msg in out.stderr, (args, out.stderr)
