"""The HTTP server: static UI, the OpenAPI document, and the JSON endpoints of the route table.

Why the standard library's threading server: the API serves a few people looking at one recording,
every answer is one store query or a handful, and the store serialises queries anyway; a framework
would add dependencies without adding capacity. What a framework would give is done here explicitly:
bounded request size and concurrency, socket timeouts (a slow client cannot hold a thread forever),
one JSON error shape, and no method but GET/HEAD (the API is read-only).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from kprobe.api.auth import authorized
from kprobe.api.errors import ApiError, bad_request
from kprobe.api.openapi import document
from kprobe.api.params import parse_query
from kprobe.api.routes import PREFIX, Context, match
from kprobe.otel.http_limits import HttpLimits, LimitedHandler, LimitedHTTPServer

log = logging.getLogger("kprobe.api")

UI_DIR = Path(__file__).resolve().parent / "ui"
MAX_URL = 8192
MAX_BODY = 65536
MAX_CONCURRENT = 16
LOCAL = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
}


class _Server(LimitedHTTPServer):
    """At most MAX_CONNECTIONS clients at once, each request read and answered within its deadline
    (otel/http_limits.py): a client holding connections open, or sending a byte now and then,
    cannot take the API's threads."""

    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that broke off, or spoke plain HTTP to the TLS port: one log line, not a traceback."""
        log.info("request from %s failed: %s", client_address[0], traceback.format_exc(limit=1).strip().splitlines()[-1])


MAX_CONNECTIONS = 32
REQUEST_DEADLINE_S = 120.0   # a whole request, its answer included: a `why` over a busy window takes seconds


class Handler(LimitedHandler):
    """One request. ``server.api`` (an ``ApiServer``) holds the context, token and limits."""

    protocol_version = "HTTP/1.1"
    server_version = "kprobe"
    # the idle and whole-request limits come from the server's HttpLimits (LimitedHandler.setup)

    @property
    def api(self) -> ApiServer:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.client_address[0], *args)

    # --- methods -------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self._drain_body()
        self._send_json(ApiError(405, "method_not_allowed", "the API is read-only: use GET").to_json(), 405,
                        extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed  # noqa: N815

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the standard library raises itself (malformed request line, too many headers): JSON
        like every other error, and always with a status line (it answers HTTP/0.9 without one)."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        body = ApiError(code, "bad_request" if code < 500 else "internal", message or "bad request").to_json()
        self._send_json(body, code, head=self.command == "HEAD")

    # --- plumbing ------------------------------------------------------------------------------------
    def _drain_body(self) -> bool:
        """Read and drop a request body (GET has none); False (and the connection closes) when too big."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return False
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return False
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return False
        if n:
            self.rfile.read(n)
        return True

    def _send(self, status: int, body: bytes, ctype: str, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, head: bool = False,
                   extra: dict[str, str] | None = None) -> None:
        hdrs = {"Cache-Control": "no-store"} | (extra or {})
        self._send(status, msgspec.json.encode(payload), "application/json", head, hdrs)

    def _error(self, e: ApiError, head: bool) -> None:
        extra = {"WWW-Authenticate": 'Bearer realm="kprobe"'} if e.status == 401 else None
        self._send_json(e.to_json(), e.status, head, extra)

    def _serve(self, head: bool) -> None:
        if not self._drain_body():
            self._error(ApiError(413, "body_too_large", "requests carry no body (or a small one)"), head)
            return
        if len(self.path) > MAX_URL:
            self.close_connection = True
            self._error(ApiError(414, "uri_too_long", f"the URL is longer than {MAX_URL} bytes"), head)
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if path in ("/", "/ui"):
            self._send(302, b"", "text/plain", head, {"Location": "/ui/"})
            return
        if path.startswith("/ui/"):
            self._static(path[4:] or "index.html", head)
            return
        if path == PREFIX + "/openapi.json":
            self._send_json(self.api.openapi, head=head)
            return
        if not path.startswith(PREFIX + "/"):
            self._error(ApiError(404, "not_found", "no such path: the API is under /api/v1, the UI under /ui/"),
                        head)
            return
        if not self.api.allows(self.client_address[0], self.headers.get("Authorization")):
            self._error(ApiError(401, "unauthorized", "send Authorization: Bearer <token> (the token is in "
                                                      "DATA/api-token, readable by the recording's owner)"), head)
            return
        self._api(path, parts.query, head)

    def _api(self, path: str, query: str, head: bool) -> None:
        t0 = time.perf_counter()
        if not self.api.slots.acquire(timeout=30):
            self._error(ApiError(503, "busy", "too many requests at once; retry"), head)
            return
        try:
            found = match(path)
            if found is None:
                raise ApiError(404, "not_found", f"no endpoint {path[:80]}; see {PREFIX}/openapi.json")
            route, path_args = found
            try:
                q = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=40)
            except ValueError:
                raise bad_request("too many query parameters") from None
            args = parse_query(route.params, q)
            payload = route.handler(self.api.ctx, args, path_args)
        except ApiError as e:
            self._error(e, head)
            return
        except Exception as e:  # a store that stopped answering is 503; anything else is our bug: 500
            from kprobe.query.client import QueryError

            if isinstance(e, QueryError | ConnectionError | TimeoutError):
                self._error(ApiError(503, "store_unavailable", f"the store did not answer: {e}"), head)
                return
            log.error("internal error on %s: %s", path, traceback.format_exc())
            self._error(ApiError(500, "internal", "internal error (logged by the server)"), head)
            return
        finally:
            self.api.slots.release()
        took = (time.perf_counter() - t0) * 1e3
        self._send_json(payload, head=head, extra={"Server-Timing": f"app;dur={took:.1f}"})

    def _static(self, name: str, head: bool) -> None:
        f = self.api.ui_files.get(name)
        if f is None:
            self._error(ApiError(404, "not_found", f"no UI file {name[:80]}"), head)
            return
        body = f.read_bytes()
        ctype = CONTENT_TYPES.get(f.suffix, "application/octet-stream")
        self._send(200, body, ctype, head, {"Cache-Control": "no-cache"})


