"""`kprobe demo`: the payment incident end to end (real processes, real kernel, real OTel SDK).

Exit codes: 0 the incident happened and its root cause was found; 1 it did not (the machine did not
reproduce it, or the analysis missed the batch job: the output says which); 2 environment problem.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from kprobe.cli.common import die
from kprobe.datadir import UnsafeDataDir, fresh_dir

EPILOG = """\
what happens:
  payment-handler (OpenTelemetry SDK, spans to kprobe's OTLP receiver) settles each payment with a TCP
  call to settlement-svc (NOT instrumented: writes and fsyncs a ledger line per request), 750 ms timeout.
  After a few good payments batch-job starts on settlement-svc's CPU: threads reading through the page
  cache inside a small memory cgroup (memcg reclaim) and competing for that CPU. The next payment times
  out; kprobe explains it from the kernel events and prints the chain, the breakdown, and what to run next.

examples:
  sudo kprobe demo                               the story, printed
  sudo kprobe demo --no-otel                     the same incident found from decoded traffic alone
  sudo kprobe demo --json                        the failed payment and the analysis as JSON
  sudo kprobe demo --timeout-ms 500 --batch-threads 3 --service-name ledger-svc
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the payment-timeout incident, recorded and explained end to end",
                       description="Run the seed incident with real processes and explain it. Needs root.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("KPROBE_DEMO_DATA", "/tmp/kprobe-demo")),
                   help="data directory, emptied first (default: %(default)s)")
    p.add_argument("--timeout-ms", type=int, default=750, help="payment-handler's settlement timeout (default: %(default)s)")
    p.add_argument("--batch-threads", type=int, default=5, help="batch-job worker threads (default: %(default)s)")
    p.add_argument("--memcg-mb", type=int, default=64, help="batch-job memory cgroup limit, 0 = none (default: %(default)s)")
    p.add_argument("--rt-priority", type=int, default=10,
                   help="SCHED_RR priority of settlement-svc and batch-job, 0 = normal scheduling (default: %(default)s)")
    p.add_argument("--handler-name", default="payment-handler")
    p.add_argument("--service-name", default="settlement-svc")
    p.add_argument("--batch-name", default="batch-job")
    p.add_argument("--otlp-transport", choices=("grpc", "http"), default="grpc",
                   help="how payment-handler exports spans (default: %(default)s)")
    p.add_argument("--no-otel", action="store_true",
                   help="nothing exports spans: the payment, its timeline and root cause from decoded traffic alone")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (story on stderr)")
    p.set_defaults(fn=run)
    return p


def _invocation() -> str:
    """How the user can run kprobe again: `kprobe` if that is on PATH, else the path they used."""
    me = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    on_path = shutil.which("kprobe")
    if on_path and me and Path(on_path).resolve() == me:
        return "kprobe"
    if me and me.name == "kprobe":
        return os.path.relpath(me) if not str(me).startswith("/usr") else str(me)
    return f"{sys.executable} -m kprobe"


def run(args: argparse.Namespace) -> int:
    from kprobe.agent.preflight import PreflightError, check_all
    from kprobe.demo.scenario import DemoConfig, explore_commands, run_demo  # lazy: the recorder, numpy, chDB

    try:  # /tmp/kprobe-demo is a well-known name in a shared directory: created exclusively, 0700, ours
        fresh_dir(args.data)
    except (UnsafeDataDir, OSError) as e:
        return die(str(e))
    try:
        check_all(args.data)
    except PreflightError as e:
        return die(str(e))
    cfg = DemoConfig(args.data, handler_name=args.handler_name, service_name=args.service_name,
                     batch_name=args.batch_name, timeout_ms=args.timeout_ms, batch_threads=args.batch_threads,
                     memcg_mb=args.memcg_mb, rt_priority=args.rt_priority, otlp_transport=args.otlp_transport,
                     otel=not args.no_otel)
    story = sys.stderr if args.json else sys.stdout
    result = run_demo(cfg, out=story)
    for n in result.notes:
        print(f"note: {n}", file=story)
    print("", file=story)
    print("explore further:", file=story)
    for c in explore_commands(args.data, result, args.service_name, _invocation()):
        print(f"  {c}", file=story)
    if args.json:
        json.dump(result.to_json(), sys.stdout)
        sys.stdout.write("\n")
    return 0 if result.ok else 1
