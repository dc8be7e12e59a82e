"""The agent with only the chart's capabilities attaches its probes on this kernel.

A container runtime gives the agent's container a bounding set of exactly the capabilities the
chart adds (uid 0 then gets those and no others). setpriv does the same to `kprobe record` here:
bounding set = the chart's default `agent.capabilities` (those this machine can grant at all),
no inheritable or ambient capabilities; so no CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, CAP_SYS_PTRACE.
Every program must attach and events must be stored; a failure names the programs and errors.
"""

from __future__ import annotations

import json
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
    print(f"attached {len(status['attach'])} programs with {granted}"
          + (f"; {absent} not grantable here, not needed on this kernel" if absent else ""))
