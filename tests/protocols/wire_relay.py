"""A TCP relay that records what crosses it: the test stand-in for payload capture.

Why a relay and not the kernel probe here: the decoder tests need the exact bytes of real
client/server conversations (psycopg and PostgreSQL, an HTTP client and server, FIX and ISO
8583 peers) split the way real sockets split them, with the time each piece arrived. The relay
forwards every ``recv`` unchanged and logs ``(direction, bytes, time_ns)``: the same shape the
agent gets from payload capture (one record per read/write), without needing root.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from kprobe.protocols import Direction


@dataclass
class Connection:
    """The recorded pieces of one relayed connection, in arrival order."""

    pieces: list[tuple[Direction, bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: threading.Event = field(default_factory=threading.Event)

    def log(self, d: Direction, data: bytes) -> None:
        with self.lock:
            self.pieces.append((d, data, time.time_ns()))

    def stream(self, d: Direction) -> bytes:
        with self.lock:
            return b"".join(p for dd, p, _ in self.pieces if dd == d)


class Relay:
    """Listen on 127.0.0.1:<free port>, forward each accepted connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[Connection] = []
        self._threads: list[threading.Thread] = []
        self._stop = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection()
            self.connections.append(conn)
            done = threading.Barrier(2, action=conn.closed.set)
            for src, dst, d in ((client, server, Direction.TO_SERVER), (server, client, Direction.TO_CLIENT)):
                t = threading.Thread(target=self._pump, args=(src, dst, d, conn, done), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, d: Direction, conn: Connection,
              done: threading.Barrier) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                conn.log(d, data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            try:
                done.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def replay(decoder, conn: Connection, close: bool = True) -> list:
    """Feed a recorded connection to a decoder in its recorded pieces; all exchanges."""
    out = []
    with conn.lock:
        pieces = list(conn.pieces)
    for d, data, ts in pieces:
        out += decoder.feed(d, data, ts)
    if close:
        out += decoder.close(pieces[-1][2] if pieces else 0)
    return out


def replay_split(decoder, conn: Connection, sizes: list[int]) -> list:
    """Feed the same bytes re-split: each direction cut into pieces of the sizes given, cycling."""
    out = []
    with conn.lock:
        pieces = list(conn.pieces)
    i = 0
    for d, data, ts in pieces:
        pos = 0
        while pos < len(data):
            n = max(1, sizes[i % len(sizes)])
            i += 1
            out += decoder.feed(d, data[pos : pos + n], ts)
            pos += n
    out += decoder.close(pieces[-1][2] if pieces else 0)
    return out
