"""The Starlette application: the page, the API, the live feed, health and metrics.

``create_app(ctx)`` builds it from an :class:`~web.context.AppContext`; its
lifespan opens the accounts database and runs the live feed ticker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

import web.fences_api  # noqa: F401  - registers the fence routes in API
from fleetwatch.errors import FleetWatchError
from stream.server import FeedCollector, FeedServer
from web.accounts import Accounts
from web.api import API, JSON, ApiState, map_error
from web.api import Route as ApiRoute
from web.auth import LoginLimiter, Principal
from web.context import AppContext
from web.openapi import openapi_document

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def _endpoint(r: ApiRoute, st: ApiState) -> Any:
    async def handle(request: Request) -> Response:
        principal: Principal | None = None
        if r.role is not None:
            token = _token(request)
            principal = await st.accounts.principal(token) if token else None
            if principal is None:
                return JSON(
                    {"error": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not principal.may(r.role):
                return JSON({"error": f"needs the {r.role} role"}, status_code=403)
        try:
            result = await r.handler(request, st, principal)
        except HTTPException as exc:
            return JSON({"error": exc.detail}, status_code=exc.status_code)
        except FleetWatchError as exc:
            mapped = map_error(exc)
            return JSON({"error": mapped.detail}, status_code=mapped.status_code)
        return result if isinstance(result, Response) else JSON(result)

    return handle


def create_app(ctx: AppContext) -> Starlette:
    """The whole web server for one service instance."""
    cfg = ctx.config
    accounts = Accounts(cfg, ctx.clock_ms)
    st = ApiState(ctx, accounts, LoginLimiter(cfg.web.login_attempts_per_min))

    async def feed_auth(token: str) -> str | None:
        p = await accounts.principal(token)
        return p.org if p is not None else None

    feed_server = FeedServer(ctx.feed, feed_auth, ctx.clock_ms)
    ctx.metrics.register(FeedCollector(ctx.feed))
    doc = openapi_document(API, cfg.service.name)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(request: Request) -> Response:
        h = ctx.health()
        return JSON(h, status_code=200 if h.get("ok") else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSON(doc)

    async def not_found(request: Request) -> Response:
        return JSON({"error": "no such API route"}, status_code=404)

    routes: list[BaseRoute] = [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/openapi.json", openapi),
        WebSocketRoute("/ws/live", feed_server.endpoint),
    ]
    for r in API:
        routes.append(Route(r.path, _endpoint(r, st), methods=[r.method], name=r.handler.__name__))
    routes.append(
        Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    )
    routes.append(Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await accounts.open()
        ticker = asyncio.create_task(feed_server.run(), name="live-feed-ticker")
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await accounts.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.api = st
    app.state.accounts = accounts
    app.state.feed_server = feed_server
    return app
