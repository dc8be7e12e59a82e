"""Query parameters declared once: the same declaration validates a request and documents it in OpenAPI.

Why one declaration: a parameter documented one way and parsed another is exactly the kind of drift a
property-based run against the served OpenAPI finds. Validation is strict (unknown names, repeated
names, out-of-range numbers are 400s) so that a typo is an error, never a silently ignored filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from kprobe.api.errors import bad_request

Kind = Literal["int", "str", "ts", "enum", "enum_list", "hex16", "hex32", "cursor"]

# ns since the epoch (up to 19 digits, below 2**63) or ISO-8601 with up to 9 fractional digits, as
# kprobe.query.timefmt.parse_ts accepts them
TS_PATTERN = (r"^(1?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
              r"(Z|[+-][0-9]{2}:[0-9]{2})?)$")
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
MAX_TS_NS = 4_102_444_800_000_000_000     # 2100-01-01: anything later is a typo, not a time


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    description: str
    required: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()
    max_length: int = 128
    max_items: int = 16
    pattern: str | None = None     # for kind "str"

    def schema(self) -> dict[str, Any]:
        """The OpenAPI 3.0 schema of this parameter's value."""
        if self.kind == "int":
            s: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                s["minimum"] = self.minimum
            if self.maximum is not None:
                s["maximum"] = self.maximum
        elif self.kind == "ts":
            s = {"type": "string", "pattern": TS_PATTERN}
        elif self.kind == "enum":
            s = {"type": "string", "enum": list(self.enum)}
        elif self.kind == "enum_list":
            s = {"type": "array", "items": {"type": "string", "enum": list(self.enum)}, "minItems": 1,
                 "maxItems": self.max_items}
        elif self.kind in ("hex16", "hex32"):
            n = 16 if self.kind == "hex16" else 32
            s = {"type": "string", "pattern": f"^[0-9a-fA-F]{{{n}}}$"}
        elif self.kind == "cursor":
            s = {"type": "string", "pattern": CURSOR_PATTERN}
        else:
            s = {"type": "string", "minLength": 1, "maxLength": self.max_length}
            if self.pattern:
                s["pattern"] = self.pattern
        if self.default is not None:
            s["default"] = self.default
        return s

    def openapi(self) -> dict[str, Any]:
        p: dict[str, Any] = {"name": self.name, "in": "query", "required": self.required,
                             "description": self.description, "schema": self.schema()}
        if self.kind == "enum_list":
            p["style"], p["explode"] = "form", False      # ?type=offcpu,syscall
        return p

    def parse(self, raw: str) -> Any:
        """The typed value of ``raw``; a 400 naming the parameter when it does not fit."""
        n = self.name
        if self.kind == "int":
            if not re.fullmatch(r"-?[0-9]{1,19}", raw):
                raise bad_request(f"{n} must be an integer, got {raw[:40]!r}")
            v = int(raw)
            if (self.minimum is not None and v < self.minimum) or (self.maximum is not None and v > self.maximum):
                raise bad_request(f"{n} must be between {self.minimum} and {self.maximum}, got {v}")
            return v
        if self.kind == "ts":
            from kprobe.query.timefmt import parse_ts

            if not re.fullmatch(TS_PATTERN, raw):
                raise bad_request(f"{n} must be ns since the epoch or ISO-8601 (2026-11-27T03:47:12.004Z), "
                                  f"got {raw[:40]!r}")
            try:
                v = parse_ts(raw)
            except ValueError as e:
                raise bad_request(f"{n}: {e}") from None
            if not 0 < v < MAX_TS_NS:
                raise bad_request(f"{n} is out of range (after 1970, before 2100)")
            return v
        if self.kind == "enum":
            if raw not in self.enum:
                raise bad_request(f"{n} must be one of {', '.join(self.enum)}, got {raw[:40]!r}")
            return raw
        if self.kind == "enum_list":
            items = raw.split(",")
            bad = [i for i in items if i not in self.enum]
            if bad or not items or len(items) > self.max_items:
                raise bad_request(f"{n} must be a comma-separated list of {', '.join(self.enum)}")
            return list(dict.fromkeys(items))
        if self.kind in ("hex16", "hex32"):
            width = 16 if self.kind == "hex16" else 32
            if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", raw):
                raise bad_request(f"{n} must be {width} hex digits, got {raw[:40]!r}")
            return raw.lower()
        if self.kind == "cursor":
            if not re.fullmatch(CURSOR_PATTERN, raw):
                raise bad_request(f"{n} is not a cursor returned by this API")
            return raw
        if not 1 <= len(raw) <= self.max_length:
            raise bad_request(f"{n} must be 1 to {self.max_length} characters")
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise bad_request(f"{n} must match {self.pattern}")
        return raw


def parse_query(params: tuple[Param, ...], query: dict[str, list[str]]) -> dict[str, Any]:
    """Validated values by parameter name (defaults filled in); 400 on unknown, repeated or missing ones."""
    known = {p.name: p for p in params}
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise bad_request(f"unknown parameter(s): {', '.join(u[:40] for u in unknown[:5])}; "
                          f"this endpoint takes: {', '.join(known) or 'none'}")
    out: dict[str, Any] = {}
    for p in params:
        values = query.get(p.name)
        if not values:
            if p.required:
                raise bad_request(f"{p.name} is required")
            out[p.name] = p.default
            continue
        if len(values) > 1:
            raise bad_request(f"{p.name} given {len(values)} times; give it once")
        out[p.name] = p.parse(values[0])
    return out
