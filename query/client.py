"""Reach the store: through a running recorder's socket, or by opening it directly.

Commands never need to know which: ``open_store(data_dir)`` picks the socket
when a recorder answers on it, else opens chDB (and says so when it is locked).
The recorder's read socket runs every query read-only (enforced there, see
agent/control.py); ``open_store(data_dir, write=True)`` picks its write socket,
for the few commands that write (``kprobe sql --write``, analysis rows).
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from kprobe.agent import unix_socket
from kprobe.agent.control import SOCKET_NAME, WRITE_SOCKET_NAME
from kprobe.sinks.json_rows import parse_json_each_row


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        with unix_socket.address(Path(self._path)) as addr:
            s.connect(addr)
        self.sock = s


class QueryError(RuntimeError):
    pass


class QueryRefused(QueryError):
    """The recorder refused the query in read-only mode."""


@dataclass
class RemoteStore:
    socket_path: Path

    def _request(self, method: str, url: str, body: bytes | None = None) -> bytes:
        conn = _UnixHTTPConnection(str(self.socket_path))
        try:
            conn.request(method, url, body=body)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            try:
                msg = json.loads(data)["error"]
            except Exception:
                msg = data.decode(errors="replace")
            raise (QueryRefused if resp.status == 403 else QueryError)(msg)
        return data

    def query(self, sql: str, fmt: str = "JSONEachRow", settings: dict[str, str] | None = None) -> bytes:
        """Run ``sql``; ``settings`` go beside it (the read socket takes safe ones only, the text is not touched)."""
        params = {"format": fmt, **{f"setting.{k}": str(v) for k, v in (settings or {}).items()}}
        return self._request("POST", f"/sql?{urlencode(params)}", sql.encode())

    def query_rows(self, sql: str) -> list[dict]:
        return parse_json_each_row(self.query(sql))

    def live_stats(self) -> dict:
        return json.loads(self._request("GET", "/stats"))

    def close(self) -> None:
        pass


def recorder_socket(data_dir: Path, write: bool = False) -> Path | None:
    """The (read or write) socket path if a recorder is answering on it."""
    path = data_dir / (WRITE_SOCKET_NAME if write else SOCKET_NAME)
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        with unix_socket.address(path) as addr:
            s.connect(addr)
        return path
    except OSError:
        return None
    finally:
        s.close()


def _kafka_status(data_dir: Path) -> bool:
    path = data_dir / "status.json"
    try:
        return path.exists() and "kafka" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


@dataclass
class KafkaOnlyStore:
    """A data directory of a scale-out (`record --kafka`) session: counters, but no local rows."""

    data_dir: Path

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        raise QueryError(f"{self.data_dir} holds a scale-out recording (events went to Kafka): query the "
                         "ClickHouse server that `kprobe dataflow ingest` fills")

    def query_rows(self, sql: str) -> list[dict]:
        self.query(sql)
        return []

    def close(self) -> None:
        pass


def open_store(data_dir: Path, write: bool = False):  # -> RemoteStore | ChdbStore | KafkaOnlyStore
    """The store of ``data_dir``: the recorder's socket (its write socket with ``write``), else chDB opened here."""
    sock = recorder_socket(data_dir, write)
    if sock is not None:
        return RemoteStore(sock)
    if not (data_dir / "chdb").exists():
        if _kafka_status(data_dir):
            return KafkaOnlyStore(data_dir)
        raise QueryError(f"no recording in {data_dir}: run `kprobe record --data {data_dir}` first")
    from kprobe.sinks.chdb_store import ChdbStore

    try:
        return ChdbStore(data_dir)
    except Exception as e:
        raise QueryError(str(e)) from e
