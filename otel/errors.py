"""Exceptions raised by the OTLP receiver (own module so servers and receiver share them)."""

from __future__ import annotations

__all__ = ["ReceiverBindError"]


class ReceiverBindError(OSError):
    """A receiver port could not be bound (usually: already in use).

    The message names the transport and ``host:port`` so the operator knows
    which of 4317/4318 to free or reconfigure.
    """

    def __init__(self, transport: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"{transport} receiver cannot bind {host}:{port}: {reason}")
        self.transport = transport
        self.host = host
        self.port = port
