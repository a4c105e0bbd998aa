"""The route table of the HTTP API: one :class:`RouteTable` per resource module.

Each ``web/*_api.py`` module builds its own ``ROUTES = RouteTable()`` with the table's
``route`` decorator — nothing is registered in a global table at import time —, and
:data:`web.app.ROUTE_MODULES` lists the modules; :func:`assemble` makes the API of them
(the app's routes, the OpenAPI document and the route checks all read that one list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from web.bodies import schema_of

__all__ = ["BodyLimit", "Param", "Route", "RouteTable", "assemble"]

F = TypeVar("F", bound=Callable[..., Any])


#: Body limit classes of :class:`web.config.BodyLimits` a route may name.
BodyLimit = Literal["login", "api", "upload"]

#: A query parameter: (name, type or JSON schema, description).
Param = tuple[str, str | dict[str, Any], str]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Any
    role: str | None  # None: no token needed
    summary: str
    params: tuple[Param, ...] = ()  # query parameters
    body: dict[str, Any] | None = None  # JSON schema of the request body
    tag: str = "api"
    # the body's size class, checked before authentication and before the body is read
    limit: BodyLimit = "api"
    model: type[BaseModel] | None = None  # the body's model (web.bodies); gives ``body``
    status: int = 200  # the success status (202 for work queued)


class RouteTable(list[Route]):
    """The routes of one resource module, in the order they are declared."""

    def route(
        self,
        method: str,
        path: str,
        role: str | None,
        summary: str,
        *,
        params: tuple[Param, ...] = (),
        body: dict[str, Any] | None = None,
        tag: str = "api",
        limit: BodyLimit | None = None,
        model: type[BaseModel] | None = None,
        status: int = 200,
    ) -> Callable[[F], F]:
        """Declare the decorated handler as ``method path`` for ``role`` (None: no token)."""
        if model is not None:
            body = schema_of(model)
        if limit is None:  # CSV and GeoJSON uploads are big; everything else is small
            limit = "upload" if body is not None and _is_upload(body, tag) else "api"
        size: BodyLimit = limit

        def deco(fn: F) -> F:
            self.append(
                Route(method, path, fn, role, summary, params, body, tag, size, model, status)
            )
            return fn

        return deco


def _is_upload(body: dict[str, Any], tag: str) -> bool:
    return body.get("description") == "text/csv" or tag == "fences"


def _specificity(path: str) -> tuple[bool, ...]:
    # per segment: a parameter sorts after a literal (first match wins in the router)
    return tuple(seg.startswith("{") for seg in path.strip("/").split("/"))


def assemble(tables: Iterable[Sequence[Route]]) -> list[Route]:
    """One API of the modules' tables: a path with a literal segment comes before one with a
    parameter in its place (``/api/vehicles/export`` before ``/api/vehicles/{id}``; the
    router takes the first match), otherwise the declared order. Two routes for one method
    and path are an error naming both handlers."""
    out: list[Route] = []
    seen: dict[tuple[str, str], Route] = {}
    for table in tables:
        for r in table:
            key = (r.method, r.path)
            if key in seen:
                a, b = seen[key].handler, r.handler
                raise ValueError(
                    f"{r.method} {r.path} is declared twice: {a.__module__}.{a.__qualname__}"
                    f" and {b.__module__}.{b.__qualname__}"
                )
            seen[key] = r
            out.append(r)
    return sorted(out, key=lambda r: _specificity(r.path))
