"""OTLP receiver options shared by `kprobe record`, `kprobe run` and `kprobe demo`.

Kept here (not in kprobe/cli.py) so the receiver owns its flags, defaults and help text.
"""

from __future__ import annotations

import argparse

from kprobe.otel.config import OtlpConfig

DEFAULT_GRPC, DEFAULT_HTTP = 4317, 4318  # the OTLP standard ports (same as kprobe.otel.receiver)


def add_otlp_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "OpenTelemetry spans",
        "Point SDK exporters at the receiver (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317) and set "
        "process.pid (resource) and thread.id (span attribute) so spans join kernel events. Card numbers "
        "are masked (BIN+last 4), CVV/track/PIN attributes dropped; counts in `kprobe stats`.")
    g.add_argument("--otlp-grpc-port", type=int, default=None, metavar="PORT",
                   help="OTLP/gRPC port on --otlp-host; 0 = any free port, -1 = off (default: 4317). A port given "
                        "here must bind or kprobe exits; if a default port is taken, recording goes on without "
                        "spans and says so")
    g.add_argument("--otlp-http-port", type=int, default=None, metavar="PORT",
                   help="OTLP/HTTP protobuf port (POST /v1/traces); 0 = any free port, -1 = off (default: 4318)")
    g.add_argument("--otlp-host", default="127.0.0.1", help="address the receiver binds (default: %(default)s)")
    g.add_argument("--no-otlp", action="store_true", help="do not start the OTLP receiver")


def otlp_config(args: argparse.Namespace) -> OtlpConfig | None:
    if getattr(args, "no_otlp", False):
        return None
    explicit = args.otlp_grpc_port is not None or args.otlp_http_port is not None
    g = DEFAULT_GRPC if args.otlp_grpc_port is None else args.otlp_grpc_port
    h = DEFAULT_HTTP if args.otlp_http_port is None else args.otlp_http_port
    grpc = None if g < 0 else g
    http = None if h < 0 else h
    if grpc is None and http is None:
        return None
    return OtlpConfig(args.otlp_host, grpc, http, required=explicit)
