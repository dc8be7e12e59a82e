"""settlement-svc: an UNinstrumented TCP service that appends each settlement to a ledger and fsyncs it.

Protocol: one connection per request, one line ``SETTLE <payment-id> <amount>\\n``, answer
``OK <payment-id>\\n`` after the ledger line is durable. Single-threaded on purpose: like many
ledger writers it serialises requests. Reports ``{"event": "listening", "port"}`` once and
``{"event": "settled", "payment", "start_ns", "end_ns", "tid"}`` per request on stdout (for the
orchestrator and tests; the service itself knows nothing of kprobe or OpenTelemetry).

    python -m kprobe.demo.settlement_svc --name settlement-svc --port 0 --ledger /tmp/ledger.log
"""

from __future__ import annotations

import argparse
import os
import socket
import threading

from kprobe.demo.proc import emit, now_ns, set_comm, wait_go


def serve(listener: socket.socket, ledger_fd: int, max_requests: int | None) -> None:
    done = 0
    while max_requests is None or done < max_requests:
        conn, _ = listener.accept()
        t0 = now_ns()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            parts = data.decode(errors="replace").split()
            pid = parts[1] if len(parts) >= 2 else "?"
            amount = parts[2] if len(parts) >= 3 else "0"
            os.write(ledger_fd, f"{t0} settle payment={pid} amount={amount}\n".encode())
            os.fsync(ledger_fd)
            try:
                conn.sendall(f"OK {pid}\n".encode())
            except OSError:
                pass  # the caller gave up already (timeout): the ledger entry stands
        emit(event="settled", payment=pid, start_ns=t0, end_ns=now_ns(), tid=threading.get_native_id())
        done += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="settlement-svc", help="process name (comm) (default: %(default)s)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port, reported on stdout")
    ap.add_argument("--ledger", required=True, help="ledger file (appended, fsync'd per request)")
    ap.add_argument("--max-requests", type=int, default=None)
    args = ap.parse_args(argv)
    set_comm(args.name)
    wait_go()
    fd = os.open(args.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with socket.create_server((args.host, args.port), backlog=64) as listener:
        emit(event="listening", port=listener.getsockname()[1], pid=os.getpid(), tid=threading.get_native_id())
        serve(listener, fd, args.max_requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
