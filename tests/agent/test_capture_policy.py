"""The capture policy `kprobe record` and `kprobe run` start with, as a user gets it from the CLI.

Always-on recording must not run a program on every syscall or send/recv, and keeps
system-wide off-CPU rows to waits of a millisecond or more; a watch list or `run`
asks for full detail on a few processes, where every 50 us wait is a row.
"""

from __future__ import annotations

import pytest

from kprobe.cli import build_parser
from kprobe.cli.recording import recorder_config


def _config(*argv: str):
    args = build_parser().parse_args(list(argv))
    watching = bool(getattr(args, "watch_pid", None) or getattr(args, "watch_comm", None)) or args.cmd == "run"
    return recorder_config(args, watching)


@pytest.mark.parametrize(("argv", "min_offcpu_us", "every_syscall", "every_send_recv"), [
    (("record",), 1000, False, False),
    (("record", "--watch-comm", "settlement-svc"), 50, True, True),
    (("record", "--detail", "full"), 50, True, True),
    (("record", "--min-offcpu-us", "200"), 200, False, False),
    (("record", "--syscalls", "fsync,futex"), 1000, True, False),
    (("run", "--", "true"), 50, True, True),
])
def test_default_policy(argv, min_offcpu_us, every_syscall, every_send_recv):
    cfg = _config(*argv)
    assert cfg.probes.min_offcpu_ns == min_offcpu_us * 1000
    # syncs are rows from the same threshold system-wide; a watch list's calls from 100 us; full: all
    want_sys = 0 if "full" in argv or argv[0] == "run" else (100_000 if "--watch-comm" in argv else 1_000_000)
    assert cfg.probes.min_syscall_ns == want_sys
    assert cfg.probes.every_syscall is every_syscall
    assert cfg.probes.every_send_recv is every_send_recv


def test_bounded_system_wide_loads_no_program_on_any_syscall_or_send_recv():
    p = _config("record").probes
    assert not p.wanted("kp_sys_enter") and not p.wanted("kp_sys_exit")
    assert not p.wanted("kp_sock_send_length") and not p.wanted("kp_sock_recv_length")
    # not even per-call tracepoints: any syscall tracepoint puts every syscall on the kernel's slow path
    assert not p.wanted("kp_enter_fsync") and not p.wanted("kp_exit_close") and p.wanted("kp_sched_switch")
    assert not p.traces_opens      # the agent names the files of blocked calls instead (agent/fd_paths.py)
    hooked = _config("record", "--call-hooks").probes
    assert hooked.wanted("kp_enter_fsync") and hooked.wanted("kp_exit_close") and not hooked.wanted("kp_sys_enter")
    assert hooked.traces_opens
    full = _config("record", "--detail", "full").probes
    assert full.wanted("kp_sys_enter") and not full.wanted("kp_enter_fsync") and full.traces_opens


def test_store_inserts_are_rare_embedded_and_frequent_to_kafka():
    assert _config("record").flush_ms == 15000
    assert _config("record", "--kafka", "127.0.0.1:9092").flush_ms == 1000
    assert _config("record", "--flush-ms", "250").flush_ms == 250


def test_rings_are_sized_for_what_the_policy_emits():
    from kprobe.schemas.tables import EVENT_TYPES

    bounded = _config("record").probes
    sizes = {e.name: bounded.ring_size(e.name) for e in EVENT_TYPES}
    # pinned kernel memory, mapped twice into the recorder: a few MiB in all, not 8 MiB per type
    assert sum(sizes.values()) <= 12 << 20, sizes
    assert all(s & (s - 1) == 0 and s >= 4096 for s in sizes.values()), sizes
    # ...yet each holds thousands of its records (the drain is woken at 1/8 full)
    for e in EVENT_TYPES:
        if e.name != "oom":
            assert sizes[e.name] // (e.record.itemsize + 8) >= 2000, (e.name, sizes[e.name])
    watched = _config("record", "--watch-comm", "x").probes
    assert watched.ring_size("syscall") == watched.ring_size("sock_io") == 8 << 20   # every call is a candidate row
    assert {_config("record", "--ring-kb", "64").probes.ring_size(e.name) for e in EVENT_TYPES} == {64 << 10}


@pytest.mark.parametrize(("argv", "min_block_us", "hold_ms"), [
    (("record",), 1000, 60000),
    (("record", "--detail", "full"), 0, 60000),
    (("record", "--min-block-us", "0"), 0, 60000),
    (("record", "--kafka", "127.0.0.1:9092"), 1000, 0),
])
def test_block_sums_and_small_table_holding(argv, min_block_us, hold_ms):
    cfg = _config(*argv)
    assert cfg.probes.min_block_us == min_block_us
    assert cfg.hold_ms == hold_ms


def test_the_library_default_is_the_commands_default(capsys):
    """An embedded session built in code (the demo, the API's tests, a user's script) batches like
    `kprobe record` does, and the help text states those numbers."""
    from kprobe.agent.recorder import EMBEDDED_FLUSH_MS, KAFKA_FLUSH_MS, RecorderConfig

    cli = recorder_config(build_parser().parse_args(["record"]), watching=False)
    lib = RecorderConfig()
    assert (lib.flush_ms, lib.hold_s) == (cli.flush_ms, cli.hold_s) == (EMBEDDED_FLUSH_MS, 4 * EMBEDDED_FLUSH_MS / 1000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["record", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: {EMBEDDED_FLUSH_MS:.0f} embedded, {KAFKA_FLUSH_MS:.0f} with --kafka" in text
