"""Where the embedded OTLP receiver listens (no imports: the CLI builds it before loading anything heavy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OtlpConfig:
    """A port of None disables that transport; 0 picks a free one (read it back from the receiver)."""

    host: str = "127.0.0.1"
    grpc_port: int | None = 4317
    http_port: int | None = 4318
    required: bool = True   # False: if a port is taken, record without spans (and say so) instead of failing
