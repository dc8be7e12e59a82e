"""`kprobe record/run --decode-payloads [--domain-map FILE]`: the options and the capture they start
(the capture itself: protocols/capture.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kprobe.cli.common import Failed


def add_payload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decode-payloads", action="store_true",
                   help="decode the TCP payloads of watched processes (HTTP/1.1, PostgreSQL, FIX, ISO 8583, "
                        "ISO 20022) into spans, source kprobe.decoded: traces without instrumentation. Needs a "
                        "watch list; card data is masked and only decoded fields are stored")
    p.add_argument("--domain-map", type=Path, default=None,
                   help="with --decode-payloads: domain map YAML whose `ports` name the protocol of server ports "
                        "the bytes do not identify (ISO 8583) (default: $KPROBE_DOMAIN_MAP)")


def start_payload_capture(args: argparse.Namespace, session):  # noqa: ANN001 - EmbeddedSession; -> PayloadCapture | None
    if not getattr(args, "decode_payloads", False):
        return None
    probes = session.recorder.probes
    if not (probes.config.filter_on or probes.config.watch_pids or probes.config.watch_comms):
        raise Failed("--decode-payloads needs --watch-comm/--watch-pid (or kprobe run): "
                     "the payloads of unwatched processes are never captured", 1)
    # decoded spans go where the session's spans go: the embedded store, or with --kafka the sink
    # (topic <prefix>.spans, beside the OTLP spans)
    store = getattr(session, "store", None) or getattr(session, "sink", None)
    if store is None:
        raise Failed("--decode-payloads needs a store or a Kafka sink for the decoded spans", 1)
    ports: dict[int, str] = {}
    path = getattr(args, "domain_map", None) or os.environ.get("KPROBE_DOMAIN_MAP")
    if path:
        from kprobe.finance.domain import DomainMapError, load  # lazy: YAML and numpy, only with a domain map

        try:
            ports = load(Path(path)).ports
        except DomainMapError as e:
            raise Failed(str(e), 1) from None
    from kprobe.protocols.capture import PayloadCapture  # lazy: numpy, libbpf, the decoders (~150 ms)

    host = {"host": session.recorder.host} if getattr(args, "host_name", None) else {}   # --host-name names spans too
    cap = PayloadCapture(probes, write=store.write, ports=ports, status_dir=Path(args.data), **host).start()
    print("kprobe: decoding payloads of watched processes into spans", file=sys.stderr)
    return cap
