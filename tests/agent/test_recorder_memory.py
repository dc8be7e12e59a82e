"""A real recorder's resident memory as `kprobe stats` shows it, against the kernel's own numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

KPROBE = [sys.executable, "-m", "kprobe"]


@pytest.fixture
def root(probes_built):
    if os.geteuid() != 0:
        pytest.skip("attaching eBPF probes needs root (CI runs as root)")


def test_stats_show_the_resident_set_and_its_kinds(root, tmp_path) -> None:
    data = tmp_path / "d"
    rec = subprocess.run([*KPROBE, "record", "--data", str(data), "--duration", "4", "--no-otlp"],
                         capture_output=True, text=True, timeout=180)
    assert rec.returncode == 0, rec.stderr[-3000:]
    stats = json.loads(subprocess.run([*KPROBE, "stats", "--data", str(data), "--json"], capture_output=True,
                                      text=True, timeout=120, check=True).stdout)
    res = stats["recorder"]["resources"]
    # the kernel's split adds up to the resident set (kB rounding only)
    assert abs(res["rss_mb"] - res["rss_anon_mb"] - res["rss_file_mb"] - res["rss_shmem_mb"]) < 0.1, res
    assert res["rss_peak_mb"] >= res["rss_mb"] > 50, res
    mem = res["memory"]
    # the engine is loaded in this process, its code is resident; the rings are mapped and written
    assert mem["engine_code_mb"] > 10 and mem["rings_mb"] > 0.1 and mem["threads"] >= 3, mem
    # the smaps split is of the same resident set: its parts cannot exceed it (sampled apart: 10 % slack)
    parts = sum(mem[k] for k in ("engine_code_mb", "other_code_mb", "data_files_mb", "rings_mb", "heap_mb",
                                 "stacks_mb", "anon_other_mb"))
    assert parts <= res["rss_peak_mb"] * 1.1, (parts, res)
    text = subprocess.run([*KPROBE, "stats", "--data", str(data)], capture_output=True, text=True, timeout=120,
                          check=True).stdout
    assert f"resident {res['rss_mb']:.0f} MB" in text and "resident by kind" in text and "BPF rings" in text, text
