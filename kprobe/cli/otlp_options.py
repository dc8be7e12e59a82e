"""The OTLP receiver's options of `kprobe record` and `kprobe run`: flags, defaults, help text, config."""

from __future__ import annotations

import argparse
import os

from kprobe.cli.common import Failed
from kprobe.otel.config import OtlpConfig

DEFAULT_GRPC, DEFAULT_HTTP = 4317, 4318  # the OTLP standard ports (same as kprobe.otel.receiver)
#: environment variables that replace those defaults (a flag still wins): a host whose collector already
#: owns the standard ports, or a test suite that must not depend on them being free, sets them once
ENV_GRPC, ENV_HTTP = "KPROBE_OTLP_GRPC_PORT", "KPROBE_OTLP_HTTP_PORT"


def add_otlp_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "OpenTelemetry spans",
        "Point SDK exporters at the receiver (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317) and set "
        "process.pid (resource) and thread.id (span attribute) so spans join kernel events. Card numbers "
        "are masked (BIN+last 4), CVV/track/PIN attributes dropped; counts in `kprobe stats`.")
    g.add_argument("--otlp-grpc-port", type=int, default=None, metavar="PORT",
                   help="OTLP/gRPC port on --otlp-host; 0 = any free port, -1 = off (default: 4317, or "
                        f"${ENV_GRPC}). If the port "
                        "is taken (another process would receive the applications' spans), kprobe refuses to "
                        "start: free it, choose another port, or pass --no-otlp")
    g.add_argument("--otlp-http-port", type=int, default=None, metavar="PORT",
                   help="OTLP/HTTP protobuf port (POST /v1/traces); 0 = any free port, -1 = off (default: 4318, "
                        f"or ${ENV_HTTP})")
    g.add_argument("--otlp-host", default="127.0.0.1", help="address the receiver binds (default: %(default)s)")
    g.add_argument("--no-otlp", action="store_true", help="do not start the OTLP receiver")


def otlp_config(args: argparse.Namespace) -> OtlpConfig | None:
    if getattr(args, "no_otlp", False):
        return None
    g = _env_port(ENV_GRPC, DEFAULT_GRPC) if args.otlp_grpc_port is None else args.otlp_grpc_port
    h = _env_port(ENV_HTTP, DEFAULT_HTTP) if args.otlp_http_port is None else args.otlp_http_port
    grpc = None if g < 0 else g
    http = None if h < 0 else h
    if grpc is None and http is None:
        return None
    # a taken port always stops start-up: recording "without spans" while another process receives the
    # applications' spans (and kprobe's users believe they are recorded) is the worse outcome (issue 18)
    return OtlpConfig(args.otlp_host, grpc, http, required=True)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise Failed(f"${name}={raw!r} is not a port number (0 = any free port, -1 = off)") from None
    if not -1 <= port <= 65535:
        raise Failed(f"${name}={port} is out of range (0 = any free port, -1 = off)")
    return port
