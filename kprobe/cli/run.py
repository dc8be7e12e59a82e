"""`kprobe run -- COMMAND`: record a command and its children for its lifetime; exit with its status."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from kprobe.cli.common import die
from kprobe.cli.recording import (
    CAPTURE_POLICY,
    add_capture_args,
    drop_privileges,
    preflight,
    start_captures,
    start_session,
    stop_all,
)

# `kprobe run` also signals the command it started, which runs as the invoking user: CAP_KILL.
KEEP_RUNNING = frozenset({"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "KILL"})


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="record for the lifetime of a command and its children",
                       description="kprobe run [options] -- COMMAND [ARGS...]; exits with the command's status.",
                       epilog=CAPTURE_POLICY, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_capture_args(p, "full")
    p.add_argument("--as-root", action="store_true",
                   help="run the command as root; by default, under sudo, it runs as the user who invoked sudo "
                        "(SUDO_UID/SUDO_GID, with that user's groups, HOME, USER and LOGNAME)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(fn=run)
    return p


def _start(args: argparse.Namespace, drop):  # noqa: ANN001 - the privilege drop or None
    """`kprobe run`'s recorder, with its replay and payload captures when asked for."""
    session = start_session(args, watching=True, after_probes=drop)
    return session, start_captures(args, session)


def run(args: argparse.Namespace) -> int:
    if not args.command:
        return die("kprobe run needs a command after --, e.g. kprobe run -- sleep 1")
    preflight(args.data, getattr(args, "replayable", False))
    from kprobe.run_as import RunAsError, invoking_user, switch_to

    try:
        user = None if args.as_root else invoking_user()
    except RunAsError as e:
        return die(str(e))
    umask = os.umask(0o077)  # the recording is owner only; the command gets the caller's umask back
    replayable = bool(getattr(args, "replayable", False))
    if replayable:
        from kprobe.replay.tracee import close_inherited_fds  # imported before the fork
    later_attach = replayable or getattr(args, "decode_payloads", False)
    drop = None if args.keep_privileges or later_attach else (lambda: drop_privileges(KEEP_RUNNING))
    started = None
    if drop is None:  # root kept: the recorder starts first (--replayable arms its capture for the fork)
        started = _start(args, None)
    gate_r, gate_w = os.pipe()
    # Otherwise the command's process is forked before the recorder starts: it keeps what it needs to
    # become the invoking user, while the recorder gives up its capabilities once the probes are attached.
    pid = os.fork()
    if pid == 0:  # child: wait until the parent has put us on the watch list, then exec
        os.close(gate_w)
        if os.read(gate_r, 1) != b"x":  # the recorder did not start: run nothing
            os._exit(125)
        if replayable:  # its replay starts with fds 0-2 only: so must the recorded run
            close_inherited_fds()
        os.umask(umask)
        try:
            if user is not None:
                switch_to(user)
        except OSError as e:
            print(f"kprobe: cannot switch to uid {user.uid}: {e}", file=sys.stderr)
            os._exit(126)
        try:
            os.execvp(args.command[0], args.command)
        except OSError as e:
            print(f"kprobe: cannot run {args.command[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    os.close(gate_r)
    if started is None:
        try:
            started = _start(args, drop)
        except BaseException:
            os.close(gate_w)   # the command's process sees no go and exits
            os.waitpid(pid, 0)
            raise
    session, captures = started
    session.recorder.watch_pid(pid)
    replay = captures[0]
    if replay is not None:  # this thread forked it: it holds it at its exec to patch its vDSO
        replay.before_exec(pid)
    os.write(gate_w, b"x")
    os.close(gate_w)
    if replay is not None:
        replay.at_exec(pid)  # a command that ended before its exec is reaped below as usual
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    session.recorder.wait_drained(timeout=5.0)
    stop_all(captures, session)
    return code if code >= 0 else 128 - code
