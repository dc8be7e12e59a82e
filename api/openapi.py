"""The OpenAPI 3.0 document the server serves at /api/v1/openapi.json, generated from the route table.

Response schemas are written here by hand from the JSON the CLI's ``to_json`` methods produce; the
property-based test (schemathesis) checks every answer against them, so they cannot drift unseen.
"""

from __future__ import annotations

from typing import Any

from kprobe.api.routes import PREFIX, ROUTES

_INT: dict[str, Any] = {"type": "integer"}
_STR: dict[str, Any] = {"type": "string"}
_NSTR: dict[str, Any] = {"type": "string", "nullable": True}
_NINT: dict[str, Any] = {"type": "integer", "nullable": True}
_OBJ: dict[str, Any] = {"type": "object"}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": extra}


def _page(item: str) -> dict[str, Any]:
    return _obj({"items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                 "next_cursor": _NSTR}, extra=False)


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": _STR, "message": _STR}, extra=False)}, extra=False),
    "Incident": _obj({"id": _STR, "start_ns": _INT, "end_ns": _INT, "duration_ns": _INT, "pid": _INT, "tid": _INT,
                      "comm": _STR, "what": _STR, "error": _STR,
                      "source": {"type": "string", "enum": ["span", "kernel"]}, "why": _STR}),
    "IncidentPage": _page("Incident"),
    "Span": _obj({"kind": _STR, "span_id": _STR, "trace_id": _STR, "name": _STR, "service": _STR, "host": _STR,
                  "pid": _INT, "tid": _NINT, "start_ns": _INT, "end_ns": _INT, "duration_ns": _INT,
                  "status": {"type": "string", "enum": ["ERROR", "OK", "UNSET"]}, "status_message": _STR}),
    "SpanPage": _page("Span"),
    "Trace": _obj({"trace_id": _STR, "spans": _arr({"$ref": "#/components/schemas/Span"}),
                   "explain_span_id": _STR}),
    "Analysis": _obj({"victim": _obj({"pid": _INT, "tid": _INT, "comm": _STR, "from_ns": _INT, "to_ns": _INT,
                                      "operation": _STR, "operation_ns": _INT}),
                      "root_cause": {**_OBJ, "nullable": True},
                      "breakdown": _obj({"wall_ns": _INT, "on_cpu_ns": _INT, "runq_ns": _INT, "blocked_ns": _INT},
                                        ["wall_ns", "on_cpu_ns", "runq_ns", "blocked_ns"]),
                      "chain": _arr(_obj({"kind": _STR}, ["kind"])),
                      "chain_text": _arr(_STR), "causes": _arr(_OBJ), "notes": _arr(_STR), "text": _STR},
                     ["victim", "root_cause", "breakdown", "chain", "chain_text", "causes", "notes", "text"]),
    # `kprobe why --payment/--order --json` (finance.timeline), its events paged
    "BusinessWhy": _obj({
        "key": _STR, "kind": {"type": "string", "enum": ["payment", "order"]}, "root_cause": _STR,
        "incidents": _arr(_STR), "notes": _arr(_STR),
        "events": _arr(_obj({"ts_ns": _INT, "end_ns": _INT, "label": _STR, "service": _STR, "kind": _STR,
                             "pid": _INT, "error": {"type": "boolean"}, "detail": _STR,
                             "window": {**_OBJ, "nullable": True}, "span_id": _STR})),
        "events_total": _INT, "next_cursor": _NSTR, "victim_span_id": _NSTR, "incident_id": _NSTR}),
    "Event": _obj({"type": _STR, "ts": _INT, "text": _STR}),
    "EventPage": _page("Event"),
    "Process": _obj({"pid": _INT, "comm": _STR, "exe": _STR, "cmdline": _STR, "service": _STR, "host": _STR,
                     "first_seen_ns": _INT, "last_seen_ns": _INT}),
    "ProcessPage": _page("Process"),
    "Stats": _obj({"stored": {"type": "object", "additionalProperties": _INT}, "recording": {"type": "boolean"},
                   "recorder": _OBJ, "otel": {**_OBJ, "nullable": True}, "dataflows": _arr(_OBJ)}),
    "Extent": _obj({"from_ns": _NINT, "to_ns": _NINT, "from": _NSTR, "to": _NSTR}, extra=False),
    "SearchResult": _obj({"q": _STR, "matches": _arr(_obj(
        {"kind": {"type": "string", "enum": ["incident", "trace", "span", "pid", "payment", "order", "attribute"]},
         "id": _STR, "label": _STR, "route": _STR}))}),
    "Timeline": _obj({
        "from": _STR, "to": _STR, "from_ns": _INT, "to_ns": _INT, "width": _INT, "bucket_ns": _INT,
        "bucket0_ns": _INT, "rows": _arr(_STR),
        "lanes": _arr(_obj({"tgid": _INT, "tid": _INT, "comm": _STR, "process": _STR, "service": _STR})),
        "items": _arr(_obj({"lane": _INT, "kind": _STR, "row": _STR, "cls": _STR, "t0": _INT, "t1": _INT,
                            "ts": _STR, "text": _STR}, ["lane", "kind", "row", "cls", "t0", "t1", "ts", "text"])),
        "buckets": _obj({k: _arr(_INT) for k in ("lane", "b", "n", "busy_ns")}
                        | {k: _arr(_STR) for k in ("row", "cls")}, extra=False),
        "truncated": {"type": "boolean"}, "took_ms": {"type": "number"},
        "lod": _obj({"level_ns": _NINT})}),
}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(r: Any) -> dict[str, Any]:
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "pattern": rx}}
              for n, rx in r.path_params] + [p.openapi() for p in r.params]
    responses: dict[str, Any] = {
        "200": {"description": "OK",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.response}"}}}},
        "400": _error("a parameter is missing, unknown, repeated or out of range (the message says which)"),
        "401": _error("no or wrong bearer token"),
        "503": _error("the store did not answer (recorder restarting, store locked)"),
    }
    if r.not_found:
        responses["404"] = _error("nothing recorded for that id or window")
    op_id = r.path.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "root"
    return {"operationId": op_id, "summary": r.summary, "parameters": params, "responses": responses}


def document(server_url: str = "/") -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "kprobe API", "version": "1",
                 "description": "Read-only access to a kprobe recording: incidents and their kernel root causes, "
                                "payments and orders by their ids, spans, kernel events, processes, and the zoomable "
                                "timeline. Every request but this document needs "
                                "`Authorization: Bearer <DATA/api-token>`."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {PREFIX + r.path: {"get": _operation(r)} for r in ROUTES},
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
