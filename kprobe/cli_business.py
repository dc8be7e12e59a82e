"""Business commands: ``kprobe timeline --payment ID``, ``kprobe latency``, and ``kprobe why
--payment ID / --order CLORDID``.

Kept out of kprobe/cli.py (which only calls :func:`add_parsers` and :func:`extend_why`); the
logic lives in :mod:`kprobe.finance`. The domain map comes from ``--domain-map FILE`` or
``$KPROBE_DOMAIN_MAP``; without one, every span carrying the id in any attribute is an event of
it (``payment.id`` of an OTel span, ``body.payment_id`` of a decoded request, a UETR...).
Exit codes follow the main CLI: 0 ok, 1 nothing found, 2 bad arguments or no data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["add_parsers", "extend_why"]


def _die(msg: str, code: int = 2) -> int:
    print(f"kprobe: error: {msg}", file=sys.stderr)
    return code


def _domain_map(args: argparse.Namespace, kind: str):  # -> DomainMap
    from kprobe.finance.domain import load
    from kprobe.finance.timeline import default_map

    path = args.domain_map or os.environ.get("KPROBE_DOMAIN_MAP")
    return load(Path(path)) if path else default_map(kind)


def _add_common(p: argparse.ArgumentParser, data: Path) -> None:
    p.add_argument("--data", type=Path, default=data, help="data directory (default: %(default)s)")
    p.add_argument("--domain-map", type=Path, default=None,
                   help="domain map YAML (default: $KPROBE_DOMAIN_MAP; see finance/domain-map.example.yaml)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_parsers(sub: argparse._SubParsersAction, data: Path) -> None:
    p = sub.add_parser("timeline", help="a payment's or order's business events across services, with the kernel "
                                        "root cause where it struck",
                       description="Business events of one payment or order in time order: service, time to the "
                                   "microsecond, gap from the previous event, settlement window and slack, and the "
                                   "kernel root cause inserted where it struck.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--payment", metavar="ID", help="payment id, UETR or end-to-end id")
    what.add_argument("--order", metavar="CLORDID", help="FIX ClOrdID")
    p.add_argument("--no-analysis", action="store_true", help="skip the kernel root-cause analysis")
    _add_common(p, data)
    p.set_defaults(fn=cmd_timeline)

    p = sub.add_parser("latency", help="order-to-ack per FIX session, query p50/p99 per statement, request latency "
                                       "per route, from decoded traffic",
                       description="Latency of decoded exchanges (payload capture of watched services): FIX "
                                   "order-to-ack / cancel-to-ack per session (PossDup resends excluded), PostgreSQL "
                                   "p50/p99 per statement shape, HTTP per route, ISO 8583 / 20022 per message.")
    p.add_argument("--protocol", choices=["http", "postgresql", "fix", "iso8583", "iso20022"], default=None)
    p.add_argument("--from", dest="from_", metavar="T1", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="UTC ns since the epoch or ISO-8601")
    p.add_argument("--data", type=Path, default=data, help="data directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_latency)


def extend_why(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--payment`` / ``--order`` to ``kprobe why`` beside its own targets.

    The target group of ``why`` is required and mutually exclusive; the two options join that
    group (argparse keeps it in ``_mutually_exclusive_groups``, its only public handle), so
    ``why --payment X --span Y`` is refused like any two targets.
    """
    group = next(g for g in p._mutually_exclusive_groups if g.required)
    group.add_argument("--payment", metavar="ID", help="a payment id (or UETR): explains its failed/slowest span")
    group.add_argument("--order", metavar="CLORDID", help="a FIX ClOrdID: explains its order's slowest exchange")
    p.add_argument("--domain-map", type=Path, default=None, help="with --payment/--order: domain map YAML "
                                                                 "(default: $KPROBE_DOMAIN_MAP)")
    original = p.get_default("fn")
    p.set_defaults(fn=lambda args: cmd_why_business(args) if (args.payment or args.order) else original(args))
    return p


def _timeline(args: argparse.Namespace, analyse: bool):
    from kprobe.finance.domain import DomainMapError
    from kprobe.finance.timeline import build
    from kprobe.query.client import QueryError, open_store

    kind = "order" if args.order else "payment"
    key = args.order or args.payment
    try:
        dmap = _domain_map(args, kind)
    except DomainMapError as e:
        raise SystemExit(_die(str(e))) from None
    try:
        store = open_store(args.data)
    except QueryError as e:
        raise SystemExit(_die(str(e))) from None
    try:
        return build(store, dmap, key, analyse=analyse), kind, key
    except QueryError as e:
        raise SystemExit(_die(f"query failed: {e}")) from None
    finally:
        close = getattr(store, "close", None)
        if close:
            close()


def cmd_timeline(args: argparse.Namespace) -> int:
    from kprobe.finance.timeline import render

    tl, kind, key = _timeline(args, analyse=not args.no_analysis)
    if args.json:
        json.dump(tl.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(tl, f"{kind.capitalize()} {key}"))
    return 0 if tl.events else 1


def cmd_why_business(args: argparse.Namespace) -> int:
    tl, kind, key = _timeline(args, analyse=True)
    if not tl.events:
        return _die(f"no spans mention {kind} {key!r}", 1)
    if args.json:
        json.dump({"key": key, "kind": kind, "root_cause": tl.root_cause, "incidents": tl.incidents,
                   "notes": tl.notes, "events": [e.to_json() for e in tl.events]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{kind.capitalize()} {key}: " + (tl.root_cause + "  [ROOT CAUSE]" if tl.root_cause else
                                           "no kernel delay found"))
    for i in tl.incidents:
        print("INCIDENT: " + i)
    for n in tl.notes:
        print("note: " + n)
    print(f"(kprobe timeline --{kind} {key} shows its {len(tl.events)} events)")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from kprobe.finance.latency import collect, render
    from kprobe.query.client import QueryError, open_store
    from kprobe.query.timefmt import parse_ts

    try:
        t1 = parse_ts(args.from_) if args.from_ else None
        t2 = parse_ts(args.to) if args.to else None
    except ValueError as e:
        return _die(str(e))
    try:
        store = open_store(args.data)
    except QueryError as e:
        return _die(str(e))
    try:
        rows = collect(store, t1, t2, args.protocol)
    except QueryError as e:
        return _die(f"query failed: {e}")
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    if args.json:
        json.dump([r.to_json() for r in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(rows))
    return 0
