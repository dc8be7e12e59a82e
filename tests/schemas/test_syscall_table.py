"""The one syscall table against its ground truths: the kernel's own numbering, the replay probe's
capture switch, the agent's filter values, and the rules replay derives from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kprobe.agent import probeset
from kprobe.replay import seccomp
from kprobe.replay import syscall_sets as sets
from kprobe.schemas import layouts as L
from kprobe.schemas import syscalls
from kprobe.schemas.syscall_table import BY_NAME, TABLE, Capture, Rule, c_name

ROOT = Path(__file__).resolve().parents[2]
UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def test_numbers_and_names_are_unique():
    assert len({s.nr for s in TABLE}) == len(TABLE)
    assert len({s.name for s in TABLE}) == len(TABLE)
    assert all(0 <= s.nr < L.KP_NR_RESUME for s in TABLE)


@pytest.mark.skipif(not UNISTD.exists(), reason=f"{UNISTD} missing (linux-libc-dev not installed)")
def test_numbers_are_the_kernels():
    kernel = {name: int(n) for name, n in re.findall(r"#define __NR_(\w+) (\d+)", UNISTD.read_text())}
    known = [s for s in TABLE if s.name in kernel]
    assert len(known) >= len(TABLE) - 5, "only calls newer than these headers may be missing"
    wrong = {s.name: (s.nr, kernel[s.name]) for s in known if kernel[s.name] != s.nr}
    assert not wrong, wrong


def _probe_cases() -> dict[str, set[int]]:
    """syscall -> regions kp_out_regions in probes/replay.bpf.c copies for it."""
    src = (ROOT / "probes" / "replay.bpf.c").read_text()
    body = src[src.index("kp_out_regions("):]
    body = body[body.index("switch (nr) {"): body.index("\n}\n")]
    out: dict[str, set[int]] = {}
    for block in re.split(r"\bbreak;\s*\}?\s*(?=case )", body):  # an early break inside a case stays
        names = re.findall(r"case (KP_NR_\w+):", block)
        regions = {int(r) for r in re.findall(r"kp_region\(o, (\d+),", block)}
        if "kp_iov(" in block:
            regions.add(0)
        for n in names:
            out[n] = regions
    return out


def test_probe_copies_exactly_the_declared_regions():
    declared = {c_name(s): set(s.recorded) for s in TABLE if s.recorded}
    assert _probe_cases() == declared


def test_replay_writes_back_only_recorded_regions():
    for s in TABLE:
        assert set(s.out) <= set(s.recorded), s.name
        if s.rule in (Rule.READ, Rule.WRITE):
            assert s.buf is not None and s.fd0 and 0 in s.recorded, s.name
        if s.rule is Rule.PAIR:
            assert s.pair_arg >= 0 and s.recorded == (0,), s.name


def test_agent_filter_values_are_the_headers():
    assert (int(Capture.THRESHOLD), int(Capture.ALWAYS)) == (L.KP_SYS_THRESHOLD, L.KP_SYS_ALWAYS)
    assert probeset.ALWAYS_SYSCALLS == syscalls.ALWAYS


def test_agent_traces_the_declared_calls():
    traced = {s.name for s in TABLE if s.capture is not None}
    assert set(syscalls.X86_64) == traced
    assert syscalls.numbers(["fsync", "openat"]) == [BY_NAME["fsync"].nr, BY_NAME["openat"].nr]
    with pytest.raises(ValueError, match="unknown or untraceable"):
        syscalls.numbers(["mmap"])
    assert syscalls.NAMES[BY_NAME["epoll_wait_old"].nr] == "epoll_wait_old"  # named, not traced


def test_replay_rules_follow_the_table():
    assert seccomp.ALLOWED == {s.nr for s in TABLE if s.rule is Rule.RUN}
    assert not seccomp.trapped(BY_NAME["brk"].nr, (0,) * 6)
    assert seccomp.trapped(BY_NAME["mmap"].nr, (0, 0, 0, 0, 3, 0))       # a file mapping
    assert not seccomp.trapped(BY_NAME["mmap"].nr, (0, 0, 0, 0, 0xFFFFFFFF, 0))
    assert sets.READS[BY_NAME["recvmsg"].nr] == -2 and sets.WRITES[BY_NAME["writev"].nr] == -1
    assert BY_NAME["sendto"].nr in sets.ALWAYS_ANSWERED and BY_NAME["write"].nr not in sets.ALWAYS_ANSWERED
    # a dirfd is not matched against the recording, an fstat's fd is
    assert BY_NAME["newfstatat"].nr not in sets.KEYED and BY_NAME["fstat"].nr in sets.KEYED
    assert sets.describe(BY_NAME["write"].nr, (1, 0, 0, 0, 0, 0), 5) == "write(fd=1, ...) = 5"
    assert sets.sysname(4000) == "syscall_4000"
