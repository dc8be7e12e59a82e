"""The agent with only the chart's capabilities attaches its probes on this kernel.

A container runtime gives the agent's container a bounding set of exactly the capabilities the
chart adds (uid 0 then gets those and no others). setpriv does the same to `kprobe record` here:
bounding set = the chart's default `agent.capabilities` (those this machine can grant at all),
no inheritable or ambient capabilities; so no CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, CAP_SYS_PTRACE.
Every program must attach and events must be stored; a failure names the programs and errors.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import is_root

REPO = Path(__file__).resolve().parents[2]
CAP_NUMBERS = {"SYS_RESOURCE": 24, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "PERFMON": 38, "BPF": 39}

pytestmark = pytest.mark.kernel


def _status_caps(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_agent_attaches_with_only_the_charts_capabilities(tmp_path, probes_built):
    if not is_root():
        pytest.skip("the capability drop starts from root (CI runs as root)")
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed to start the agent with a reduced capability set")
    caps = yaml.safe_load((REPO / "deploy" / "helm" / "kprobe" / "values.yaml").read_text())["agent"]["capabilities"]
    assert caps == ["BPF", "PERFMON", "SYS_RESOURCE"]
    bounding = _status_caps("CapBnd")
    granted = [c for c in caps if bounding >> CAP_NUMBERS[c] & 1]
    absent = sorted(set(caps) - set(granted))
    assert {"BPF", "PERFMON"} <= set(granted), f"this machine cannot grant {absent}"
    drop = ["setpriv", "--bounding-set=-all," + ",".join("+" + c.lower() for c in granted), "--inh-caps=-all", "--"]

    mask = sum(1 << CAP_NUMBERS[c] for c in granted)
    seen = subprocess.run([*drop, "grep", "-E", "^Cap(Eff|Prm|Bnd)", "/proc/self/status"],
                          capture_output=True, text=True, check=True).stdout
    assert {int(line.split()[1], 16) for line in seen.splitlines()} == {mask}, seen

    data = tmp_path / "data"
    p = subprocess.run([*drop, sys.executable, "-m", "kprobe", "record", "--duration", "2", "--data", str(data),
                        "--no-otlp", "--flush-ms", "500"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"kprobe record with only {granted} exited {p.returncode}:\n{p.stderr[-3000:]}"
    status = json.loads((data / "status.json").read_text())
    failed = [f"{a['probe']}/{a['program']}: {a['error']}" for a in status["attach"] if not a["attached"]]
    assert status["attach"] and not failed and not status["load_errors"], (failed, status["load_errors"])
    assert sum(status["written"].values()) > 0, status["written"]
    # the self-check: probes can load; only CAP_SYS_PTRACE's /proc details are named as degraded
    assert status["capabilities"]["can_record"] is True
    assert status["capabilities"]["missing"] == {"other processes' /proc details": ["SYS_PTRACE"]}
    shown = subprocess.run([sys.executable, "-m", "kprobe", "stats", "--data", str(data)],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert "capabilities: CAP_BPF, CAP_PERFMON" in shown and "missing CAP_SYS_PTRACE" in shown, shown
    print(f"attached {len(status['attach'])} programs with {granted}"
          + (f"; {absent} not grantable here, not needed on this kernel" if absent else ""))


def _chart_caps() -> list[str]:
    return yaml.safe_load((REPO / "deploy" / "helm" / "kprobe" / "values.yaml").read_text())["agent"]["capabilities"]


def _drop_to(caps: list[str]) -> list[str]:
    """setpriv prefix giving exactly ``caps`` (bounding set; uid 0 then holds them and no others)."""
    return ["setpriv", "--bounding-set=-all" + "".join(",+" + c.lower() for c in caps), "--inh-caps=-all", "--"]


@pytest.mark.parametrize("without", [("BPF", "PERFMON"), ("BPF",), ("PERFMON",)])
def test_agent_names_exactly_the_missing_capabilities(tmp_path, probes_built, without):
    """The chart's list minus CAP_BPF and/or CAP_PERFMON: no probe can load, so `kprobe record`
    exits non-zero before touching anything, naming exactly the capabilities taken away."""
    if not is_root():
        pytest.skip("the capability drop starts from root (CI runs as root)")
    caps = [c for c in _chart_caps() if c not in without]
    grantable = [c for c in caps if _status_caps("CapBnd") >> CAP_NUMBERS[c] & 1]
    data = tmp_path / "data"
    p = subprocess.run([*_drop_to(grantable), sys.executable, "-m", "kprobe", "record", "--duration", "1",
                        "--data", str(data), "--no-otlp"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    m = re.search(r"missing capabilities ([A-Z_, ]+) \(held: ([^)]*) of those kprobe uses", p.stderr)
    assert m, p.stderr
    assert m.group(1).split(", ") == [f"CAP_{c}" for c in ("BPF", "PERFMON") if c in without]
    assert sorted(m.group(2).split(", ")) == sorted(f"CAP_{c}" for c in grantable) or (
        not grantable and m.group(2) == "none")
    assert "Traceback" not in p.stderr and not data.exists()


def test_agent_without_tracefs_says_what_degrades(tmp_path, probes_built):
    """No tracefs reachable (a private mount namespace without tracefs and debugfs) and no
    CAP_SYS_ADMIN to mount one: the self-check predicts which programs cannot attach, the
    recorder still records with the others, and the prediction matches what the kernel did."""
    if not is_root():
        pytest.skip("the mount namespace and the capability drop start from root (CI runs as root)")
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed for a mount namespace without tracefs")
    caps = [c for c in _chart_caps() if _status_caps("CapBnd") >> CAP_NUMBERS[c] & 1]
    data = tmp_path / "data"
    # --call-hooks: the only programs on tracefs tracepoints (the default policy has none)
    record = " ".join([*_drop_to(caps), sys.executable, "-m", "kprobe", "record", "--duration", "2", "--call-hooks",
                       "--data", str(data), "--no-otlp", "--flush-ms", "500"])
    script = ("for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do "
              "umount -l $m 2>/dev/null; done; "
              "test ! -e /sys/kernel/tracing/events && test ! -e /sys/kernel/debug/tracing/events || exit 97; "
              f"exec {record}")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    assert "warning: without CAP_SYS_ADMIN: mounting tracefs" in p.stderr, p.stderr[-3000:]
    status = json.loads((data / "status.json").read_text())
    assert status["capabilities"]["missing"]["mounting tracefs"] == ["SYS_ADMIN"]
    failed = {a["section"] for a in status["attach"] if not a["attached"]}
    attached = {a["section"] for a in status["attach"] if a["attached"]}
    assert failed and all(s.startswith("tracepoint/syscalls/") for s in failed), failed
    assert not any(s.startswith("tracepoint/") for s in attached)
    assert any(s == "tp_btf/sched_switch" for s in attached), attached
    assert sum(status["written"].values()) > 0
    assert Path("/sys/kernel/tracing/events").is_dir(), "the host's tracefs must be untouched"
