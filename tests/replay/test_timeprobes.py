"""Where the recorder probes libc's time functions (replay/timeprobes.py): on the two jumps around
the vDSO call, which the kernel emulates (one trap each), not on the single-stepped first
instruction plus a uretprobe (measured ~4x slower per clock read on this VM)."""

from __future__ import annotations

from pathlib import Path

from kprobe.replay import timeprobes as TP

# glibc 2.36 __clock_gettime: mov rax,[rip+x]; mov rax,[rax+0x2e0]; test rax,rax; je; sub rsp,8;
# call rax; test eax,eax; jne; ...
GLIBC_236 = bytes.fromhex("488b05713a1000488b80e00200004885c0741548 83ec08ffd085c07523".replace(" ", ""))


def test_jumps_around_the_vdso_call_are_found() -> None:
    assert TP.around_vdso_call(GLIBC_236 + b"\x90" * 40) == (17, 27)
    assert GLIBC_236[17] == 0x74 and GLIBC_236[27] == 0x75


def test_other_code_falls_back_to_entry_and_uretprobe() -> None:
    # something clobbers rsi before the jump: the arguments would not be where the probe reads them
    clobbers = bytes.fromhex("4889fe") + GLIBC_236[14:]
    assert TP.around_vdso_call(clobbers) is None
    assert TP.around_vdso_call(b"\x31\xc0\xc3" + b"\x90" * 60) is None


def test_this_machines_libc_clock_gettime_gets_the_cheap_probes() -> None:
    points, _missing = TP.probe_points(TP.libc_path())
    cg = next(p for p in points if p.symbol == "clock_gettime")
    assert cg.exit is not None, "glibc's clock_gettime no longer has the expected shape: probes got slower"
    image = Path(TP.libc_path()).read_bytes()
    assert image[cg.entry] in range(0x70, 0x80) and image[cg.exit] in range(0x70, 0x80)
