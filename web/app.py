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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

import web.alarms_api
import web.commands_api
import web.costs_api
import web.drivers_api
import web.fences_api
import web.geo_api
import web.ops_api
import web.orders_api
import web.positions_api
import web.quota_api
import web.reports_api
import web.session_api
import web.users_api
import web.vehicles_api
from fleet import aio
from fleet.errors import FleetWatchError
from stream.server import FeedCollector, FeedServer
from web.accounts import Accounts, HashBusy
from web.api import JSON, ApiState, map_error
from web.auth import LoginLimiter, Principal, Refused
from web.bodies import Invalid
from web.bus import handle_command
from web.config import AuthConfig
from web.context import AppContext
from web.headers import SecurityHeaders, content_security_policy
from web.openapi import openapi_document
from web.records import Records
from web.routes import Route as ApiRoute
from web.routes import assemble

__all__ = ["API", "ROUTE_MODULES", "STATIC", "create_app"]

#: The API's resource modules, each with its own ``ROUTES`` table (web.routes): the API is
#: exactly their routes. A new resource module is added here, nowhere else.
ROUTE_MODULES = (
    web.session_api,  # log in and out, the duty operator, /api/me
    web.users_api,  # users, tokens, the audit log
    web.vehicles_api,  # 一车一档: the vehicle list and detail, records, requests, import/export
    web.positions_api,  # tracks, the day's figures
    web.alarms_api,  # alarms: list, export, ack, close by hand
    web.commands_api,  # downlink commands to terminals
    web.fences_api,  # fences
    web.geo_api,  # places and the gazetteer
    web.ops_api,  # dead letters, dead notifications
    web.orders_api,  # dispatch orders
    web.drivers_api,  # 一人一档: drivers
    web.quota_api,  # 编制: the quota
    web.reports_api,  # reports and the board summary
    web.costs_api,  # 运行费用
)

#: Every route of the API (the app's routes, the OpenAPI document).
API: list[ApiRoute] = assemble(m.ROUTES for m in ROUTE_MODULES)

STATIC = Path(__file__).parent / "static"
# The application built by `make assets` (web/frontend/, Vite) into web/static/app/.
APP_INDEX = STATIC / "app" / "index.html"

log = logging.getLogger(__name__)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


class _TooLarge(Exception):
    pass


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk, stopping as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Response:
    return JSON({"error": "body_too_large", "limit_bytes": limit}, status_code=413)


