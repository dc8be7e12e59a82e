"""The tick rate the probes' socket folding counts in: read from the kernel's configuration, 0 without one."""

from __future__ import annotations

import gzip
from pathlib import Path

from kprobe.agent.kernel_hz import interval_jiffies, kernel_hz


def test_hz_from_plain_or_gzipped_config_and_zero_without(tmp_path: Path) -> None:
    plain, gz, missing = tmp_path / "config", tmp_path / "config.gz", tmp_path / "nope"
    plain.write_bytes(b"CONFIG_HZ_250=y\nCONFIG_HZ=250\n")
    gz.write_bytes(gzip.compress(b"# CONFIG_HZ_PERIODIC is not set\nCONFIG_HZ=1000\n"))
    assert kernel_hz((missing, plain)) == 250
    assert kernel_hz((gz, plain)) == 1000
    assert kernel_hz((missing,)) == 0
    assert interval_jiffies(100, 250) == 25 and interval_jiffies(100, 300) == 30 and interval_jiffies(1, 250) == 1
    assert interval_jiffies(100, 0) == 0 and interval_jiffies(0, 250) == 0


def test_this_kernel_reports_a_plausible_rate() -> None:
    hz = kernel_hz()
    assert hz == 0 or hz in (100, 250, 300, 1000), hz
