"""What payload capture reports to ``kprobe stats``: a small JSON file beside the store.

Why a file: the capture runs inside the recorder process but is not part of the recorder's own
statistics (it is optional and loaded beside it, like the replay probe); the file is rewritten
every second and at stop, so ``kprobe stats`` shows it for a live or a finished session alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATUS_FILE", "write", "load", "render_lines"]

STATUS_FILE = "payload-status.json"


def write(data_dir: Path, status: dict[str, Any]) -> None:
    tmp = data_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, data_dir / STATUS_FILE)


def load(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def render_lines(status: dict[str, Any] | None) -> list[str]:
    if not status:
        return []
    c = status.get("counters", {})
    out = ["", f"payload capture ({'running' if status.get('running') else 'stopped'}): "
               f"decoded spans written {c.get('decoded_spans_written', 0)}, write errors "
               f"{c.get('decoded_span_write_errors', 0)}; records lost {c.get('payload_drops', 0)} "
               f"({c.get('payload_drops_ring_not_full', 0)} with room left in the ring), "
               f"calls truncated {c.get('payload_truncated_calls', 0)} ({c.get('payload_truncated_bytes', 0)} bytes), "
               f"gaps {c.get('payload_gaps', 0)}, unidentified connections {c.get('payload_unidentified_connections', 0)}, "
               f"decoder errors {c.get('decoder_errors', 0)}"]
    ring = status.get("ring")
    if ring:
        out.append(f"  ring {ring['ring_bytes'] >> 20} MiB: {ring['records']} records, {ring['bytes']} bytes drained, "
                   f"fullest seen {ring['peak_pending_bytes']} bytes; short records {c.get('payload_short_records', 0)}")
    if status.get("tls_libraries"):
        out.append(f"  TLS plaintext from OpenSSL uprobes on {', '.join(status['tls_libraries'])}; SSL calls whose "
                   f"socket was never seen {c.get('payload_tls_socket_unknown', 0)}")
    for err in status.get("tls_errors", []):
        out.append(f"  TLS: {err}")
    for proto, s in sorted(status.get("protocols", {}).items()):
        out.append(f"  {proto:<10} messages {s['messages']}, exchanges {s['exchanges']}, malformed {s['malformed']}, "
                   f"oversized {s['oversized']}, unanswered {s['unanswered']}, unmatched {s['unmatched']}, "
                   f"abandoned {s['abandoned']}")
    return out
