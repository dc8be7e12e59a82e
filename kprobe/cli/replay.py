"""`kprobe replay`: re-run a recorded process under ptrace against its replay log."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict

from kprobe.cli.common import add_data_arg, die

EPILOG = """\
Record first with --replayable, then replay on any machine (the peers need not exist):
  sudo kprobe run --replayable -- ./settlement-svc --port 7000
  sudo kprobe replay --pid 2841 -- ./settlement-svc --port 7000
  sudo kprobe replay --pid 2841 --deadline-ms 750 \\
       --inject "delay the 3rd write to fd 7 by 388 ms" -- ./settlement-svc --port 7000
  sudo kprobe replay --incident 20261127T034700-812:2841 --deadline-ms 750 -- ./settlement-svc-fixed
  sudo kprobe replay --pid 2841 --inject "delay every fsync on /var/ledger/* by 50 ms" --json -- ./svc

Injection specs: "delay the Nth SYSCALL to fd FD by D ms", "delay every SYSCALL on PATH-GLOB by D ms",
"remove the recorded kernel delay at event N" (N as printed in divergences and --json).
Outcome: identical (every output byte and syscall matched), diverged (first divergence shown with
expected vs actual; kind "stuck": a thread that could not go on within seconds, named with where it
is and what the recorded order waits for), unsupported (what and why), incomplete-log (the log ends
early: drops or caps). Exit code: 0 identical, 3 diverged, 4 unsupported/incomplete, 2 bad arguments.
Threads replay one at a time in the recorded order; points where that order is not decided by
syscalls are noted (replay/README.md, "Threads"). KPROBE_REPLAY_SCHED=fifo at recording time runs
the recorded process SCHED_FIFO instead of SCHED_RR (for services that compute long between syscalls).
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("replay", help="replay a recorded process under ptrace; inject timing; test a fix",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--pid", type=int, help="recorded process id (newest replayable session holding it)")
    who.add_argument("--incident", metavar="ID", help="SESSION[:PID], SESSION being a directory under <data>/replay")
    p.add_argument("--inject", action="append", default=[], metavar="SPEC", help="timing change (repeatable)")
    p.add_argument("--deadline-ms", type=float, default=None,
                   help="client timeout: each request's reply latency is judged against it (default: none)")
    p.add_argument("--what-if", action="store_true",
                   help="keep going after a divergence, matching calls per fd (implied by --inject)")
    p.add_argument("--run-unrecorded", action="store_true",
                   help="what-if: let calls the recording does not hold run for real even when they reach outside "
                        "the process (connect, send, write/create/delete files, signal others, fork, exec); by "
                        "default they are answered EPERM and listed in the notes")
    p.add_argument("--cpu", type=int, default=0, help="CPU the tracer and tracee share (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="the full result as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the binary to run, after --")
    p.set_defaults(fn=run)
    return p


def run(args: argparse.Namespace) -> int:
    # lazy: the replay engine (ptrace, numpy) is for `kprobe replay` alone
    from kprobe.replay import log as rlog
    from kprobe.replay.engine import ReplayEngine
    from kprobe.replay.inject import InjectError, parse
    from kprobe.replay.worker_whatif import guard

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return die("kprobe replay needs the command after --")
    try:
        injections = [parse(s) for s in args.inject]
        if args.incident:
            name, _, pid = args.incident.partition(":")
            log = rlog.load(args.data / "replay" / name, int(pid) if pid else None)
        else:
            log = rlog.load(rlog.find_session(args.data, args.pid), args.pid)
    except (InjectError, rlog.LogError, OSError, ValueError) as e:
        return die(str(e))
    exe = shutil.which(command[0]) or command[0]
    what_if = bool(injections or args.what_if)
    res = ReplayEngine(log, [exe, *command[1:]], injections, strict=not what_if, cpu=args.cpu,
                       deadline_ms=args.deadline_ms,
                       guard=None if args.run_unrecorded or not what_if else guard).run()
    if args.json:
        out = asdict(res)
        out["outputs_identical"] = res.outputs_identical
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(res))
    return {"identical": 0, "diverged": 3}.get(res.outcome, 4)


def render(res) -> str:  # noqa: ANN001 - ReplayResult
    lines = [f"outcome: {res.outcome}  ({res.events_replayed}/{res.events_total} recorded syscalls replayed, "
             f"{res.stops} ptrace stops + {res.tracee_answers} answered in the tracee, "
             f"{res.wall_s * 1000:.1f} ms wall)",
             f"outputs: {'byte-identical' if res.outputs_identical else 'DIFFERENT'} on "
             f"{', '.join(sorted(res.recorded_outputs)) or 'no channel'}"]
    for d in res.divergences[:10]:
        lines.append(f"divergence at event {d.index} (thread {d.tid}, {d.kind}):\n"
                     f"    expected {d.expected}\n    actual   {d.actual}")
    lines.append(f"timing: recorded {res.recorded_span_ms:.1f} ms, replay (virtual) {res.replay_span_ms:.1f} ms")
    for i, q in enumerate(res.requests):
        flag = "  TIMEOUT" if q.timed_out else ""
        lines.append(f"  request {i} on fd {q.fd}: recorded {q.recorded_ms:.2f} ms, replay {q.replay_ms:.2f} ms{flag}")
    if res.verdict:
        lines.append(f"verdict: {res.verdict}")
    lines += [f"note: {n}" for n in res.notes]
    return "\n".join(lines)
