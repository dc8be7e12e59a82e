"""`kprobe sql` is read-only unless the user opts in: the path every ad-hoc query goes through.

The store runs inside the recorder, as root. A query that writes (INSERT, DROP, ALTER), reads or
writes files (``file()``, ``INTO OUTFILE``), reaches the network (``url()``, ``remote()``, ``s3()``)
or runs programs (``executable()``) would do so with the recorder's privileges. So a read-only query
runs on an engine session opened with ``readonly = 1`` (:mod:`kprobe.query.readonly`), behind a
token check for what ClickHouse lets through (:mod:`kprobe.query.sqlguard`), and
``max_execution_time`` bounds what it costs the recorder. Both are enforced where the query runs:
in the recorder for its socket (agent/control.py), here when the store is opened locally. The
statement is never rewritten, so one that carries its own SETTINGS runs as written.

``--write`` goes to the recorder's write socket (or the local store) and runs the statement as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kprobe.query.sqlguard import SqlRefused, check_read_only

__all__ = ["DEFAULT_TIMEOUT_S", "SqlPolicy", "SqlRefused", "explain_failure", "run_sql"]

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SqlPolicy:
    write: bool = False
    timeout_s: float | None = DEFAULT_TIMEOUT_S

    def apply(self, sql: str) -> str:
        """The statement to run (trimmed, unchanged otherwise), or SqlRefused before anything is sent."""
        body = sql.strip().rstrip(";").rstrip()
        if not body:
            raise SqlRefused("empty query")
        if self.write:
            return body  # opted in: the statement runs as written
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise SqlRefused(f"timeout must be > 0 s, got {self.timeout_s}")
        check_read_only(body)  # said here early; the side that runs it checks again
        return body

    def settings(self) -> dict[str, str]:
        """What goes beside a read-only statement: its timeout."""
        if self.write or self.timeout_s is None:
            return {}
        return {"max_execution_time": f"{self.timeout_s:g}", "timeout_overflow_mode": "throw"}


def run_sql(store: Any, sql: str, fmt: str, policy: SqlPolicy) -> bytes:
    """Run ``sql`` (already through ``policy.apply``) on a RemoteStore, a local ChdbStore or a KafkaOnlyStore."""
    from kprobe.query.client import RemoteStore

    if isinstance(store, RemoteStore):
        return store.query(sql, fmt, policy.settings())
    if policy.write or not hasattr(store, "path"):  # written as is; a KafkaOnlyStore says why it has no rows
        return store.query(sql, fmt)
    from kprobe.query.readonly import query_read_only

    return query_read_only(store.path / "chdb", sql, fmt, {}, timeout_s=policy.timeout_s)


def explain_failure(message: str) -> str:
    """A refusal or a ClickHouse error in read-only mode, said so the user knows about --write."""
    if "read-only" in message or "readonly mode" in message or "(READONLY)" in message:
        return (f"{message}\n`kprobe sql` is read-only by default (no INSERT, DDL, file(), url(), INTO OUTFILE, "
                "changed settings, ...): add --write to opt in")
    return message
