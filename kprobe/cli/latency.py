"""`kprobe latency`: order-to-ack, statement and route latency of decoded traffic (:mod:`kprobe.finance.latency`)."""

from __future__ import annotations

import argparse
import json
import sys

from kprobe.cli.common import add_data_arg, die, store_at
from kprobe.query.timefmt import parse_ts


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("latency", help="order-to-ack per FIX session, query p50/p99 per statement, request latency "
                                       "per route, from decoded traffic",
                       description="Latency of decoded exchanges (payload capture of watched services): FIX "
                                   "order-to-ack / cancel-to-ack per session (PossDup resends excluded), PostgreSQL "
                                   "p50/p99 per statement shape, HTTP per route, ISO 8583 / 20022 per message.")
    p.add_argument("--protocol", choices=["http", "postgresql", "fix", "iso8583", "iso20022"], default=None)
    p.add_argument("--from", dest="from_", metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="UTC ns since the epoch or ISO-8601")
    add_data_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kprobe.finance.latency import collect, render
    from kprobe.query.client import QueryError

    try:
        t1 = parse_ts(args.from_) if args.from_ else None
        t2 = parse_ts(args.to) if args.to else None
    except ValueError as e:
        return die(str(e))
    with store_at(args.data) as store:
        try:
            rows = collect(store, t1, t2, args.protocol)
        except QueryError as e:
            return die(f"query failed: {e}")
    if args.json:
        json.dump([r.to_json() for r in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(rows))
    return 0
