"""The token check against ClickHouse's own parser: no text the guard lets through reads a file.

``file(path)`` as a plain function is the one read ClickHouse's ``readonly = 1`` allows, so the
guard alone stands between a read-only client and any file the recorder can read. Here hypothesis
wraps the call in quotes, heredocs, comments, escapes and quoted names that a tokenizer could read
differently from ClickHouse's lexer, and every statement that passes the guard runs on a real
read-only chDB session: a marker file's content must never come back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprobe.query.readonly import query_read_only
from kprobe.query.sqlguard import SqlRefused

MARKER = "kprobe-secret-7f3a9c"

PIECES = ["'", '"', "`", "$$", "$a$", "\\", "--", "#", "# ", "#!", "/*", "*/", "\n", " ", ",", "(", ")", ";",
          "''", "``", '""', "x", "1", "SELECT", "UNION ALL SELECT", "AS", "file", "FROM", "--\n", "\\'", "\\`"]


@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kprobe.sinks.chdb_store import ChdbStore

    d = tmp_path_factory.mktemp("guard")
    ChdbStore(d).close()
    return d / "chdb"


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("secret") / "secret.txt"
    p.write_text(MARKER)
    return p


def leaks(chdb_path: Path, sql: str) -> bool:
    try:
        out = query_read_only(chdb_path, sql, "CSV")
    except (SqlRefused, RuntimeError):
        return False
    return MARKER in out.decode(errors="replace")


KNOWN = [
    "SELECT $$it's$$, file('{p}') -- '",
    "SELECT $a$'$a$, file('{p}') -- '",
    "SELECT 'a\\'', file('{p}') -- '",
    "SELECT `file`('{p}')",
    'SELECT "file"(\'{p}\')',
    "SELECT file/**/('{p}')",
    "SELECT file ('{p}')",
    "SELECT /* x */ file('{p}')",
    "WITH file('{p}') AS s SELECT s",
    "SELECT * FROM (SELECT file('{p}'))",
]


@pytest.mark.parametrize("template", KNOWN)
def test_known_shapes_are_refused(chdb_path: Path, secret: Path, template: str) -> None:
    sql = template.format(p=secret)
    assert not leaks(chdb_path, sql), sql
    with pytest.raises(SqlRefused):
        query_read_only(chdb_path, sql, "CSV")


def test_the_marker_is_readable_without_the_guard(chdb_path: Path, secret: Path) -> None:
    """Ground truth: the engine's readonly = 1 alone does return the file (else the test above proves nothing)."""
    from chdb import session

    s = session.Session(f"{chdb_path}?readonly=1")
    try:
        assert MARKER in str(s.query(f"SELECT file('{secret}')", "CSV"))
    finally:
        s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(st.sampled_from(PIECES), max_size=6), after=st.lists(st.sampled_from(PIECES), max_size=6),
       quote=st.sampled_from(["file", "`file`", '"file"', "file ", "file/**/"]))
def test_no_wrapping_lets_file_through(chdb_path: Path, secret: Path, before: list[str], after: list[str],
                                       quote: str) -> None:
    sql = f"SELECT {''.join(before)} {quote}('{secret}') {''.join(after)}"
    assert not leaks(chdb_path, sql), sql
