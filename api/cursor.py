"""Opaque pagination cursors: a small JSON object, base64url-encoded.

Opaque so clients cannot build them (the server can change what it keeps in one), but not secret:
every field is re-validated on the way back in, and a cursor that does not decode is a 400.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from kprobe.api.errors import bad_request


def encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(state)).decode().rstrip("=")


def decode(token: str, fields: dict[str, type]) -> dict[str, Any]:
    """The cursor's fields, each of the type given; 400 when it is not one this API issued."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad_request("cursor is not one returned by this API") from None
    if not isinstance(state, dict) or set(state) != set(fields):
        raise bad_request("cursor is not one returned by this API")
    for k, t in fields.items():
        v = state[k]
        if type(v) is not t or (t is int and not 0 <= v < 2**63):
            raise bad_request("cursor is not one returned by this API")
    return state