class ApiServer:
    """The listening server; ``start()`` serves in a background thread, ``stop()`` ends it."""

    def __init__(self, ctx: Context, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 allow_local_without_token: bool = False, tls: tuple[Path, Path] | None = None,
                 request_timeout: float = 15.0) -> None:
        if token is None and not allow_local_without_token:
            raise ValueError("a token is required unless local requests without one are allowed")
        self.ctx = ctx
        self.token = token
        self.allow_local = allow_local_without_token
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.ui_files = {p.name: p for p in UI_DIR.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}
        self.counts: dict[str, int] = {}
        limits = HttpLimits(max_connections=MAX_CONNECTIONS, request_deadline_s=max(REQUEST_DEADLINE_S, request_timeout),
                            idle_timeout_s=request_timeout)
        self.httpd = _Server((host, port), Handler, limits, self._count)
        self.httpd.api = self  # type: ignore[attr-defined]
        self.scheme = "http"
        if tls:
            tctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tctx.minimum_version = ssl.TLSVersion.TLSv1_2
            tctx.load_cert_chain(str(tls[0]), str(tls[1]))
            # the handshake runs in the request's thread, under its timeout, not in the accept loop
            self.httpd.socket = tctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        self.openapi = document(f"{self.scheme}://{self._netloc()}/")
        self._thread: threading.Thread | None = None

    def _count(self, name: str) -> None:
        """Connections refused over the cap, requests cut at their deadline: counted and logged."""
        n = self.counts[name] = self.counts.get(name, 0) + 1
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
            log.warning("API %s: %d so far (limits: %d connections, %.0f s per request)", name.replace("_", " "), n,
                        self.httpd.limits.max_connections, self.httpd.limits.request_deadline_s)

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else str(self.host)
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self._netloc()}"

    def ui_url(self, with_token: bool = True) -> str:
        """The UI's address; the token rides in the fragment, which browsers never send to a server."""
        return f"{self.url}/ui/" + (f"#token={self.token}" if with_token and self.token else "")

    def allows(self, client: str, header: str | None) -> bool:
        if self.token and authorized(header, self.token):
            return True
        return self.allow_local and client in LOCAL

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kprobe-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
