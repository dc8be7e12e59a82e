"""What a read-only query may be, checked on the statement's tokens: the second line behind ClickHouse's readonly.

The first line is the engine itself: read-only queries run on a chDB session opened with
``readonly = 1`` (see :mod:`kprobe.query.readonly`), which refuses INSERT, DDL, table functions
(``file()``, ``url()``, ``remote()``, ``executable()``, ``Python()``), ``INSERT INTO FUNCTION`` and
any change of a setting. Three things get through it and are refused here by name:

* ``INTO OUTFILE``: ClickHouse writes the file even in read-only mode;
* the *regular* function ``file(path)``: it reads any file as the recorder, which keeps
  CAP_DAC_READ_SEARCH (clickhouse-local does not confine it to a user-files directory);
* ``KILL QUERY``: allowed for one's own user, and every query in the embedded engine runs as
  the same user as the recorder's inserts.

Beyond those, a statement must start with a reading keyword (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN,
EXISTS) and be alone, and no table function with effects outside the store may be called, so that a
readonly bug in the engine alone does not open a write. The check reads tokens, not text: string
literals, quoted identifiers and comments cannot hide or fake a keyword.

The SETTINGS clauses a statement carries are read here too (:func:`statement_settings`): under
``readonly = 1`` ClickHouse refuses any change of a setting, so the server opens the session with
the values the statement asks for when they are on :data:`SAFE_SETTINGS`, and ClickHouse then sees
no change. The statement is never rewritten; a setting not on the list stays a change, and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<line_comment>(?:--|\#)[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<heredoc>\$(?P<tag>\w*)\$.*?\$(?P=tag)\$)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<quoted>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
  | (?P<number>\d[\w.]*(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)

_KINDS = ("ws", "line_comment", "block_comment", "heredoc", "string", "quoted", "number", "word", "punct")
READING_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})

# Functions that reach outside the store: files, the network, other programs, the host process.
# ClickHouse's readonly = 1 refuses the table functions among them; ``file`` as a plain function it does not.
OUTSIDE_FUNCTIONS = frozenset(n.lower() for n in (
    "file", "fileCluster", "url", "urlCluster", "s3", "s3Cluster", "gcs", "cosn", "oss", "remote", "remoteSecure",
    "cluster", "clusterAllReplicas", "executable", "executablePool", "mysql", "postgresql", "jdbc", "odbc", "hdfs",
    "hdfsCluster", "azureBlobStorage", "azureBlobStorageCluster", "mongodb", "redis", "sqlite", "python", "input",
    "iceberg", "icebergS3", "icebergLocal", "icebergAzure", "icebergHDFS", "deltaLake", "deltaLakeLocal", "hudi",
    "ytsaurus", "arrowFlight", "catboostEvaluate",
))

# Settings a read-only statement may carry (and a client may send): output shape, limits and the
# optimiser. None of them names a file, a program or an address, or loosens readonly.
SAFE_SETTINGS = frozenset({
    "max_execution_time", "timeout_overflow_mode", "max_threads", "max_block_size", "max_result_rows",
    "max_result_bytes", "result_overflow_mode", "max_rows_to_read", "max_bytes_to_read", "read_overflow_mode",
    "max_rows_to_group_by", "group_by_overflow_mode", "max_memory_usage", "join_use_nulls", "join_algorithm",
    "date_time_output_format", "extremes", "session_timezone", "output_format_decimal_trailing_zeros",
})
SAFE_SETTING_PREFIXES = ("optimize_", "query_plan_", "output_format_json_", "output_format_pretty_")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")


class SqlRefused(ValueError):
    """A query the read-only mode does not run."""


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, quoted, number, punct
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper()


def tokens(sql: str) -> list[Token]:
    """The statement's tokens without white space and comments (nested /* */ comments included)."""
    out: list[Token] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:  # unreachable: ``punct`` matches any character
            raise SqlRefused(f"cannot read the query at offset {pos}")
        kind = next(k for k in _KINDS if m.group(k) is not None)
        if kind == "block_comment":
            pos = _skip_block_comment(sql, pos)
            continue
        pos = m.end()
        if kind in ("ws", "line_comment"):
            continue
        if kind == "heredoc":
            kind = "string"
        if kind == "punct" and m.group() in "'\"`$":
            raise SqlRefused("unterminated quote")
        out.append(Token(kind, m.group()))
    return out


def _skip_block_comment(sql: str, pos: int) -> int:
    depth, i = 0, pos
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlRefused("unterminated /* comment")


def check_read_only(sql: str) -> list[Token]:
    """The statement's tokens if it is one reading statement, else SqlRefused saying why."""
    toks = tokens(sql)
    while toks and toks[-1].text == ";":
        toks.pop()
    if not toks:
        raise SqlRefused("empty query")
    if any(t.text == ";" for t in toks):
        raise SqlRefused("one statement per query")
    first = next((t for t in toks if t.text != "("), toks[0])
    if first.kind != "word" or first.upper not in READING_STATEMENTS:
        raise SqlRefused(f"{first.text.upper()} is not a reading statement (read-only: "
                         f"{', '.join(sorted(READING_STATEMENTS))} only)")
    for i, t in enumerate(toks):
        if t.kind == "word" and t.upper == "OUTFILE":
            raise SqlRefused("INTO OUTFILE writes a file as the recorder's user")
        name = _name(t)
        if name is not None and name.lower() in OUTSIDE_FUNCTIONS and i + 1 < len(toks) and toks[i + 1].text == "(":
            raise SqlRefused(f"{name}() reaches outside the store (files, network or programs)")
    return toks


def _name(t: Token) -> str | None:
    """What a word or a quoted identifier names (`file`( and "file"( call file() too)."""
    if t.kind == "word":
        return t.text
    if t.kind == "quoted":
        q = t.text[0]
        return t.text[1:-1].replace(q + q, q).replace("\\" + q, q)
    return None


def safe_setting(name: str) -> bool:
    return name in SAFE_SETTINGS or name.startswith(SAFE_SETTING_PREFIXES)


def statement_settings(toks: list[Token]) -> dict[str, str]:
    """``name = value`` pairs of the statement's SETTINGS clauses (any depth) that are safe to pre-apply.

    The first value of a name wins; a second, different one stays a change ClickHouse refuses.
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(toks):
        if toks[i].kind == "word" and toks[i].upper == "SETTINGS":
            i += 1
            while i + 2 < len(toks) and toks[i].kind == "word" and toks[i + 1].text == "=":
                name, value = toks[i].text, _literal(toks[i + 2])
                if value is not None and safe_setting(name):
                    out.setdefault(name, value)
                i += 3
                if i < len(toks) and toks[i].text == ",":
                    i += 1
                    continue
                break
            continue
        i += 1
    return out


def _literal(t: Token) -> str | None:
    if t.kind == "string":
        text = t.text[1:-1]
    elif t.kind in ("number", "word"):
        text = t.text
    else:
        return None
    return text if _SAFE_VALUE.match(text) else None


def check_settings(settings: dict[str, str]) -> dict[str, str]:
    """Settings a client sends beside a read-only query: only SAFE_SETTINGS, plain values."""
    for name, value in settings.items():
        if not safe_setting(name):
            raise SqlRefused(f"setting {name!r} may not be set in read-only mode")
        if not _SAFE_VALUE.match(str(value)):
            raise SqlRefused(f"setting {name!r}: value {value!r} is not a plain number or word")
    return {k: str(v) for k, v in settings.items()}
