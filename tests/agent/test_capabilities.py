"""The capability self-check's logic, over status files and environments written by the test.

The kernel's own verdicts are in tests/deploy/test_agent_capabilities.py (the agent started
with reduced capability sets); here, the decisions that cannot be staged on this VM: old
kernels where RLIMIT_MEMLOCK still limits BPF maps, CAP_SYS_ADMIN as the pre-5.8 fallback.
"""

from __future__ import annotations

from pathlib import Path

from kprobe.agent.capabilities import CAP_NUMBERS, Environment, evaluate, read_capsets

NEW = Environment(kernel=(6, 18), memlock_unlimited=False, tracefs_reachable=True)


def _status(tmp_path: Path, names: list[str]) -> Path:
    mask = sum(1 << CAP_NUMBERS[n] for n in names)
    p = tmp_path / "status"
    p.write_text(f"Name:\tkprobe\nCapInh:\t0000000000000000\nCapPrm:\t{mask:016x}\nCapEff:\t{mask:016x}\n"
                 f"CapBnd:\t{mask:016x}\nCapAmb:\t0000000000000000\n")
    return p


def test_chart_caps_on_a_new_kernel(tmp_path):
    r = evaluate(read_capsets(_status(tmp_path, ["BPF", "PERFMON", "SYS_RESOURCE"])), NEW)
    assert r.can_record and sorted(r.held) == ["BPF", "PERFMON", "SYS_RESOURCE"]
    assert r.missing == {"other processes' /proc details": ["SYS_PTRACE"]}


def test_sys_admin_alone_is_the_old_kernel_fallback(tmp_path):
    old = Environment(kernel=(5, 4), memlock_unlimited=False, tracefs_reachable=True)
    r = evaluate(read_capsets(_status(tmp_path, ["SYS_ADMIN"])), old)
    assert r.can_record
    assert "eBPF probes" not in r.missing and not any("MEMLOCK" in f for f in r.missing)


def test_memlock_matters_only_before_5_11_with_a_limit(tmp_path):
    caps = read_capsets(_status(tmp_path, ["BPF", "PERFMON"]))
    feat = "BPF map memory (RLIMIT_MEMLOCK, kernels < 5.11)"
    assert evaluate(caps, Environment((5, 10), False, True)).missing[feat] == ["SYS_RESOURCE"]
    assert feat not in evaluate(caps, Environment((5, 10), True, True)).missing
    assert feat not in evaluate(caps, Environment((5, 11), False, True)).missing


def test_nothing_held_names_the_least_privilege_pair(tmp_path):
    r = evaluate(read_capsets(_status(tmp_path, [])), Environment((6, 1), True, False, replayable=True))
    assert not r.can_record
    assert r.missing["eBPF probes"] == ["BPF", "PERFMON"]
    assert "missing capabilities CAP_BPF, CAP_PERFMON (held: none of those kprobe uses, 0 in all)" in r.error()
    assert r.missing["mounting tracefs"] == ["SYS_ADMIN"]
    assert any(w.startswith("without CAP_SYS_ADMIN: replayable") for w in r.warnings())
