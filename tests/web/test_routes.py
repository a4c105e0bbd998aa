"""The API is assembled from the route modules' own tables (web.routes), in one explicit list."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import compile_path

import web.app
from web.routes import RouteTable, assemble


async def _h(*_: Any) -> None:
    return None


def test_a_table_holds_only_its_own_routes_and_nothing_global() -> None:
    a, b = RouteTable(), RouteTable()
    a.route("GET", "/api/a", "viewer", "A")(_h)
    b.route("POST", "/api/b", "admin", "B", body={"description": "text/csv"})(_h)
    assert [(r.method, r.path) for r in a] == [("GET", "/api/a")]
    assert [(r.method, r.path, r.limit) for r in b] == [("POST", "/api/b", "upload")]
    assert [r.path for r in assemble([a, b])] == ["/api/a", "/api/b"]


def test_the_same_method_and_path_twice_is_an_error_naming_both() -> None:
    a, b = RouteTable(), RouteTable()
    a.route("GET", "/api/x/{id}", "viewer", "one")(_h)
    b.route("GET", "/api/x/{id}", "viewer", "two")(_h)
    with pytest.raises(ValueError, match=r"GET /api/x/\{id\} is declared twice"):
        assemble([a, b])
    b2 = RouteTable()
    b2.route("PATCH", "/api/x/{id}", "admin", "another method")(_h)
    assert len(assemble([a, b2])) == 2


def test_a_literal_segment_comes_before_a_parameter_whatever_the_module_order() -> None:
    a, b = RouteTable(), RouteTable()
    a.route("GET", "/api/v/{id}", "viewer", "detail")(_h)
    b.route("GET", "/api/v/export", "viewer", "export")(_h)
    assert [r.path for r in assemble([a, b])] == ["/api/v/export", "/api/v/{id}"]


def test_the_app_api_is_exactly_the_listed_modules_routes() -> None:
    tables = [m.ROUTES for m in web.app.ROUTE_MODULES]
    assert len(web.app.API) == sum(len(t) for t in tables) > 50
    assert {id(r) for r in web.app.API} == {id(r) for t in tables for r in t}
    # every module under web/ that declares routes is listed (no table left out)
    import importlib
    import pkgutil

    listed = {m.__name__ for m in web.app.ROUTE_MODULES}
    for info in pkgutil.iter_modules(web.__path__):
        mod = importlib.import_module(f"web.{info.name}")
        if isinstance(getattr(mod, "ROUTES", None), RouteTable):
            assert mod.__name__ in listed, f"{mod.__name__} has ROUTES but is not in ROUTE_MODULES"


def test_every_literal_path_is_matched_by_its_own_route_first() -> None:
    paths: list[str] = []
    for r in web.app.API:
        if r.path not in paths:
            paths.append(r.path)
    for p in paths:
        sample = p.replace("{", "").replace("}", "")  # a parameter's name as its value
        first = next(q for q in paths if compile_path(q)[0].match(sample))
        if "{" not in p:
            assert first == p, f"{p} is shadowed by {first}"
