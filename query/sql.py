"""`kprobe sql` is read-only unless the user opts in: the guard every ad-hoc query goes through.

The store runs inside the recorder, as root. A query that writes (INSERT, DROP, ALTER), reads or
writes files (``file()``, ``INTO OUTFILE``), reaches the network (``url()``, ``remote()``, ``s3()``)
or runs programs (``executable()``) would do so with the recorder's privileges. ClickHouse's own
``readonly = 1`` refuses all of these but ``INTO OUTFILE``, which it still writes, so that one is
refused here by name. ``max_execution_time`` bounds what one query costs the recorder.

The settings are appended on a line of their own (a trailing ``--`` comment cannot swallow them);
a query that already carries a SETTINGS clause then fails to parse instead of overriding them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OUTFILE = re.compile(r"outfile", re.IGNORECASE)
DEFAULT_TIMEOUT_S = 60.0


class SqlRefused(ValueError):
    """A query the read-only mode does not run."""


@dataclass(frozen=True)
class SqlPolicy:
    write: bool = False
    timeout_s: float | None = DEFAULT_TIMEOUT_S

    def apply(self, sql: str) -> str:
        """The query as the store must run it, or SqlRefused."""
        body = sql.strip().rstrip(";").rstrip()
        if not body:
            raise SqlRefused("empty query")
        if self.write:
            return body  # opted in: the statement runs as written (INSERT ... VALUES takes no SETTINGS after it)
        if _OUTFILE.search(body):
            raise SqlRefused("INTO OUTFILE writes a file as the recorder's user: refused in read-only mode "
                             "(use --write to opt in)")
        settings = ["readonly = 1"]
        if self.timeout_s is not None:
            if self.timeout_s <= 0:
                raise SqlRefused(f"timeout must be > 0 s, got {self.timeout_s}")
            settings += [f"max_execution_time = {self.timeout_s:g}", "timeout_overflow_mode = 'throw'"]
        return f"{body}\nSETTINGS {', '.join(settings)}"


def explain_failure(message: str) -> str:
    """A ClickHouse error in read-only mode, said so the user knows about --write."""
    if "readonly mode" in message or "(READONLY)" in message:
        return f"{message}\n`kprobe sql` is read-only by default (no INSERT, DDL, file(), url(), ...): add --write to opt in"
    if "expected '('" in message and "SETTINGS" in message:
        return f"{message}\n(INSERT ... VALUES is a write: `kprobe sql` is read-only by default, add --write)"
    return message
