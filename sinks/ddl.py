"""ClickHouse DDL for kprobe's tables, shaped to what the target server supports.

The tables are declared in :mod:`kprobe.schemas.store_tables`; this module only renders them.

The same table definitions must create working tables on chDB (ClickHouse 26.x in-process, every
feature) and on old servers such as Debian's clickhouse-server 18.16, which rejects CODEC, TTL,
skip indexes and DateTime64, and has LowCardinality only behind an experimental setting. Rather
than keep two schemas, tables are declared once in the modern form and :func:`create_table_sql`
drops or rewrites what the server cannot take. Nothing that matters is lost on old servers:
codecs and skip indexes only save space and time, and retention is enforced by the caller dropping
whole time partitions (every table is partitioned by its timestamp), which works everywhere.

Version thresholds are conservative (a feature is assumed only from the release that made it
generally available); an older threshold than necessary merely costs some compression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from kprobe.schemas.store_tables import Column, TableDef

__all__ = [
    "ServerFeatures",
    "adapt_type",
    "create_table_sql",
    "partition_step_ns",
    "session_settings",
]

# (major, minor) from which each feature is used without experimental settings.
_CODECS_SINCE = (19, 1)  # per-column compression codecs
_TTL_SINCE = (19, 6)  # table and column TTL
_LOW_CARDINALITY_SINCE = (19, 3)  # LowCardinality no longer behind allow_experimental_*
# LowCardinality behind allow_experimental_low_cardinality_type=1 from here (the type arrived in
# 18.12; 18.16 is the oldest release it is exercised on here). Worth it: 18.16 stores the agent's
# repeated strings ~30 % cheaper (server CPU per 1M syscall rows 1.0-1.15 s -> 0.61-0.80 s).
_LOW_CARDINALITY_EXPERIMENTAL_SINCE = (18, 16)
_SKIP_INDEXES_SINCE = (20, 1)  # data-skipping indexes no longer experimental
_DATETIME64_SINCE = (20, 1)

_NS_PER_MINUTE = 60 * 1_000_000_000
_NS_PER_SECOND = 1_000_000_000
_SKIP_INDEX_GRANULARITY = 4
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerFeatures:
    """What the target ClickHouse accepts in CREATE TABLE and column types."""

    codecs: bool
    ttl: bool
    low_cardinality: bool
    skip_indexes: bool
    datetime64: bool
    low_cardinality_experimental: bool = False  # LowCardinality needs allow_experimental_low_cardinality_type

    @classmethod
    def from_version(cls, version: str) -> ServerFeatures:
        """Features of a server from its ``SELECT version()`` string ("18.16.1", "v24.8.4.13-lts")."""
        match = _VERSION.match(version)
        if match is None:
            raise ValueError(f"not a ClickHouse version: {version!r}")
        mm = (int(match.group(1)), int(match.group(2)))
        return cls(
            codecs=mm >= _CODECS_SINCE,
            ttl=mm >= _TTL_SINCE,
            low_cardinality=mm >= _LOW_CARDINALITY_EXPERIMENTAL_SINCE,
            low_cardinality_experimental=_LOW_CARDINALITY_EXPERIMENTAL_SINCE <= mm < _LOW_CARDINALITY_SINCE,
            skip_indexes=mm >= _SKIP_INDEXES_SINCE,
            datetime64=mm >= _DATETIME64_SINCE,
        )

    @classmethod
    def full(cls) -> ServerFeatures:
        """chDB or any current server: everything is available."""
        return cls(codecs=True, ttl=True, low_cardinality=True, skip_indexes=True, datetime64=True)


def _quote(identifier: str) -> str:
    """Backquote a name so reserved words and odd names are safe on every version."""
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _split_args(inner: str) -> list[str]:
    """Split a type's argument list on top-level commas (quotes and nesting respected)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    for i, ch in enumerate(inner):
        if quote is not None:
            if ch == quote and inner[i - 1] != "\\":
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _parse_type(type_: str) -> tuple[str, list[str] | None]:
    """``Array(LowCardinality(String))`` -> ("Array", ["LowCardinality(String)"]); no args -> None."""
    text = type_.strip()
    paren = text.find("(")
    if paren < 0:
        return text, None
    if not text.endswith(")"):
        raise ValueError(f"malformed ClickHouse type: {type_!r}")
    return text[:paren].strip(), _split_args(text[paren + 1 : -1])


