"""Find already-running processes by name, so --watch-comm also covers what started before us."""

from __future__ import annotations

from pathlib import Path


def pids_by_comm(names: list[str], proc: Path = Path("/proc")) -> list[int]:
    wanted = {n[:15] for n in names}
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if comm in wanted:
            out.append(int(d.name))
    return out
