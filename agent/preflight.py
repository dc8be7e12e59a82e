"""Checks before loading probes, each failing with a message that says what to do."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from kprobe.agent import capabilities
from kprobe.agent.capabilities import CapabilityReport
from kprobe.agent.probeset import BUILD_DIR
from kprobe.schemas.tables import PROBES

MIN_KERNEL = (5, 8)  # BPF ring buffer; tp_btf needs 5.5


class PreflightError(RuntimeError):
    pass


def check_privileges(replayable: bool = False) -> CapabilityReport:
    """The agent's capabilities against what its features need (agent/capabilities.py): an error
    naming exactly the missing capabilities when no probe could load, else the report, whose
    warnings say what degrades."""
    report = capabilities.check(replayable)
    if not report.can_record:
        raise PreflightError(report.error())
    return report


def kernel_version(release: str | None = None) -> tuple[int, int]:
    rel = release or platform.release()
    parts = rel.split("-")[0].split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def check_kernel(btf: Path = Path("/sys/kernel/btf/vmlinux"), release: str | None = None) -> None:
    ver = kernel_version(release)
    if ver < MIN_KERNEL:
        raise PreflightError(
            f"kernel {ver[0]}.{ver[1]} is too old: kprobe needs {MIN_KERNEL[0]}.{MIN_KERNEL[1]}+ (BPF ring buffer)"
        )
    if not btf.exists():
        raise PreflightError(
            f"no kernel BTF at {btf}: CO-RE probes need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )


def check_probes_built(build_dir: Path = BUILD_DIR) -> None:
    missing = [p for p in PROBES if not (build_dir / f"{p}.bpf.o").exists()]
    if missing:
        raise PreflightError(
            f"probe objects not built ({', '.join(missing)}): run `make probes` (needs clang, bpftool, libbpf-dev)"
        )


def check_data_dir(data: Path) -> None:
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PreflightError(f"cannot create data directory {data}: {e.strerror}") from e
    if not os.access(data, os.W_OK | os.X_OK):
        raise PreflightError(f"data directory {data} is not writable")


def check_all(data: Path, replayable: bool = False) -> CapabilityReport:
    check_kernel()
    report = check_privileges(replayable)
    check_probes_built()
    check_data_dir(data)
    return report
