"""`kprobe serve` (the HTTP/JSON API and web UI) and `kprobe record --serve` (the same server in the
recorder's process: ``add_record_args``/``start_with_recorder``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from kprobe.cli.common import add_data_arg, die, store_at

EPILOG = """\
examples:
  kprobe serve --data /tmp/kprobe-demo          the demo's recording at http://127.0.0.1:8642/ui/
  kprobe serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
  curl -H "Authorization: Bearer $(cat DATA/api-token)" http://127.0.0.1:8642/api/v1/incidents

The API is read-only. Every /api/v1 request needs the bearer token kept in DATA/api-token (created
mode 0600 on first start); the printed UI address carries it in the URL fragment, which the browser
keeps and never sends. /api/v1/openapi.json describes every endpoint. While `kprobe record` runs on
DATA the server asks the recorder (its socket); otherwise it opens the store itself, and other
commands then wait for the server to stop (a chDB directory belongs to one process).
"""


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _add_server_args(p: argparse.ArgumentParser, flag: str) -> None:
    p.add_argument(flag, dest="serve_listen", type=_listen, metavar="HOST:PORT",
                   default=(("127.0.0.1", 8642) if flag == "--listen" else None),
                   help="address of the API and UI" + (" (default: 127.0.0.1:8642)" if flag == "--listen" else
                                                        ", e.g. 127.0.0.1:8642 (default: no API)"))
    p.add_argument("--allow-local-without-token", action="store_true",
                   help="answer requests from 127.0.0.1/::1 without the bearer token (other clients still need it)")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM; needs --tls-key)")
    p.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="HTTP/JSON API (OpenAPI) and web UI: incidents, causal chains, timeline",
                       description="Serve the recording read-only over HTTP: JSON API and web UI.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    _add_server_args(p, "--listen")
    p.set_defaults(fn=run)
    return p


def add_record_args(p: argparse.ArgumentParser) -> None:
    """`kprobe record --serve HOST:PORT`: the same server, in the recorder's process, on its live store."""
    _add_server_args(p, "--serve")


def start_server(args: argparse.Namespace, store: object, data: Path):  # -> ApiServer
    # lazy: the API's handlers import the causal engine and numpy (~0.2 s of `kprobe --help`)
    from kprobe.api.auth import load_or_create_token
    from kprobe.api.routes import Context
    from kprobe.api.server import ApiServer

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    host, port = args.serve_listen
    token = load_or_create_token(data)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    srv = ApiServer(Context(store, data), host, port, token, args.allow_local_without_token, tls).start()  # type: ignore[arg-type]
    print(f"kprobe: API on {srv.url}/api/v1 (OpenAPI: {srv.url}/api/v1/openapi.json)", file=sys.stderr)
    print(f"kprobe: UI: {srv.ui_url()}", file=sys.stderr)
    return srv


def start_with_recorder(args: argparse.Namespace, session: object):  # -> ApiServer | None
    """Start the API inside `kprobe record` when --serve was given (embedded mode only)."""
    if getattr(args, "serve_listen", None) is None:
        return None
    if getattr(session, "store", None) is None:
        print("kprobe: --serve needs the embedded store (not with --kafka); API not started", file=sys.stderr)
        return None
    from kprobe.query.client import RemoteStore, recorder_socket

    # through the recorder's own socket, as the CLI asks it: a query first flushes what is older than
    # 0.25 s (fresh answers) and `stats` shows the live counters
    sock = recorder_socket(args.data)
    store = RemoteStore(sock) if sock is not None else session.store
    try:
        return start_server(args, store, args.data)
    except (OSError, ValueError) as e:
        print(f"kprobe: API not started: {e}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    with store_at(args.data) as store:
        try:
            srv = start_server(args, store, args.data)
        except (OSError, ValueError) as e:
            return die(f"cannot serve: {e}")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.2):     # short waits: Python runs signal handlers only between bytecodes
            pass
        srv.stop()
    return 0
