"""`kprobe stats`: events per type, drops, attach status, clock method, the recorder's own cost."""

from __future__ import annotations

import argparse
import json
import sys

from kprobe.cli.common import add_data_arg, store_at


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("stats", help="events per type, drops, attach status, clock method")
    add_data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kprobe.query.stats import collect, render  # lazy: numpy, via the table definitions

    with store_at(args.data) as store:
        data = collect(store, args.data)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(data))
    return 0