# Old-server replacements for leaf types that they do not know.
_OLD_LEAF_TYPES = {"Bool": "UInt8", "IPv4": "UInt32", "IPv6": "FixedString(16)"}
_UNREPRESENTABLE = {"Map", "Object", "JSON", "Variant", "Dynamic", "Int128", "UInt128", "Int256", "UInt256"}
# Types whose arguments are themselves types (others, like FixedString(16) or Enum8('a'=1), are not).
_TYPE_WRAPPERS = {"Array", "Nullable", "Tuple", "LowCardinality", "Nested"}


def adapt_type(type_: str, features: ServerFeatures) -> str:
    """Rewrite a modern column type for a server that lacks some types.

    LowCardinality(T) becomes T before 18.16 (from 18.16 to 19.3 it is kept, as an experimental
    type: see :func:`session_settings`), DateTime64 becomes
    Int64 ticks (its storage; callers pass integers), Bool becomes UInt8. Types with no faithful
    old form (Map, JSON, 128/256-bit integers) raise ValueError rather than silently change data.
    """
    name, args = _parse_type(type_)
    if name == "LowCardinality" and not features.low_cardinality:
        if args is None or len(args) != 1:
            raise ValueError(f"LowCardinality takes one type: {type_!r}")
        return adapt_type(args[0], features)
    if name == "DateTime64" and not features.datetime64:
        return "Int64"
    if not features.datetime64:  # the types below arrived with or after DateTime64 (20.x)
        if name in _UNREPRESENTABLE:
            raise ValueError(f"{name} has no equivalent on this ClickHouse server: {type_!r}")
        if name in _OLD_LEAF_TYPES and args is None:
            return _OLD_LEAF_TYPES[name]
    if args is None:
        return type_.strip()
    if name in _TYPE_WRAPPERS:
        return f"{name}({', '.join(_adapt_wrapped(a, features) for a in args)})"
    return type_.strip()


def _adapt_wrapped(arg: str, features: ServerFeatures) -> str:
    """Adapt one argument of Array/Tuple/...; Tuple and Nested may name elements ("x UInt8")."""
    head, _, rest = arg.partition(" ")
    if rest and _IDENTIFIER.match(head) and not head.endswith(")"):
        name, _ = _parse_type(rest)
        if name and name[0].isupper():
            return f"{head} {adapt_type(rest, features)}"
    return adapt_type(arg, features)


def session_settings(features: ServerFeatures) -> dict[str, int]:
    """Settings to pass with every query/insert of the sink on a server with these features.

    Only settings that exist on that server are named: an old server rejects unknown settings.
    Modern servers refuse an insert block that spans more than 100 partitions by default; with
    10-minute partitions a backfill or replay batch of a day is normal, so the limit is lifted.
    """
    settings: dict[str, int] = {}
    if features.low_cardinality_experimental:  # CREATE TABLE needs it; harmless on other queries
        settings["allow_experimental_low_cardinality_type"] = 1
    if features.ttl:  # max_partitions_per_insert_block exists from 19.x on; 18.16 has no limit
        settings["max_partitions_per_insert_block"] = 0
    return settings


def partition_step_ns(table: TableDef) -> int:
    """Width of one partition in nanoseconds: partition value = ts // step (what retention drops)."""
    return table.partition_minutes * _NS_PER_MINUTE


