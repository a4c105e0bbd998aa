"""The OpenAPI 3.1 document of ``/api``, generated from the route table in :mod:`web.api`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from web.api import Route

__all__ = ["openapi_document"]

_TYPES = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
}


def openapi_document(routes: Sequence[Route], title: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "tags": [r.tag],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "400": {"description": "bad request"},
                "401": {"description": "no or expired token"},
                "403": {"description": "role too low or outside your organisation"},
                "404": {"description": "not found, or outside your organisation subtree"},
            },
        }
        if r.role is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Requires the **{r.role}** role (or higher)."
        else:
            op["responses"]["429"] = {"description": "too many failed logins"}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", r.path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "schema": _TYPES.get(t, {}),
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
