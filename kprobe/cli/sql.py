"""`kprobe sql`: one SQL query against the store, read-only and bounded unless --write (see query/sql.py)."""

from __future__ import annotations

import argparse
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.sql import SqlPolicy, SqlRefused, explain_failure, run_sql


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sql", help="run SQL against the store (tables: see `kprobe stats`); read-only unless --write",
                       description="Run one SQL query. Read-only by default (ClickHouse readonly = 1: no INSERT, DDL, "
                                   "file(), url(), executable(), INTO OUTFILE), bounded by --timeout.")
    add_data_arg(p)
    p.add_argument("--write", action="store_true",
                   help="allow statements that write (INSERT, ALTER, DROP, file()/url() table functions) and run "
                        "them as written, without the timeout: they run with the recorder's privileges")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds a read-only query may run before it is stopped (default: %(default)s)")
    p.add_argument("--format", default="PrettyCompact", help="ClickHouse output format (default: %(default)s)")
    p.add_argument("query")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kprobe.query.client import QueryError

    policy = SqlPolicy(write=args.write, timeout_s=args.timeout)
    try:
        sql = policy.apply(args.query)
    except SqlRefused as e:
        return die(f"query refused: {explain_failure(f'read-only: {e}')}")
    with store_at(args.data, write=args.write) as store:
        try:
            out = run_sql(store, sql, args.format, policy)
        except SqlRefused as e:
            return die(f"query refused: {explain_failure(f'read-only: {e}')}")
        except (QueryError, RuntimeError) as e:
            return die(f"query failed: {explain_failure(str(e))}")
    sys.stdout.write(out.decode(errors="replace"))
    return 0