def _validate(table: TableDef) -> dict[str, Column]:
    """Catch definition mistakes here, with the table's name, rather than as a server error."""
    if not _IDENTIFIER.match(table.name):
        raise ValueError(f"table name must be a plain identifier: {table.name!r}")
    if not table.columns:
        raise ValueError(f"{table.name}: no columns")
    by_name: dict[str, Column] = {}
    for col in table.columns:
        if col.name in by_name:
            raise ValueError(f"{table.name}: duplicate column {col.name!r}")
        by_name[col.name] = col
    ts = by_name.get(table.ts_column)
    if ts is None:
        raise ValueError(f"{table.name}: ts_column {table.ts_column!r} is not a column")
    if ts.type.strip() != "UInt64":
        raise ValueError(f"{table.name}: ts_column must be UInt64 nanoseconds, not {ts.type}")
    if table.partition_minutes <= 0:
        raise ValueError(f"{table.name}: partition_minutes must be positive")
    if table.ttl_seconds is not None and table.ttl_seconds <= 0:
        raise ValueError(f"{table.name}: ttl_seconds must be positive or None")
    return by_name


def _column_sql(col: Column, features: ServerFeatures) -> str:
    sql = f"{_quote(col.name)} {adapt_type(col.type, features)}"
    if col.codec and features.codecs:
        sql += f" CODEC({col.codec})"
    return sql


def _index_sql(expression: str, type_: str) -> str:
    """``INDEX idx_<expr> <expr> TYPE <type> GRANULARITY n``; a type may carry its own GRANULARITY."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", expression).strip("_") or "expr"
    granularity = "" if "GRANULARITY" in type_.upper() else f" GRANULARITY {_SKIP_INDEX_GRANULARITY}"
    return f"INDEX {_quote('idx_' + slug)} {expression} TYPE {type_}{granularity}"


def _key_sql(exprs: tuple[str, ...], columns: dict[str, Column]) -> str:
    """ORDER BY key: column names are quoted, anything else is taken as an expression."""
    parts = [_quote(e) if e in columns else e for e in exprs]
    if not parts:
        return "tuple()"
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"


def create_table_sql(table: TableDef, features: ServerFeatures, database: str | None = None) -> str:
    """CREATE TABLE IF NOT EXISTS for ``table`` that the server with ``features`` accepts."""
    columns = _validate(table)
    ts = _quote(table.ts_column)
    body = [_column_sql(c, features) for c in table.columns]
    if features.skip_indexes:
        body += [_index_sql(expr, type_) for expr, type_ in table.skip_indexes]
    target = _quote(table.name) if database is None else f"{_quote(database)}.{_quote(table.name)}"
    lines = [
        f"CREATE TABLE IF NOT EXISTS {target}",
        "(",
        ",\n".join(f"    {item}" for item in body),
        ")",
        "ENGINE = MergeTree",
        f"PARTITION BY intDiv({ts}, {partition_step_ns(table)})",
        f"ORDER BY {_key_sql(table.order_by, columns)}",
    ]
    if table.ttl_seconds is not None and features.ttl:
        lines.append(
            f"TTL toDateTime(intDiv({ts}, {_NS_PER_SECOND})) + toIntervalSecond({table.ttl_seconds})"
        )
        if features.datetime64:  # ttl_only_drop_parts (20.x+): expire whole parts, never rewrite
            lines.append("SETTINGS ttl_only_drop_parts = 1")
    return "\n".join(lines)


def missing_columns_sql(tables: Iterable[TableDef], existing: Iterable[tuple[str, str]],
                        features: ServerFeatures) -> list[str]:
    """ALTERs for every table in ``tables`` given the (table, column) pairs the store has (system.columns)."""
    have: dict[str, list[str]] = {}
    for table, name in existing:
        have.setdefault(table, []).append(name)
    return [sql for d in tables for sql in add_columns_sql(d, have.get(d.name, []), features)]


def add_columns_sql(table: TableDef, have: list[str], features: ServerFeatures) -> list[str]:
    """ALTER statements that give a table created by an older kprobe the columns it lacks.

    Each goes right after its predecessor in the definition, so the table's column
    order stays the definition's (inserts name no columns). Rows written before
    read the type's default (0, '') for them.
    """
    present = set(have)
    target = _quote(table.name)
    out, prev = [], None
    for col in table.columns:
        if col.name not in present:
            where = f" AFTER {_quote(prev)}" if prev is not None else " FIRST"
            out.append(f"ALTER TABLE {target} ADD COLUMN {_column_sql(col, features)}{where}")
        prev = col.name
    return out
