"""Statement shapes: literals out, runs of white space folded to one space (inside quoted
identifiers too), placeholders and identifiers otherwise kept (the tokenizer only stops where a
token can start; a lone space is not a token)."""

from __future__ import annotations

import pytest

from kprobe.protocols.sqlshape import normalise


@pytest.mark.parametrize(("sql", "shape"), [
    ("UPDATE pgbench_accounts SET abalance = abalance + 4096 WHERE aid = 77;",
     "UPDATE pgbench_accounts SET abalance = abalance + $? WHERE aid = $?"),
    ("SELECT  a,\tb\nFROM t -- note 42\n WHERE x IN (1, 2,  3)", "SELECT a, b FROM t WHERE x IN ($?...)"),
    ("SELECT 'it''s  42', E'\\x41', b'0101', N'x', $tag$ 9 9 $tag$, $$ 7 $$", "SELECT $?, $?, $?, $?, $?, $?"),
    ('SELECT "My  Col", "x""y"  FROM "T 1" WHERE c = $1', 'SELECT "My Col", "x""y" FROM "T 1" WHERE c = $1'),
    ("SELECT 1.5e3, .5, 2. , t1.c2, x2 /* 5 */ FROM t", "SELECT $?, $?, $? , t1.c2, x2 FROM t"),
    ("  SELECT 1 ;  ", "SELECT $?"),
    ("select\u00a0\u00a01", "select $?"),
])
def test_shapes(sql: str, shape: str) -> None:
    assert normalise(sql) == shape


def test_no_literal_survives_in_a_long_statement() -> None:
    sql = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'name {i}', {i}.5)" for i in range(300))
    out = normalise(sql, limit=100_000)
    assert "name" not in out and not any(ch.isdigit() for ch in out)
