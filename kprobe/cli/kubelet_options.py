"""The Kubernetes pod identity options of `kprobe record`/`run` (what they feed: agent/pod_identity.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kprobe.agent.pod_identity import SA_DIR, KubeletConfig
from kprobe.cli.common import Failed


def add_kubelet_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kubernetes pod identity (optional: without it events carry the container id "
                             "and pod uid from the cgroup path only)")
    g.add_argument("--kubelet-url", default=os.environ.get("KPROBE_KUBELET_URL") or None, metavar="URL",
                   help="the node's kubelet, whose /pods names pods, namespaces, labels and workloads: "
                        "https://NODE_IP:10250 (token below) or the read-only http://NODE_IP:10255 "
                        "(default: $KPROBE_KUBELET_URL, else none)")
    g.add_argument("--kubelet-token-file", type=Path, default=SA_DIR / "token", metavar="FILE",
                   help="bearer token sent to the kubelet, re-read at every fetch (default: %(default)s if it exists)")
    g.add_argument("--kubelet-ca", type=Path, default=SA_DIR / "ca.crt", metavar="FILE",
                   help="CA that signed the kubelet's serving certificate (default: %(default)s if it exists)")
    g.add_argument("--kubelet-insecure-tls", action="store_true",
                   help="do not verify the kubelet's certificate (self-signed serving certificates)")
    g.add_argument("--kubelet-refresh-s", type=float, default=30.0, metavar="S",
                   help="re-read the pod list at least this often; a process of a pod not in it triggers a "
                        "re-read at most every 2 s, failures back off to 5 min (default: %(default)s)")


def kubelet_config(args: argparse.Namespace) -> KubeletConfig | None:
    url = getattr(args, "kubelet_url", None)
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise Failed(f"--kubelet-url must start with http:// or https://, not {url!r}", 1)
    return KubeletConfig(url, args.kubelet_token_file, args.kubelet_ca, args.kubelet_insecure_tls,
                         refresh_s=args.kubelet_refresh_s)