def _endpoint(routes: list[ApiRoute], st: ApiState) -> Any:
    """One Starlette endpoint for all methods of one path (so a 405 names them all).

    Order of checks: the declared body size (413 before anything is read or the
    caller is known), the token (401 with why), the role (403), then the body,
    read with the same cap (a body without Content-Length stops at the limit).
    """
    by_method = {r.method: r for r in routes}
    if "GET" in by_method:
        by_method.setdefault("HEAD", by_method["GET"])
    limits = st.ctx.config.web.body_limits

    async def handle(request: Request) -> Response:
        r = by_method[request.method]  # the router answered 405 for any other method
        limit: int = getattr(limits, r.limit)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return JSON({"error": "bad Content-Length"}, status_code=400)
            if int(declared) > limit:
                return _too_large(limit)
        principal: Principal | None = None
        if r.role is not None:
            token = _token(request)
            found = await st.accounts.authenticate(token) if token else Refused("unauthorized")
            if isinstance(found, Refused):
                return JSON(
                    {"error": found.reason},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            principal = found
            if not principal.may(r.role):
                return JSON({"error": f"needs the {r.role} role"}, status_code=403)
        try:
            request._body = await _read_capped(request, limit)  # what request.body() returns
        except _TooLarge:
            return _too_large(limit)
        try:
            result = await r.handler(request, st, principal)
        except Invalid as exc:
            return JSON({"error": "invalid", "fields": exc.fields}, status_code=422)
        except HashBusy:
            busy = {"Retry-After": str(st.ctx.config.web.auth.busy_retry_after_s)}
            return JSON({"error": "busy"}, status_code=503, headers=busy)
        except HTTPException as exc:
            return JSON({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        except FleetWatchError as exc:
            mapped = map_error(exc)
            return JSON({"error": mapped.detail}, status_code=mapped.status_code)
        return result if isinstance(result, Response) else JSON(result)

    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    """Router errors (404, 405 with its Allow) as JSON like the API's own."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if "Allow" in headers:
        headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
    detail = exc.detail
    if exc.status_code == 404 and request.url.path.startswith("/api/"):
        detail = "no such API route"
    return JSON({"error": detail}, status_code=exc.status_code, headers=headers)


async def _restore(st: ApiState) -> None:
    """What the API changed before a restart: fence changes over the configuration's
    fences, then the approved orders to the rules engine (their covers published)."""
    n_fences = await web.fences_api.restore_fences(st)
    orders = await st.orders.select() if st.orders is not None else []
    n_orders = await web.orders_api.apply_orders(st, orders)
    if n_fences or orders:
        log.info(
            "restored %d fence changes, %d orders (%d approved) from the web database",
            n_fences,
            len(orders),
            n_orders,
        )


def login_limiter(auth: AuthConfig) -> LoginLimiter:
    return LoginLimiter(
        free_attempts=auth.login_free_attempts,
        delay_ms=int(auth.login_delay_s * 1000),
        max_delay_ms=auth.login_max_delay_s * 1000,
        forget_ms=auth.login_forget_s * 1000,
        per_address_per_min=auth.login_attempts_per_address_per_min,
        max_keys=auth.login_tracked_keys,
    )


def create_app(ctx: AppContext) -> Starlette:
    """The whole web server for one service instance."""
    cfg = ctx.config
    accounts = Accounts(cfg, ctx.clock_ms)
    records = Records(accounts)
    st = ApiState(ctx, accounts, login_limiter(cfg.web.auth), records)

    async def feed_auth(token: str) -> str | None:
        p = await accounts.principal(token)
        return p.org if p is not None else None

    async def feed_session(token: str) -> str | None:
        # an open feed keeps its session alive: authenticate() slides the expiry
        found = await accounts.authenticate(token)
        return found.reason if isinstance(found, Refused) else None

    feed_server = FeedServer(
        ctx.feed,
        feed_auth,
        ctx.clock_ms,
        session_ended=feed_session,
        recheck_s=cfg.web.auth.feed_recheck_s,
    )
    ctx.metrics.register(FeedCollector(ctx.feed))
    doc = openapi_document(API, cfg.service.name)

    async def page(request: Request) -> Response:
        if not APP_INDEX.exists():
            return Response(
                "the page is not built: run `make assets` (npm ci + vite build in web/frontend)",
                status_code=503,
                media_type="text/plain; charset=utf-8",
            )
        return FileResponse(APP_INDEX, headers={"Cache-Control": "no-cache"})

    async def healthz(request: Request) -> Response:
        h = ctx.health()
        return JSON(h, status_code=200 if h.get("ok") else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSON(doc)

    routes: list[BaseRoute] = [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/openapi.json", openapi),
        WebSocketRoute("/ws/live", feed_server.endpoint),
    ]
    by_path: dict[str, list[ApiRoute]] = {}
    for r in API:
        by_path.setdefault(r.path, []).append(r)
    for path, group in by_path.items():
        methods = [r.method for r in group]
        routes.append(Route(path, _endpoint(group, st), methods=methods, name=path))
    routes.append(Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await accounts.open()
        await records.open()
        own_records = await web.vehicles_api.open_records(st)
        orders = await web.orders_api.open_orders(st)
        await _restore(st)
        tasks = [asyncio.create_task(feed_server.run(), name="live-feed-ticker")]
        tasks.append(asyncio.create_task(web.orders_api.run_sweeper(st), name="order-trips"))
        tasks.append(asyncio.create_task(web.commands_api.run_bridge(st), name="commands"))
        tasks.append(asyncio.create_task(web.reports_api.run_rollup(st), name="rollup"))
        if ctx.commands is not None:

            async def handle(cmd: dict[str, Any]) -> None:
                await handle_command(st, cmd)

            tasks.append(asyncio.create_task(ctx.commands.listen(handle), name="web-commands"))
        try:
            yield
        finally:
            await aio.cancel_and_wait(tasks)
            await orders.close()
            st.orders = None
            await accounts.close()
            if own_records is not None:
                await own_records.close()
                ctx.vehicle_records = None

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders, csp=content_security_policy(cfg.web.tiles))],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.ctx = ctx
    app.state.api = st
    app.state.accounts = accounts
    app.state.feed_server = feed_server
    return app
