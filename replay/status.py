"""What the replayable capture reports to ``kprobe stats``: the newest session's meta.json.

Why no file of its own: the capture already rewrites its session's meta.json every second and at
stop (counters, rows written, attach errors), for a live or a finished session alike; `stats` reads
the newest one under DATA/replay and says what it cost and what it lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kprobe.replay.capture import META_FILE

__all__ = ["load", "render_lines"]


def load(data_dir: Path) -> dict[str, Any] | None:
    """The newest replay session's meta with its directory name, or None when there is none."""
    sessions = sorted((data_dir / "replay").glob(f"*/{META_FILE}"), key=lambda p: p.stat().st_mtime)
    for path in reversed(sessions):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return {**meta, "session": path.parent.name}
    return None


def render_lines(meta: dict[str, Any] | None) -> list[str]:
    if not meta:
        return []
    c, w = meta.get("counters", {}), meta.get("written", {})
    out = ["", f"replayable capture {meta['session']} ({'stopped' if meta.get('finished') else 'running'}): "
               f"syscall records {w.get('rsys', 0)}, data records {w.get('rdata', 0)}; lost: syscall records "
               f"{c.get('rsys_drops', 0)}, data records {c.get('rdata_drops', 0)}; calls truncated "
               f"{c.get('truncated_syscalls', 0)} ({c.get('truncated_bytes', 0)} bytes); time-probe hits in "
               f"processes not recorded {c.get('uprobe_hits_other_processes', 0)}"]
    out += [f"  attach: {e}" for e in meta.get("attach_errors", [])]
    return out
