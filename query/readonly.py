"""Read-only queries on the embedded store: a chDB session of their own, opened with ``readonly = 1``.

Why a session and not a SETTINGS clause appended to the text: a statement that already carries
SETTINGS (the causal engine's UNION ALL reads do) cannot take a second one, and text appended by a
client protects nothing against a client that does not append it. A session opened read-only is
enforced by ClickHouse for whatever the text says: no INSERT or DDL, no table functions (``file()``,
``url()``, ``executable()``, ``Python()``), no ``INSERT INTO FUNCTION``, no change of a setting.

One session per query (about 1 ms): a statement such as ``USE system`` changes its session, and a
session shared between clients would carry it into the next one's query. The engine behind the
sessions is the one the store already runs (same process, same data directory).

Settings: under ``readonly = 1`` a SETTINGS clause may only repeat the session's values. The
session is opened with the safe settings the statement carries (:func:`~kprobe.query.sqlguard.statement_settings`)
and those the caller passes beside it, and with a default ``max_execution_time``; a setting
outside :data:`~kprobe.query.sqlguard.SAFE_SETTINGS` is never pre-applied, so ClickHouse refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from kprobe.query.sqlguard import SqlRefused, check_read_only, check_settings, statement_settings

DEFAULT_TIMEOUT_S = 60.0


class ReadOnlyRefused(SqlRefused):
    """The engine refused the statement in read-only mode (ClickHouse READONLY)."""


def is_readonly_error(message: str) -> bool:
    return "(READONLY)" in message or "in readonly mode" in message


def session_settings(sql_settings: Mapping[str, str], extra: Mapping[str, str],
                     timeout_s: float | None = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """What the read-only session is opened with: readonly, the default timeout, the caller's, the statement's."""
    out = {"readonly": "1"}
    if timeout_s is not None:
        out.update(max_execution_time=f"{timeout_s:g}", timeout_overflow_mode="throw")
    out.update(check_settings(dict(extra)))
    out.update(sql_settings)  # the statement's own values win: ClickHouse compares them with the session's
    out["readonly"] = "1"
    return out


def query_read_only(chdb_path: Path, sql: str, fmt: str, settings: Mapping[str, str] | None = None,
                    timeout_s: float | None = DEFAULT_TIMEOUT_S) -> bytes:
    """Run one reading statement on a fresh read-only session of the store at ``chdb_path``.

    SqlRefused for a statement the guard refuses, ReadOnlyRefused for one the engine refuses in
    read-only mode; other engine errors are raised as RuntimeError.
    """
    from chdb import session  # lazy: ~0.5 s the first time; the caller's process has it loaded already

    toks = check_read_only(sql)
    opts = session_settings(statement_settings(toks), settings or {}, timeout_s)
    conn = session.Session(f"{chdb_path}?" + "&".join(f"{k}={v}" for k, v in opts.items()))
    try:
        res = conn.query(sql, fmt)
    except Exception as e:
        if is_readonly_error(str(e)):
            raise ReadOnlyRefused(str(e)) from e
        raise RuntimeError(str(e)) from e
    finally:
        conn.close()
    return res.bytes() if hasattr(res, "bytes") else bytes(str(res), "utf-8")


def socket_reader(chdb_path: Path, before: Callable[[], object] | None = None) -> Callable[[str, str, dict[str, str]], bytes]:
    """The read callable of the recorder's control socket (agent/control.py): the guard first, so a
    refused query costs nothing, then ``before`` (the recorder's flush), then a read-only session."""
    def read(sql: str, fmt: str, settings: dict[str, str]) -> bytes:
        check_read_only(sql)
        if before is not None:
            before()
        return query_read_only(chdb_path, sql, fmt, settings)

    return read
