"""`kprobe hosts`: which hosts were recording (their heartbeats), and `why` across hosts (causal/hosts.py).

The rows come from the scale-out ClickHouse server (a window of it copied into a private chDB store:
the engine's SQL is newer than ClickHouse 18.16 parses) or from running embedded recorders, one per
--data directory (each answers through its own query socket: chDB lets one process hold one store).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kprobe.cli.common import Failed

WINDOW_MARGIN_NS = 120_000_000_000   # rows copied around the asked window: peers, clocks and heartbeats around it


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("hosts", help="hosts recorded (heartbeats, clocks) and why across hosts",
                       description="Which hosts were recording and with which clock, and `why` followed from one "
                                   "host into the hosts that served it (4-tuples swapped, clocks aligned from the "
                                   "traffic). Rows from --clickhouse (scale-out) or from running recorders (--data).")
    hs = p.add_subparsers(dest="hosts_cmd", required=True)
    ls = hs.add_parser("list", help="each host's newest heartbeat, and whether it covers --from/--to")
    wy = hs.add_parser("why", help="why PID on HOST was slow, followed across hosts")
    for q in (ls, wy):
        q.add_argument("--clickhouse", metavar="HOST:PORT", help="the scale-out ClickHouse server (native port)")
        q.add_argument("--database", default="kprobe", help="its database (default: %(default)s)")
        q.add_argument("--data", type=Path, action="append", default=[], metavar="DIR",
                       help="a running recorder's data directory; repeat for each host")
        q.add_argument("--from", dest="from_ts", help="window start (UTC, e.g. 2026-12-07T21:05:32.1Z, or ns)")
        q.add_argument("--to", dest="to_ts", help="window end")
        q.add_argument("--json", action="store_true")
    wy.add_argument("--host", required=True, help="the host the slow process runs on (as its rows name it)")
    wy.add_argument("--pid", type=int, required=True)
    wy.add_argument("--tid", type=int, default=None)
    p.set_defaults(fn=run)
    return p


def _window(args: argparse.Namespace, required: bool) -> tuple[int, int] | None:
    from kprobe.query.timefmt import parse_ts

    if not args.from_ts and not args.to_ts:
        if required:
            raise Failed("give --from and --to")
        return None
    if not (args.from_ts and args.to_ts):
        raise Failed("give both --from and --to")
    try:
        lo, hi = parse_ts(args.from_ts), parse_ts(args.to_ts)
    except ValueError as e:
        raise Failed(str(e)) from None
    if hi <= lo:
        raise Failed("--to must be after --from")
    return lo, hi


@contextmanager
def _source(args: argparse.Namespace, window: tuple[int, int] | None):
    from kprobe.causal.hosts import SeparateSource, SharedSource

    if bool(args.clickhouse) == bool(args.data):
        raise Failed("give either --clickhouse HOST:PORT or one --data DIR per host")
    if args.clickhouse:
        from clickhouse_driver import Client

        from kprobe.sinks.chdb_store import ChdbStore
        from kprobe.sinks.clickhouse_window import copy_window

        host, _, port = args.clickhouse.rpartition(":")
        if not host or not port.isdigit():
            raise Failed("--clickhouse wants HOST:PORT (the native protocol port)")
        with tempfile.TemporaryDirectory(prefix="kprobe-hosts-") as tmp:
            store = ChdbStore(Path(tmp))
            try:
                lo, hi = window if window else (0, 2**63 - 1)
                copy_window(Client(host, port=int(port)), args.database, store, max(0, lo - WINDOW_MARGIN_NS),
                            min(2**63 - 1, hi + WINDOW_MARGIN_NS))
                yield SharedSource(store)
            finally:
                store.close()
        return
    from kprobe.query.client import RemoteStore, recorder_socket

    stores: dict[str, Any] = {}
    for d in args.data:
        sock = recorder_socket(d)
        if sock is None:
            raise Failed(f"no recorder is running on {d}: a cross-host answer asks each running recorder (one process "
                         "can open only one stopped store; copy the recordings into ClickHouse for that)")
        st = RemoteStore(sock)
        rows = st.query_rows("SELECT argMax(host, ts) AS h FROM hosts")
        name = str(rows[0]["h"]) if rows and rows[0].get("h") else ""
        if not name:
            raise Failed(f"the recorder on {d} writes no heartbeats (an older kprobe): its host is unknown")
        stores[name] = st
    yield SeparateSource(stores)


def _list(src: Any, window: tuple[int, int] | None) -> list[dict]:
    out = []
    for h in src.hosts():
        rows = src.store(h).query_rows(
            "SELECT max(ts) AS last, min(ts) AS first, argMax(boot_id, ts) AS boot, argMax(clock_state, ts) AS clock, "
            "argMax(clock_synchronised, ts) AS sync, argMax(clock_max_error_ns, ts) AS max_err, "
            "argMax(clock_skew_ns, ts) AS skew, argMax(last_event_ts, ts) AS last_event, argMax(final, ts) AS final, "
            "argMax(filter, ts) AS filter, count() AS beats FROM hosts")
        r = rows[0] if rows else {}
        d = {"host": h, **{k: r.get(k) for k in ("first", "last", "boot", "clock", "sync", "max_err", "skew",
                                                 "last_event", "final", "filter", "beats")}}
        if window is not None:
            lo, hi = window
            d["covers_window"] = bool(int(r.get("beats") or 0)) and int(r.get("first") or 0) <= lo \
                and int(r.get("last") or 0) >= hi
        out.append(d)
    return out


def run(args: argparse.Namespace) -> int:
    from kprobe.query.timefmt import format_ts

    window = _window(args, args.hosts_cmd == "why")
    with _source(args, window) as src:
        if args.hosts_cmd == "list":
            hosts = _list(src, window)
            if args.json:
                print(json.dumps(hosts, indent=1))
                return 0
            for d in hosts:
                state = "stopped" if int(d.get("final") or 0) else "recording"
                cover = "" if window is None else ("  covers the window" if d["covers_window"]
                                                   else "  DOES NOT cover the window")
                print(f"{d['host']}: {d.get('beats') or 0} heartbeats, last {format_ts(int(d.get('last') or 0))} "
                      f"({state}), newest event {format_ts(int(d.get('last_event') or 0))}, boot {d.get('boot')}, "
                      f"clock {d.get('clock')}{' synchronised' if int(d.get('sync') or 0) else ' NOT synchronised'}"
                      f"{', ' + str(d['filter']) if d.get('filter') else ''}{cover}")
            return 0
        from kprobe.causal.hosts import why_across
        from kprobe.causal.why import NoDataError

        assert window is not None
        try:
            cross = why_across(src, args.host, args.pid, window[0], window[1], args.tid)
        except NoDataError as e:
            print(f"kprobe: {e}", file=sys.stderr)
            return 1
        print(json.dumps(cross.to_json(), indent=1) if args.json else cross.render_text())
    return 0
