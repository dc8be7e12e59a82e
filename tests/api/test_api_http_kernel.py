"""`kprobe serve` over real HTTP on the demo's recording: auth, the CLI's answers, paging, level of detail, 4xx.

Each answer that the CLI also gives is compared with the CLI's own function on the same store (the
API must not be a second implementation), and every malformed request must get a 4xx quickly.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kprobe.api.timeline_levels import LADDER
from tests.api.conftest import SERVICE, TOKEN, Served, api_get

pytestmark = pytest.mark.kernel


def _get(s: Served, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    return api_get(s.url, path, token)


def _raw(s: Served, data: bytes, read_timeout: float = 10.0) -> bytes:
    host, port = s.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=read_timeout) as c:
        c.sendall(data)
        out = b""
        while chunk := c.recv(65536):      # these answers close the connection: read to the end
            out += chunk
        return out


def test_every_endpoint_needs_the_token(served: Served) -> None:
    from kprobe.api.routes import PREFIX, ROUTES

    for r in ROUTES:
        path = PREFIX + r.path.replace("{id}", "span-0123456789abcdef").replace("{trace_id}", "0" * 32)
        for token in (None, "wrong"):
            status, body = _get(served, path, token)
            assert status == 401 and body["error"]["code"] == "unauthorized", (path, status, body)
    status, doc = _get(served, "/api/v1/openapi.json", None)     # the document itself is public
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {p.removeprefix(PREFIX) for p in doc["paths"]} == {r.path for r in ROUTES}


def test_incidents_and_why_are_the_clis_answers(served: Served) -> None:
    from kprobe.causal.incidents import incidents
    from kprobe.causal.target import Target, explain

    cli = [i.to_json() for i in incidents(served.store, 100_000_000, 50)]    # `kprobe incidents --slow-ms 100`
    pages, cursor = [], None
    while True:
        status, page = _get(served, "/api/v1/incidents?slow_ms=100&limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        pages += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == cli
    failed = served.demo.failed
    status, a = _get(served, f"/api/v1/incidents/span-{failed['span_id']}")
    assert status == 200, a
    _, sa = explain(served.store, Target(span_id=failed["span_id"]))
    assert sa is not None
    want = sa.to_json()
    assert a["root_cause"] == want["root_cause"] and a["chain"] == want["chain"]
    assert a["root_cause"]["culprit"]["pid"] == served.demo.pid("nightly-recon")
    assert a["chain_text"][0] == sa.span.head() and len(a["chain_text"]) == len(a["chain"])
    assert a["text"] == sa.render()
    status, by_trace = _get(served, f"/api/v1/why?trace={failed['trace_id']}")
    assert status == 200 and by_trace["root_cause"] == a["root_cause"]


def test_events_pages_cover_every_row_once(served: Served) -> None:
    from kprobe.query.events import EventQuery, fetch

    pid = served.demo.pid(SERVICE)
    want = fetch(served.store, EventQuery(pid=pid, types=["offcpu", "syscall"], limit=100_000))
    got, cursor = [], None
    while True:
        q = f"/api/v1/events?pid={pid}&type=offcpu,syscall&limit=37" + (f"&cursor={cursor}" if cursor else "")
        status, page = _get(served, q)
        assert status == 200, page
        got += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    key = lambda r: (r["type"], r["tid"], r["ts"], r["end_ts"])  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want)) and len(got) == len(want)
    assert all(r["text"] for r in got)


def test_timeline_sums_when_zoomed_out_and_draws_the_victims_slice_at_50us(served: Served) -> None:
    svc = served.demo.pid(SERVICE)
    failed = served.demo.failed
    status, whole = _get(served, f"/api/v1/timeline?from={failed['start_ns']}&to={failed['end_ns']}&pid={svc}"
                                 f"&width=800")
    assert status == 200, whole
    b = whole["bucket_ns"]    # the narrowest 1-2-5 ladder value at least a pixel wide, cells of absolute time
    assert b in LADDER and b >= (failed["end_ns"] - failed["start_ns"]) / 800 > b / 2.5, whole["bucket_ns"]
    assert whole["bucket0_ns"] == failed["start_ns"] // b * b - failed["start_ns"]
    assert all(it["t1"] - it["t0"] >= whole["bucket_ns"] for it in whole["items"])
    offcpu = [it for it in whole["items"] if it["kind"] == "offcpu"]
    assert offcpu, whole["items"]
    longest = max(offcpu, key=lambda it: it["t1"] - it["t0"])
    mid = failed["start_ns"] + (longest["t0"] + longest["t1"]) // 2
    status, zoom = _get(served, f"/api/v1/timeline?from={mid - 25_000}&to={mid + 25_000}&pid={svc}")
    assert status == 200, zoom
    inside = [it for it in zoom["items"] if it["kind"] == "offcpu" and it["ts"] == longest["ts"]]
    assert inside and inside[0]["t0"] < 0 and inside[0]["t1"] > 50_000, zoom["items"]


def test_search_finds_trace_span_pid_and_payment(served: Served) -> None:
    failed = served.demo.failed
    for q, kind in ((failed["trace_id"], "trace"), (failed["span_id"], "span"),
                    (str(served.demo.pid(SERVICE)), "pid"), (f"span-{failed['span_id']}", "incident")):
        status, res = _get(served, f"/api/v1/search?q={q}")
        assert status == 200 and kind in [m["kind"] for m in res["matches"]], (q, res)
    payment = [p for p in served.demo.result["payments"] if not p["ok"]][0]["payment"]
    _, res = _get(served, f"/api/v1/search?q={payment}")
    assert any(m["kind"] == "attribute" and m["id"] == failed["span_id"] for m in res["matches"]), res


@pytest.mark.parametrize("path, code", [
    ("/api/v1/events?pid=abc", 400), ("/api/v1/events?nope=1", 400), ("/api/v1/events?limit=100000", 400),
    ("/api/v1/events?pid=1&pid=2", 400), ("/api/v1/events?cursor=AAAA", 400), ("/api/v1/events?from=yesterday", 400),
    ("/api/v1/why", 400), ("/api/v1/why?span=zz", 400), ("/api/v1/why?pid=1&span=0123456789abcdef", 400),
    ("/api/v1/why?span=0123456789abcdef", 404), ("/api/v1/traces/" + "0" * 32, 404),
    ("/api/v1/incidents/bogus", 400), ("/api/v1/timeline?from=2&to=1", 400), ("/api/v1/timeline", 400),
    ("/api/v1/timeline?from=1&to=2000&pid=0", 400), ("/api/v1/nowhere", 404),
    ("/api/v1/events?" + "&".join(f"x{i}=1" for i in range(100)), 400),
])
def test_malformed_requests_get_a_clear_4xx(served: Served, path: str, code: int) -> None:
    status, body = _get(served, path)
    assert status == code and body["error"]["message"], (path, status, body)


def test_oversized_or_odd_requests_get_4xx_and_never_hang(served: Served) -> None:
    t0 = time.monotonic()
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/api/v1/events?pid=" + "1" * 9000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert c.getresponse().status == 414
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("POST", "/api/v1/incidents", body=b"{}", headers={"Authorization": f"Bearer {TOKEN}"})
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    big = _raw(served, b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413"), big[:80]
    garbage = _raw(served, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64 + b"\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400") and b'"bad_request"' in garbage, garbage[:200]
    # a client that sends half a request and stops is cut off after the request timeout (1 s here)
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert slow.recv(1024) == b""
        assert time.monotonic() - started < 5
    assert time.monotonic() - t0 < 30


def test_a_client_cannot_hold_every_connection(served: Served) -> None:
    """Connections beyond the cap are answered 503 at once and counted; the API answers again once they go."""
    from kprobe.api.server import MAX_CONNECTIONS

    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)   # accepted: each holds a thread until the idle timeout
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            assert extra.recv(1024).startswith(b"HTTP/1.1 503"), "the connection over the cap was served"
    finally:
        for c in held:
            c.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _get(served, "/api/v1/extent")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError("the API did not answer again after the connections closed")


def test_the_ui_is_served_and_the_token_file_is_private(served: Served, tmp_path: Path) -> None:
    from kprobe.api.auth import TOKEN_FILE, load_or_create_token

    with urllib.request.urlopen(served.url + "/ui/", timeout=10) as r:
        html = r.read().decode()
        assert r.status == 200 and "app.js" in html and "default-src 'self'" in r.getheader("Content-Security-Policy")
    token = load_or_create_token(tmp_path)
    assert (tmp_path / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(tmp_path) == token and len(token) >= 40


def test_tls_when_given_a_certificate(served: Served, tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    from kprobe.api.routes import Context
    from kprobe.api.server import ApiServer

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    srv = ApiServer(Context(served.store, served.demo.data), token=TOKEN, tls=(cert, key), request_timeout=1.0).start()
    try:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(srv.url + "/api/v1/extent", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["from_ns"] > 0
        with pytest.raises((urllib.error.URLError, ConnectionError)):     # plain HTTP to the TLS port: no answer
            urllib.request.urlopen(srv.url.replace("https://", "http://") + "/api/v1/extent", timeout=5)
    finally:
        srv.stop()
