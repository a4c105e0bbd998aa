"""The OpenAPI 3.1 document of ``/api``, generated from the route table in :mod:`web.api`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from web.routes import Route

__all__ = ["openapi_document"]

_TYPES = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
}


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {}},
}

_INVALID = {
    "type": "object",
    "required": ["error", "fields"],
    "properties": {
        "error": {"const": "invalid"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

_SESSION_ENDED = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"enum": ["unauthorized", "session_expired", "session_revoked"]}},
}

# path parameters: ids are safe in a URL path (ARCHITECTURE.md, "Ids are safe in a URL path")
_PATH_PARAM = {"type": "string", "minLength": 1, "maxLength": 200}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema if schema is not None else _ERROR}},
    }


_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _responses(r: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {}}
    if r.path.endswith("/export") or "/templates/" in r.path:  # files for a spreadsheet
        ok = {"text/csv": {}, _XLSX: {}}
    out: dict[str, Any] = {
        str(r.status): {"description": "Accepted" if r.status == 202 else "OK", "content": ok},
        "400": _json("bad request"),
        "404": _json("not found, or outside your organisation subtree"),
        "413": _json("request body larger than this route's limit (web.body_limits)"),
        "422": _json("the body breaks its model: each bad field with the reason", _INVALID),
        "503": _json("a part this route needs is not configured or busy"),
    }
    if r.role is not None:
        out["401"] = _json("no token, or its session expired or was revoked", _SESSION_ENDED)
        out["403"] = _json("role too low or outside your organisation")
    else:
        out["401"] = _json("wrong user name or password")
        out["429"] = _json("too many login attempts: wait Retry-After seconds")
    if r.method in ("POST", "PUT", "PATCH"):
        out["409"] = _json("conflicts with the current state")
    if r.status == 202:  # queued work has a bound on what may wait
        out["429"] = _json("too many unfinished requests of this kind: retry later")
    return out


def openapi_document(routes: Sequence[Route], title: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "tags": [r.tag],
            "responses": _responses(r),
        }
        if r.role is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Requires the **{r.role}** role (or higher)."
        params = [
            {"name": name, "in": "path", "required": True, "schema": dict(_PATH_PARAM)}
            for name in re.findall(r"{(\w+)}", r.path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "schema": t if isinstance(t, dict) else _TYPES.get(t, {}),
                "description": d,
            }
            for n, t, d in r.params
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            media = "text/csv" if r.body.get("description") == "text/csv" else "application/json"
            op["requestBody"] = {"required": True, "content": {media: {"schema": r.body}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{title} API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
