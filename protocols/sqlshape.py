"""SQL statement shapes: literals out, so statements group (and no value is ever stored).

``SELECT * FROM acct WHERE id = 42 AND name = 'Bob'`` becomes
``SELECT * FROM acct WHERE id = $? AND name = $?``; ``IN (1, 2, 3)`` becomes ``IN ($?...)``.
Bind placeholders (``$1``) are kept: they already are the shape. Comments are removed, runs of
white space become one space. This is what PostgreSQL's own ``pg_stat_statements`` does with
its query ids, so a kprobe statement shape can be set beside its ``query`` column.
"""

from __future__ import annotations

import re

__all__ = ["normalise", "operation"]

_TOKEN = re.compile(
    r"""
    (?=[-/'eEbBxXnN$\d."\s])  # where a token can start: every other position fails at once
    (?:
    (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>[eEbBxXnN]?'(?:[^']|'')*'?)
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
  | (?P<param>\$\d+)
  | (?P<number>(?<![\w$.])(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w.]))
  | (?P<ident>"(?:[^"]|"")*"?)
  | (?P<space>\s{2,}|[^\S ])  # a lone space stays as it is: no token (most of them)
    )
    """,
    re.X | re.S,
)
_IN_LIST = re.compile(r"\(\s*\$\?(?:\s*,\s*\$\?)+\s*\)")


def normalise(sql: str, limit: int = 2048) -> str:
    """The statement's shape (literals replaced by ``$?``), at most ``limit`` characters."""
    parts: list[str] = []
    last = 0
    for m in _TOKEN.finditer(sql):
        parts.append(sql[last : m.start()])
        last = m.end()
        kind = m.lastgroup
        if kind == "comment":
            parts.append(" ")
        elif kind in ("string", "dollar", "number"):
            parts.append("$?")
        elif kind == "space":
            parts.append(" ")
        else:
            parts.append(m.group())
    parts.append(sql[last:])
    shape = _IN_LIST.sub("($?...)", "".join(parts))
    shape = re.sub(r" {2,}", " ", shape).strip().rstrip(";").strip()
    return shape[:limit]


def operation(shape: str) -> str:
    """The first keyword, upper case (SELECT, INSERT, BEGIN...), or '' when there is none."""
    word = shape.split(None, 1)[0] if shape.split() else ""
    return word.upper() if word.isalpha() else ""
