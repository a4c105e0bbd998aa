"""What every route module of the HTTP API shares: the state, the JSON response, the helpers.

The routes themselves live in one module per resource (``web/*_api.py``), each with its
own ``ROUTES`` table (:class:`web.routes.RouteTable`); :mod:`web.app` lists the modules.

Every handler gets the caller's :class:`~web.auth.Principal` and may only read
or change things inside the caller's organisation subtree; a thing outside it
answers 404, as if it did not exist. Operator actions are written to the audit
log before the response is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fleet.errors import BadRecord, FleetWatchError
from fleet.registry import Registry
from web.accounts import Accounts
from web.auth import LoginLimiter, Principal
from web.bus import broadcast, publish_events
from web.context import AppContext
from web.records import Records

if TYPE_CHECKING:
    from store.commands import CommandStore
    from store.orders import OrderStore
    from web.commands_api import CommandBridge

__all__ = ["JSON", "ApiState", "broadcast", "publish_events"]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


@dataclass
class ApiState:
    ctx: AppContext
    accounts: Accounts
    limiter: LoginLimiter
    records: Records
    purged_at: int = 0  # when ended tokens were last purged (epoch ms)
    orders: OrderStore | None = None  # opened by the app (web.orders_api.open_orders)
    command_store: CommandStore | None = None  # opened on first use (web.commands_api)
    command_bridge: CommandBridge | None = None  # the app's bridge to the gateway, when running
    # one quota decision at a time per app (web.vehicles_api; in that app's event loop)
    records_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def registry(self) -> Registry:
        return self.ctx.registry

    def now(self) -> int:
        return self.ctx.clock_ms()


T = TypeVar("T")

Handler = Callable[[Request, ApiState, Principal], Awaitable[Any]]


# -- helpers ----------------------------------------------------------------------------------


def fail(status: int, reason: str) -> HTTPException:
    return HTTPException(status, reason)


def visible(st: ApiState, p: Principal) -> frozenset[str]:
    return st.registry.orgs.subtree(p.org)


async def body_json(request: Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise fail(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise fail(400, "body must be a JSON object")
    return data


def q_int(request: Request, name: str, default: int | None = None) -> int | None:
    v = request.query_params.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise fail(400, f"{name} must be an integer (epoch milliseconds for times)") from None


def q_list(request: Request, name: str) -> list[str] | None:
    vals = [x for v in request.query_params.getlist(name) for x in v.split(",") if x]
    return vals or None


def need(part: T | None, name: str) -> T:
    if part is None:
        raise fail(503, f"{name} is not configured on this server")
    return part


def vehicle_index(st: ApiState, p: Principal, vehicle_id: str) -> int:
    i = st.registry.by_id(vehicle_id)
    if i is None or st.registry.org_of(i) not in visible(st, p):
        raise fail(404, f"no vehicle {vehicle_id!r}")
    return int(i)


def today(st: ApiState) -> dt.date:
    tz = ZoneInfo(st.ctx.config.service.timezone)
    return dt.datetime.fromtimestamp(st.now() / 1000, tz).date()


async def audit(st: ApiState, p: Principal, action: str, target: str, **detail: Any) -> None:
    await st.accounts.audit(p, action, target, detail)


def str_field(
    data: dict[str, Any], name: str, *, required: bool = True, max_len: int = 2000
) -> str:
    v = data.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v) or len(v) > max_len:
        raise fail(400, f"{name} must be a non-empty string of at most {max_len} characters")
    return v


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def retry_after(ms: int) -> dict[str, str]:
    return {"Retry-After": str(max(1, -(-ms // 1000)))}


def q_time(request: Request, name: str, default: int | None = None) -> int | None:
    """A time query parameter: epoch milliseconds, or ISO 8601 with its UTC offset
    (``2025-11-25T09:30:00+08:00``; a ``+`` written unescaped in a URL arrives as a space)."""
    v = (request.query_params.get(name) or "").strip()
    if not v:
        return default
    if v.lstrip("-").isdigit():
        return int(v)
    iso = v.replace(" ", "+") if "T" in v else v
    try:
        t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        raise fail(400, f"{name} must be epoch ms or ISO 8601 with an offset") from None
    if t.tzinfo is None:
        raise fail(400, f"{name}: an ISO time needs its UTC offset (e.g. +08:00)")
    return int(t.timestamp() * 1000)


def map_error(exc: FleetWatchError) -> HTTPException:
    if isinstance(exc, BadRecord):
        return fail(400, str(exc))
    return fail(503 if exc.__class__.__name__ == "ServiceUnavailable" else 500, str(exc))
