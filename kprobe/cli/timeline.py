"""`kprobe timeline --payment ID | --order CLORDID`: a payment's or order's business events across services.

The logic lives in :mod:`kprobe.finance`. The domain map comes from ``--domain-map FILE`` or
``$KPROBE_DOMAIN_MAP``; without one, every span carrying the id in any attribute is an event of
it (``payment.id`` of an OTel span, ``body.payment_id`` of a decoded request, a UETR...).
Exit codes: 0 ok, 1 nothing found, 2 bad arguments or no data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kprobe.cli.common import Failed, add_data_arg, store_at


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("timeline", help="a payment's or order's business events across services, with the kernel "
                                        "root cause where it struck",
                       description="Business events of one payment or order in time order: service, time to the "
                                   "microsecond, gap from the previous event, settlement window and slack, and the "
                                   "kernel root cause inserted where it struck.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--payment", metavar="ID", help="payment id, UETR or end-to-end id")
    what.add_argument("--order", metavar="CLORDID", help="FIX ClOrdID")
    p.add_argument("--no-analysis", action="store_true", help="skip the kernel root-cause analysis")
    add_data_arg(p)
    p.add_argument("--domain-map", type=Path, default=None,
                   help="domain map YAML (default: $KPROBE_DOMAIN_MAP; see finance/domain-map.example.yaml)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)
    return p


def business_timeline(args: argparse.Namespace, analyse: bool):  # -> (Timeline, kind, key)
    """The timeline of ``--payment``/``--order`` (also what `kprobe why --payment` explains)."""
    # lazy: YAML, numpy and the causal engine are ~250 ms of `kprobe --help`
    from kprobe.finance.domain import DomainMapError, load
    from kprobe.finance.timeline import build, default_map
    from kprobe.query.client import QueryError

    kind = "order" if args.order else "payment"
    key = args.order or args.payment
    path = args.domain_map or os.environ.get("KPROBE_DOMAIN_MAP")
    try:
        dmap = load(Path(path)) if path else default_map(kind)
    except DomainMapError as e:
        raise Failed(str(e)) from None
    with store_at(args.data) as store:
        try:
            return build(store, dmap, key, analyse=analyse), kind, key
        except QueryError as e:
            raise Failed(f"query failed: {e}") from None


def run(args: argparse.Namespace) -> int:
    from kprobe.finance.timeline import render

    tl, kind, key = business_timeline(args, analyse=not args.no_analysis)
    if args.json:
        json.dump(tl.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(tl, f"{kind.capitalize()} {key}"))
    return 0 if tl.events else 1
