"""The Starlette application: the page, the API, the live feed, health and metrics.

``create_app(ctx)`` builds it from an :class:`~web.context.AppContext`; its
lifespan opens the accounts database and runs the live feed ticker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

import web.drivers_api  # registers the driver record routes in API
import web.fences_api  # registers the fence routes in API
import web.quota_api  # registers the quota routes in API
import web.vehicles_api  # registers the vehicle record routes in API
from fleetwatch.errors import FleetWatchError
from stream.server import FeedCollector, FeedServer
from web.accounts import Accounts
from web.api import API, JSON, ApiState, apply_orders, handle_command, map_error
from web.api import Route as ApiRoute
from web.auth import LoginLimiter, Principal
from web.context import AppContext
from web.openapi import openapi_document
from web.records import Records

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"

log = logging.getLogger(__name__)


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


async def _restore(st: ApiState) -> None:
    """What the API changed before a restart: fence changes over the configuration's
    fences, then the approved orders to the rules engine (their covers published)."""
    n_fences = await web.fences_api.restore_fences(st)
    orders = await st.records.orders()
    n_orders = await apply_orders(st, orders)
    if n_fences or orders:
        log.info(
            "restored %d fence changes, %d orders (%d approved) from the web database",
            n_fences,
            len(orders),
            n_orders,
        )


def create_app(ctx: AppContext) -> Starlette:
    """The whole web server for one service instance."""
    cfg = ctx.config
    accounts = Accounts(cfg, ctx.clock_ms)
    records = Records(accounts)
    st = ApiState(ctx, accounts, LoginLimiter(cfg.web.login_attempts_per_min), records)

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
        await records.open()
        await _restore(st)
        tasks = [asyncio.create_task(feed_server.run(), name="live-feed-ticker")]
        if ctx.commands is not None:

            async def handle(cmd: dict[str, Any]) -> None:
                await handle_command(st, cmd)

            tasks.append(asyncio.create_task(ctx.commands.listen(handle), name="web-commands"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await accounts.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.api = st
    app.state.accounts = accounts
    app.state.feed_server = feed_server
    return app
