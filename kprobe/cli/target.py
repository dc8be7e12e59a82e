"""The options naming the operation `kprobe why` and `kprobe graph` explain (checked and analysed by
:mod:`kprobe.causal.target`, which the API shares)."""

from __future__ import annotations

import argparse

from kprobe.cli.common import Failed


def add_target_args(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--span | --trace | --incident | --pid (with --tid --from --to); the required group, for a command
    that names its targets otherwise too (`why --payment`)."""
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--span", metavar="ID", help="span id (16 hex digits) received by the OTLP receiver")
    what.add_argument("--trace", metavar="ID", help="trace id (32 hex digits): explains its failed/longest span")
    what.add_argument("--incident", metavar="ID", help="incident id from `kprobe incidents`")
    what.add_argument("--pid", type=int, help="process id (tgid) of the slow operation; needs --from and --to")
    p.add_argument("--tid", type=int, default=None, help="with --pid: thread id (default: the most delayed thread)")
    p.add_argument("--from", dest="from_", metavar="T1", help="with --pid: UTC ns since the epoch or ISO-8601")
    p.add_argument("--to", metavar="T2", help="with --pid: UTC ns since the epoch or ISO-8601")
    return what


def parsed_target(args: argparse.Namespace):  # -> kprobe.causal.target.Target
    """The target the options name; a bad one is :class:`Failed` with the reason (exit 2)."""
    # lazy: the causal engine (msgspec) is ~60 ms of `kprobe --help`
    from kprobe.causal.target import parse_target

    try:
        return parse_target(args)
    except ValueError as e:
        raise Failed(str(e)) from None
