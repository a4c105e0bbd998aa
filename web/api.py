"""The HTTP API under ``/api``: one table of routes, each with its role and its OpenAPI entry.

Every handler gets the caller's :class:`~web.auth.Principal` and may only read
or change things inside the caller's organisation subtree; a thing outside it
answers 404, as if it did not exist. Operator actions are written to the audit
log before the response is sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fleetwatch.errors import BadRecord, FleetWatchError
from rules.events import KINDS, AlarmEvent
from stream.feed import STATES
from web.accounts import Accounts
from web.auth import ROLES, LoginLimiter, Principal, role_at_least
from web.context import AppContext
from web.records import Records

__all__ = ["API", "JSON", "ApiState", "Route"]


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

    @property
    def registry(self) -> Any:
        return self.ctx.registry

    def now(self) -> int:
        return self.ctx.clock_ms()


Handler = Callable[[Request, ApiState, Principal], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Any
    role: str | None  # None: no token needed
    summary: str
    params: tuple[tuple[str, str, str], ...] = ()  # (name, type, description) query parameters
    body: dict[str, Any] | None = None  # JSON schema of the request body
    tag: str = "api"


API: list[Route] = []


def route(
    method: str,
    path: str,
    role: str | None,
    summary: str,
    *,
    params: tuple[tuple[str, str, str], ...] = (),
    body: dict[str, Any] | None = None,
    tag: str = "api",
) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        API.append(Route(method, path, fn, role, summary, params, body, tag))
        return fn

    return deco


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


def need(part: Any, name: str) -> Any:
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


async def broadcast(st: ApiState, op: str, **fields: Any) -> None:
    """Tell the other nodes' engines (``ctx.commands``; nothing on a single node)."""
    if st.ctx.commands is not None:
        await st.ctx.commands.publish(op, **fields)


async def handle_command(st: ApiState, cmd: dict[str, Any]) -> None:
    """Apply another node's command (:mod:`web.commands`) to this node's engine."""
    from web.fences_api import restore_fences

    op = cmd.get("op")
    if op == "orders":
        found = [await st.records.order(str(i)) for i in cmd.get("ids") or ()]
        await apply_orders(st, [o for o in found if o is not None])
    elif op == "close":
        closer = getattr(st.ctx.rules, "close_episode", None)
        if callable(closer):
            extra = {"closed_by": cmd.get("by"), "note": cmd.get("note", "")}
            events = [
                dataclasses.replace(e, detail={**e.detail, **extra})
                for e in closer(str(cmd["id"]), int(cmd["at"]))
            ]
            await publish_events(st, events)
    elif op == "vehicles":  # records changed on another node (web.vehicles_api)
        from web.vehicles_api import on_command

        await on_command(st, cmd)
    elif op == "fences":
        await restore_fences(st)
    elif op == "resync":
        from web.vehicles_api import resync_vehicles

        await restore_fences(st)
        await resync_vehicles(st)
        await apply_orders(st, await st.records.orders())


async def publish_events(st: ApiState, events: list[AlarmEvent]) -> None:
    """Alarm events the web caused: to ``ctx.on_events`` (the pipeline), or written here."""
    if not events:
        return
    ctx = st.ctx
    if ctx.on_events is not None:
        res = ctx.on_events(events)
        if inspect.isawaitable(res):
            await res
        return
    if ctx.history is not None:
        await ctx.history.write_alarm_events(events)
    for ev in events:
        ctx.feed.alarm(ev)
    if ctx.live is not None:
        await ctx.live.update_alarms(events)


def str_field(
    data: dict[str, Any], name: str, *, required: bool = True, max_len: int = 2000
) -> str:
    v = data.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v) or len(v) > max_len:
        raise fail(400, f"{name} must be a non-empty string of at most {max_len} characters")
    return v


_LOGIN_BODY = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
}

# -- session -----------------------------------------------------------------------------------


@route(
    "POST",
    "/api/login",
    None,
    "Log in; returns an expiring bearer token",
    body=_LOGIN_BODY,
    tag="auth",
)
async def login(request: Request, st: ApiState, _: Principal | None) -> Any:
    data = await body_json(request)
    username = str_field(data, "username", max_len=64)
    password = str_field(data, "password", max_len=1024)
    addr = request.client.host if request.client else "?"
    keys = (f"user:{username}", f"addr:{addr}")
    now = st.now()
    if st.limiter.blocked(keys, now):
        raise fail(429, "too many failed logins; wait a minute")
    p = await st.accounts.check_password(username, password)
    if p is None:
        st.limiter.failed(keys, now)
        raise fail(401, "wrong user name or password")
    st.limiter.succeeded(keys)
    token, rec = await st.accounts.issue_token(p, st.ctx.config.web.token_ttl_s)
    await audit(st, p, "login", username)
    return {
        "token": token,
        "expires_at": rec["expires_at"],
        "user": {"name": p.name, "org": p.org, "role": p.role},
    }


@route("POST", "/api/logout", "viewer", "Revoke the token used for this call", tag="auth")
async def logout(request: Request, st: ApiState, p: Principal) -> Any:
    if p.token_id:
        await st.accounts.revoke_token(p.token_id)
    return {"ok": True}


@route("GET", "/api/me", "viewer", "Who the token belongs to, and the page's settings", tag="auth")
async def me(request: Request, st: ApiState, p: Principal) -> Any:
    cfg = st.ctx.config
    reg = st.registry
    orgs = visible(st, p)
    return {
        "user": {"name": p.name, "org": p.org, "role": p.role},
        "service": cfg.service.name,
        "timezone": cfg.service.timezone,
        "orgs": [
            {
                "id": oid,
                "name": reg.orgs.names[i],
                "parent": reg.orgs.ids[reg.orgs.parent[i]] if reg.orgs.parent[i] >= 0 else None,
            }
            for i, oid in enumerate(reg.orgs.ids)
            if oid in orgs
        ],
        "tiles": [t.model_dump() for t in cfg.web.tiles],
        "center": list(cfg.web.center),
        "zoom": cfg.web.zoom,
        "language": cfg.web.language,
        "kinds": list(KINDS),
        "states": list(STATES),
        "feed_interval_ms": cfg.web.feed_interval_ms,
    }


# -- vehicles ----------------------------------------------------------------------------------


@route(
    "GET",
    "/api/vehicles",
    "viewer",
    "Vehicles with their latest position and state",
    params=(
        ("q", "string", "plate or id contains"),
        ("org", "string", "organisation subtree"),
        ("state", "string", "moving|parked|offline|alarm"),
    ),
    tag="vehicles",
)
async def vehicles(request: Request, st: ApiState, p: Principal) -> Any:
    reg = st.registry
    feed = st.ctx.feed
    mask = reg.visible_mask(p.org)
    org = request.query_params.get("org")
    if org:
        if org not in visible(st, p):
            raise fail(404, f"no organisation {org!r}")
        mask = mask & reg.visible_mask(org)
    codes = feed.state_codes(st.now())
    counts = {s: int(np.count_nonzero(mask & (codes == i))) for i, s in enumerate(STATES)}
    want = request.query_params.get("state")
    if want:
        if want not in STATES:
            raise fail(400, f"state must be one of {STATES}")
        mask = mask & (codes == STATES.index(want))
    q = (request.query_params.get("q") or "").strip().upper()
    items = []
    for i in np.flatnonzero(mask).tolist():
        if q and q not in reg.plates[i].upper() and q not in reg.ids[i].upper():
            continue
        v = reg.vehicles[i]
        item: dict[str, Any] = {
            "vehicle": v.id,
            "plate": v.plate,
            "org": v.org,
            "type": v.type,
            "terminal": v.terminal,
            "state": STATES[int(codes[i])],
        }
        if feed.has[i]:
            item.update(
                ts=int(feed.ts[i]),
                lat=float(feed.lat[i]),
                lon=float(feed.lon[i]),
                speed=round(float(feed.speed[i]), 1),
                acc=bool(feed.acc[i]),
            )
        items.append(item)
    return {
        "vehicles": items,
        "counts": counts,
        "total": int(np.count_nonzero(reg.visible_mask(p.org))),
    }


@route(
    "GET",
    "/api/vehicles/{id}",
    "viewer",
    "One vehicle: last position, today's mileage and trips, open alarms",
    tag="vehicles",
)
async def vehicle_detail(request: Request, st: ApiState, p: Principal) -> Any:
    vid = request.path_params["id"]
    i = vehicle_index(st, p, vid)
    reg, feed = st.registry, st.ctx.feed
    v = reg.vehicles[i]
    out: dict[str, Any] = {
        "vehicle": v.id,
        "plate": v.plate,
        "org": v.org,
        "type": v.type,
        "terminal": v.terminal,
        "speed_limit_kmh": float(reg.speed_limit_kmh[i]),
        "state": STATES[int(feed.state_codes(st.now())[i])],
        "last": None,
        "today": None,
        "alarms": [a for a in feed.alarm_items() if a["vehicle"] == v.id and a["state"] == "open"],
    }
    if feed.has[i]:
        out["last"] = {
            "ts": int(feed.ts[i]),
            "lat": float(feed.lat[i]),
            "lon": float(feed.lon[i]),
            "speed": round(float(feed.speed[i]), 1),
            "heading": int(feed.heading[i]),
            "acc": bool(feed.acc[i]),
        }
    if st.ctx.history is not None:
        day = await st.ctx.history.daily_stats(today(st), st.ctx.config.service.timezone, [v.org])
        out["today"] = next((r for r in day["vehicles"] if r["vehicle"] == v.id), None)
    return out


@route(
    "GET",
    "/api/vehicles/{id}/track",
    "viewer",
    "Track playback: positions in [from, to) as columns, and the alarms in that window",
    params=(
        ("from", "integer", "epoch ms, default: start of today"),
        ("to", "integer", "epoch ms, default: now"),
        ("simplify_m", "number", "Douglas–Peucker tolerance in metres"),
    ),
    tag="vehicles",
)
async def track(request: Request, st: ApiState, p: Principal) -> Any:
    from store.history import AlarmQuery, day_bounds_ms

    vid = request.path_params["id"]
    vehicle_index(st, p, vid)
    history = need(st.ctx.history, "history store")
    start, _ = day_bounds_ms(today(st), st.ctx.config.service.timezone)
    from_ms = q_int(request, "from", start)
    to_ms = q_int(request, "to", st.now() + 1)
    assert from_ms is not None and to_ms is not None
    if to_ms <= from_ms or to_ms - from_ms > 31 * 86_400_000:
        raise fail(400, "need from < to, at most 31 days apart")
    simplify = request.query_params.get("simplify_m")
    try:
        tol = float(simplify) if simplify else None
    except ValueError:
        raise fail(400, "simplify_m must be a number of metres") from None
    cols = await history.track(vid, from_ms, to_ms, tol)
    alarms = await history.alarms(AlarmQuery(vehicle_id=vid, from_ms=from_ms, to_ms=to_ms))
    return {
        "vehicle": vid,
        "from": from_ms,
        "to": to_ms,
        "points": {k: cols[k].tolist() for k in ("ts", "lat", "lon", "speed", "heading", "acc")},
        "alarms": alarms,
    }


# -- alarms ------------------------------------------------------------------------------------


@route(
    "GET",
    "/api/alarms",
    "viewer",
    "Alarm episodes, newest first",
    params=(
        ("state", "string", "open|closed"),
        ("kind", "string", "comma-separated kinds"),
        ("org", "string", "organisation subtree"),
        ("vehicle", "string", "vehicle id"),
        ("from", "integer", "started at or after, epoch ms"),
        ("to", "integer", "started before, epoch ms"),
        ("limit", "integer", "at most"),
    ),
    tag="alarms",
)
async def alarms(request: Request, st: ApiState, p: Principal) -> Any:
    from store.history import AlarmQuery

    state = request.query_params.get("state") or None
    if state not in (None, "open", "closed"):
        raise fail(400, "state must be open or closed")
    kinds = q_list(request, "kind")
    if kinds and not set(kinds) <= set(KINDS):
        raise fail(400, f"kind must be among {KINDS}")
    orgs = visible(st, p)
    org = request.query_params.get("org")
    if org:
        if org not in orgs:
            raise fail(404, f"no organisation {org!r}")
        orgs = st.registry.orgs.subtree(org)
    vid = request.query_params.get("vehicle") or None
    if vid:
        vehicle_index(st, p, vid)
    limit = max(1, min(q_int(request, "limit", 500) or 500, 5000))
    from_ms, to_ms = q_int(request, "from"), q_int(request, "to")
    if st.ctx.history is None:
        items = [
            a
            for a in st.ctx.feed.alarm_items()
            if a["org"] in orgs
            and (state is None or a["state"] == state)
            and (not kinds or a["kind"] in kinds)
            and (vid is None or a["vehicle"] == vid)
            and (from_ms is None or a["started_at"] >= from_ms)
            and (to_ms is None or a["started_at"] < to_ms)
        ][::-1][:limit]
    else:
        items = await st.ctx.history.alarms(
            AlarmQuery(
                state=state,
                kinds=kinds,
                orgs=sorted(orgs),
                vehicle_id=vid,
                from_ms=from_ms,
                to_ms=to_ms,
                limit=limit,
            )
        )
    return {"alarms": items}


def _alarm_vehicle(st: ApiState, p: Principal, alarm_id: str) -> int:
    vid = alarm_id.split(":", 1)[0]
    i = st.registry.by_id(vid)
    if i is None or st.registry.org_of(i) not in visible(st, p):
        raise fail(404, f"no alarm {alarm_id!r}")
    return int(i)


_ACK_BODY = {
    "type": "object",
    "properties": {
        "note": {"type": "string", "description": "how it was handled (处理情况)"},
        "handled": {"type": "boolean", "description": "true: handled and done; false: seen"},
    },
}


@route(
    "POST",
    "/api/alarms/{id}/ack",
    "operator",
    "Acknowledge an alarm and record how it was handled (audited)",
    body=_ACK_BODY,
    tag="alarms",
)
async def ack_alarm(request: Request, st: ApiState, p: Principal) -> Any:
    alarm_id = request.path_params["id"]
    _alarm_vehicle(st, p, alarm_id)
    data = await body_json(request)
    note = str_field(data, "note", required=False)
    handled = bool(data.get("handled", False))
    now = st.now()
    if st.ctx.history is not None and not await st.ctx.history.ack_alarm(
        alarm_id, p.name, note, handled, now
    ):
        raise fail(404, f"no alarm {alarm_id!r}")
    ack = {"user": p.name, "at": now, "note": note, "handled": handled}
    if st.ctx.relay is not None:
        st.ctx.relay.acknowledge(alarm_id, ack)  # every node's desks, this one's included
    else:
        st.ctx.feed.acknowledge(alarm_id, ack)
    await audit(st, p, "alarm.handle" if handled else "alarm.ack", alarm_id, note=note)
    return {"ok": True, "ack": ack}


@route(
    "POST",
    "/api/alarms/{id}/close",
    "operator",
    "Close an open alarm episode by hand (audited)",
    body=_ACK_BODY,
    tag="alarms",
)
async def close_alarm(request: Request, st: ApiState, p: Principal) -> Any:
    alarm_id = request.path_params["id"]
    v = _alarm_vehicle(st, p, alarm_id)
    data = await body_json(request)
    note = str_field(data, "note", required=False)
    now = st.now()
    item = next((a for a in st.ctx.feed.alarm_items() if a["id"] == alarm_id), None)
    if item is None and st.ctx.history is not None:
        from store.history import AlarmQuery

        found = await st.ctx.history.alarms(AlarmQuery(vehicle_id=st.registry.ids[v], limit=5000))
        item = next((a for a in found if a["id"] == alarm_id), None)
    if item is None:
        raise fail(404, f"no alarm {alarm_id!r}")
    if item["state"] != "closed":
        closer = getattr(st.ctx.rules, "close_episode", None)
        events: list[AlarmEvent] = list(closer(alarm_id, now)) if callable(closer) else []
        if not events:
            # Not open in this engine (another node's vehicle, or before a restart): the
            # record and the desks are closed all the same.
            detail = {k: v for k, v in (item.get("detail") or {}).items()}
            detail.pop("severity", None)
            detail.pop("covered", None)
            events = [
                AlarmEvent(
                    id=alarm_id,
                    vehicle=v,
                    vehicle_id=st.registry.ids[v],
                    kind=item["kind"],
                    action="close",
                    started_at=int(item["started_at"]),
                    ts=now,
                    ended_at=now,
                    lat=float(item["lat"]),
                    lon=float(item["lon"]),
                    severity=(item.get("detail") or {}).get("severity")
                    or item.get("severity")
                    or "warning",
                    covered=bool((item.get("detail") or {}).get("covered") or item.get("covered")),
                    detail={**detail, "closed_by_hand": True},
                )
            ]
        events = [
            dataclasses.replace(e, detail={**e.detail, "closed_by": p.name, "note": note})
            for e in events
        ]
        await publish_events(st, events)
        await broadcast(st, "close", id=alarm_id, at=now, by=p.name, note=note)
    await audit(st, p, "alarm.close", alarm_id, note=note)
    return {"ok": True}


# -- dispatch orders ---------------------------------------------------------------------------

_ORDER_BODY = {
    "type": "object",
    "required": ["vehicle", "type", "start", "end"],
    "properties": {
        "id": {"type": "string"},
        "vehicle": {"type": "string", "description": "vehicle id or plate"},
        "type": {"type": "string"},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "reason": {"type": "string"},
    },
}


def _order_visible(st: ApiState, p: Principal, o: dict[str, Any]) -> bool:
    i = st.registry.by_id(o["vehicle"])
    return i is not None and st.registry.org_of(i) in visible(st, p)


def _dispatch_order(o: dict[str, Any]) -> Any:
    from rules.orders import DispatchOrder

    return DispatchOrder(
        id=o["id"],
        vehicle_id=o["vehicle"],
        type=o["type"],
        start=o["start"],
        end=o["end"],
        approved=True,
        approved_at=o.get("approved_at"),
    )


async def apply_orders(st: ApiState, orders: list[dict[str, Any]]) -> int:
    """Give approved orders to the rules engine; publish the episodes they cover after the
    fact. Returns how many the engine took (it ignores ids it knows)."""
    adder = getattr(st.ctx.rules, "add_order", None)
    if not callable(adder):
        return 0
    events: list[AlarmEvent] = []
    for o in orders:
        if o["approved"]:
            res = adder(_dispatch_order(o))
            if inspect.isawaitable(res):
                res = await res
            events.extend(res or [])
    await publish_events(st, events)
    return sum(1 for o in orders if o["approved"])


@route("GET", "/api/orders", "viewer", "Dispatch orders (派车单)", tag="orders")
async def list_orders(request: Request, st: ApiState, p: Principal) -> Any:
    return {"orders": [o for o in await st.records.orders() if _order_visible(st, p, o)]}


def _new_order(st: ApiState, p: Principal, data: dict[str, Any], approved: bool) -> dict[str, Any]:
    from rules.config import ORDER_TYPES

    reg = st.registry
    vid = str_field(data, "vehicle", max_len=64)
    if reg.by_id(vid) is None:
        vid = dict(zip(reg.plates, reg.ids, strict=True)).get(vid, vid)
    vehicle_index(st, p, vid)
    typ = str_field(data, "type", max_len=32)
    if typ not in ORDER_TYPES:
        raise fail(400, f"type must be one of {ORDER_TYPES}")
    start, end = data.get("start"), data.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or end < start:
        raise fail(400, "start and end must be epoch ms with start <= end")
    oid = data.get("id") or f"web-{st.now()}-{secrets.token_hex(3)}"
    if not isinstance(oid, str) or not 0 < len(oid) <= 64:
        raise fail(400, "id must be a string of at most 64 characters")
    now = st.now()
    return {
        "id": oid,
        "vehicle": vid,
        "type": typ,
        "start": start,
        "end": end,
        "reason": str_field(data, "reason", required=False),
        "created_by": p.name,
        "created_at": now,
        "approved": approved,
        "approved_by": p.name if approved else None,
        "approved_at": now if approved else None,
    }


@route(
    "POST",
    "/api/orders",
    "operator",
    "Create a dispatch order (pending until approved)",
    body=_ORDER_BODY,
    tag="orders",
)
async def create_order(request: Request, st: ApiState, p: Principal) -> Any:
    o = _new_order(st, p, await body_json(request), approved=False)
    if not await st.records.add_order(o):
        raise fail(409, f"order {o['id']!r} exists")
    await audit(st, p, "order.create", o["id"], vehicle=o["vehicle"], type=o["type"])
    return o


@route(
    "POST",
    "/api/orders/{id}/approve",
    "operator",
    "Approve a dispatch order (audited)",
    tag="orders",
)
async def approve_order(request: Request, st: ApiState, p: Principal) -> Any:
    o = await st.records.order(request.path_params["id"])
    if o is None or not _order_visible(st, p, o):
        raise fail(404, "no such order")
    if not o["approved"]:
        o = await st.records.approve_order(o["id"], p.name, st.now())
        assert o is not None
        await apply_orders(st, [o])
        await broadcast(st, "orders", ids=[o["id"]])
    await audit(st, p, "order.approve", o["id"], vehicle=o["vehicle"])
    return o


@route(
    "POST",
    "/api/orders/import",
    "operator",
    "Import orders from CSV (id,vehicle,type,start,end[,approved][,approved_at])",
    body={"type": "string", "description": "text/csv"},
    tag="orders",
)
async def import_orders(request: Request, st: ApiState, p: Principal) -> Any:
    from rules.orders import parse_orders_csv

    text = (await request.body()).decode("utf-8-sig", errors="replace")
    try:
        parsed = parse_orders_csv(text, st.registry, timezone=st.ctx.config.service.timezone)
    except BadRecord as exc:
        raise fail(400, exc.detail or exc.reason) from None
    now = st.now()
    out: list[dict[str, Any]] = []
    for d in parsed:
        o: dict[str, Any] = {
            "id": d.id,
            "vehicle": d.vehicle_id,
            "type": d.type,
            "start": d.start,
            "end": d.end,
            "reason": "",
            "created_by": p.name,
            "created_at": now,
            "approved": d.approved,
            "approved_by": p.name if d.approved else None,
            "approved_at": (d.approved_at or now) if d.approved else None,
        }
        if not _order_visible(st, p, o):
            raise fail(403, f"order {d.id}: vehicle {d.vehicle_id} is outside your organisation")
        out.append(o)
    await st.records.put_orders(out)
    await apply_orders(st, out)
    if any(o["approved"] for o in out):
        await broadcast(st, "orders", ids=[o["id"] for o in out if o["approved"]])
    await audit(st, p, "order.import", f"{len(out)} orders", ids=[o["id"] for o in out])
    return {"imported": len(out), "orders": out}


# -- the board ---------------------------------------------------------------------------------


@route(
    "GET",
    "/api/stats",
    "viewer",
    "The board: 编制数/实有数, online, moving, today's trips and mileage, alarms by kind",
    params=(
        ("day", "string", "YYYY-MM-DD, default today"),
        ("org", "string", "organisation subtree"),
    ),
    tag="stats",
)
async def stats(request: Request, st: ApiState, p: Principal) -> Any:
    reg = st.registry
    orgs = visible(st, p)
    org = request.query_params.get("org") or p.org
    if org not in orgs:
        raise fail(404, f"no organisation {org!r}")
    sub = reg.orgs.subtree(org)
    mask = reg.visible_mask(org)
    codes = st.ctx.feed.state_codes(st.now())
    est = st.ctx.config.web.establishment
    day_s = request.query_params.get("day")
    try:
        day = dt.date.fromisoformat(day_s) if day_s else today(st)
    except ValueError:
        raise fail(400, "day must be YYYY-MM-DD") from None
    out: dict[str, Any] = {
        "org": org,
        "day": day.isoformat(),
        "authorised": sum(n for o, n in est.items() if o in sub) if est else None,
        "actual": int(np.count_nonzero(mask)),
        "online": int(np.count_nonzero(mask & (codes != STATES.index("offline")))),
        "moving": int(np.count_nonzero(mask & (codes == STATES.index("moving")))),
        "in_alarm": int(np.count_nonzero(mask & (codes == STATES.index("alarm")))),
        "open_alarms": sum(
            1 for a in st.ctx.feed.alarm_items() if a["org"] in sub and a["state"] == "open"
        ),
        "trips": None,
        "mileage_km": None,
        "alarms_by_kind": {},
        "by_org": [],
    }
    if st.ctx.history is not None:
        board = await st.ctx.history.daily_stats(day, st.ctx.config.service.timezone, sorted(sub))
        total = board["total"]
        out.update(
            trips=total["trips"],
            mileage_km=total["mileage_km"],
            alarms_by_kind=total["alarms"],
            by_org=[{**o, "authorised": est.get(o["org"])} for o in board["orgs"]],
        )
    from web.quota_api import board_quota  # 编制数 / 实有数 / 超编 from the records

    quota = await board_quota(st, sub)
    if quota is not None:
        set_ = [q["authorised"] for q in quota.values() if q["authorised"] is not None]
        if set_:  # else web.establishment, as before the records
            out["authorised"] = sum(set_)
        out["actual"] = sum(q["actual"] for q in quota.values())  # 在用 and 封存 only
        out["over"] = sum(q["over"] for q in quota.values())
        for o in out["by_org"]:
            q = quota.get(o["org"], {"authorised": None, "actual": 0, "over": 0})
            o.update(actual=q["actual"], over=q["over"])
            if q["authorised"] is not None:
                o["authorised"] = q["authorised"]
    return out


# -- users and tokens --------------------------------------------------------------------------

_USER_BODY = {
    "type": "object",
    "required": ["username", "password", "org", "role"],
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string"},
        "org": {"type": "string"},
        "role": {"enum": list(ROLES)},
    },
}


def _check_grant(st: ApiState, p: Principal, org: str, role: str) -> None:
    if role not in ROLES:
        raise fail(400, f"role must be one of {ROLES}")
    if org not in visible(st, p):
        raise fail(403, "you may only manage your own organisation and those below it")
    if not role_at_least(p.role, role):
        raise fail(403, "you cannot grant a role above your own")


@route("GET", "/api/users", "admin", "Users of your organisation subtree", tag="users")
async def list_users(request: Request, st: ApiState, p: Principal) -> Any:
    return {"users": await st.accounts.users(visible(st, p))}


@route("POST", "/api/users", "admin", "Create a user (audited)", body=_USER_BODY, tag="users")
async def create_user(request: Request, st: ApiState, p: Principal) -> Any:
    data = await body_json(request)
    username = str_field(data, "username", max_len=64)
    password = str_field(data, "password", max_len=1024)
    if len(password) < 8:
        raise fail(400, "password must have at least 8 characters")
    org, role = str_field(data, "org", max_len=64), str_field(data, "role", max_len=16)
    _check_grant(st, p, org, role)
    if not await st.accounts.create_user(username, password, org, role):
        raise fail(409, f"user {username!r} exists")
    await audit(st, p, "user.create", username, org=org, role=role)
    return await st.accounts.user(username)


async def _own_user(st: ApiState, p: Principal, username: str) -> dict[str, Any]:
    u = await st.accounts.user(username)
    if u is None or u["org"] not in visible(st, p):
        raise fail(404, f"no user {username!r}")
    return u


@route(
    "PATCH",
    "/api/users/{username}",
    "admin",
    "Change a user's password, role, organisation or disable it (audited)",
    tag="users",
    body={
        "type": "object",
        "properties": {
            "password": {"type": "string"},
            "role": {"enum": list(ROLES)},
            "org": {"type": "string"},
            "disabled": {"type": "boolean"},
        },
    },
)
async def update_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    u = await _own_user(st, p, username)
    data = await body_json(request)
    role = data.get("role")
    org = data.get("org")
    _check_grant(st, p, org or u["org"], role or u["role"])
    pw = data.get("password")
    if pw is not None and (not isinstance(pw, str) or len(pw) < 8):
        raise fail(400, "password must have at least 8 characters")
    disabled = data.get("disabled")
    await st.accounts.update_user(
        username,
        password=pw,
        role=role,
        org=org,
        disabled=bool(disabled) if disabled is not None else None,
    )
    changed = sorted(k for k in ("password", "role", "org", "disabled") if k in data)
    await audit(st, p, "user.update", username, changed=changed)
    return await st.accounts.user(username)


@route("DELETE", "/api/users/{username}", "admin", "Delete a user (audited)", tag="users")
async def delete_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    await _own_user(st, p, username)
    await st.accounts.delete_user(username)
    await audit(st, p, "user.delete", username)
    return {"ok": True}


@route("GET", "/api/tokens", "admin", "Issued tokens (never their secret)", tag="users")
async def list_tokens(request: Request, st: ApiState, p: Principal) -> Any:
    return {"tokens": await st.accounts.tokens(visible(st, p))}


@route(
    "POST",
    "/api/tokens",
    "admin",
    "Issue a machine token; the secret is shown once (audited)",
    tag="users",
    body={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "org": {"type": "string"},
            "role": {"enum": list(ROLES)},
            "ttl_s": {"type": "integer"},
        },
    },
)
async def create_token(request: Request, st: ApiState, p: Principal) -> Any:
    data = await body_json(request)
    name = str_field(data, "name", max_len=64)
    org = data.get("org") or p.org
    role = data.get("role") or "viewer"
    _check_grant(st, p, org, role)
    ttl = data.get("ttl_s", 90 * 86_400)
    if not isinstance(ttl, int) or not 60 <= ttl <= 3 * 365 * 86_400:
        raise fail(400, "ttl_s must be between 60 s and 3 years")
    token, rec = await st.accounts.issue_token(Principal(name=name, org=org, role=role), ttl, name)
    await audit(st, p, "token.create", rec["id"], name=name, org=org, role=role)
    return {"token": token, **rec}


@route("DELETE", "/api/tokens/{id}", "admin", "Revoke a token (audited)", tag="users")
async def revoke_token(request: Request, st: ApiState, p: Principal) -> Any:
    tid = request.path_params["id"]
    org = await st.accounts.token_org(tid)
    if org is None or org not in visible(st, p):
        raise fail(404, "no such token")
    await st.accounts.revoke_token(tid)
    await audit(st, p, "token.revoke", tid)
    return {"ok": True}


@route(
    "GET",
    "/api/audit",
    "admin",
    "The audit log of operator actions, newest first",
    params=(
        ("from", "integer", "epoch ms"),
        ("to", "integer", "epoch ms"),
        ("action", "string", "e.g. alarm.ack"),
        ("limit", "integer", "at most"),
    ),
    tag="users",
)
async def audit_log(request: Request, st: ApiState, p: Principal) -> Any:
    return {
        "entries": await st.accounts.audit_log(
            visible(st, p),
            from_ms=q_int(request, "from"),
            to_ms=q_int(request, "to"),
            action=request.query_params.get("action") or None,
            limit=max(1, min(q_int(request, "limit", 500) or 500, 5000)),
        )
    }


def map_error(exc: FleetWatchError) -> HTTPException:
    if isinstance(exc, BadRecord):
        return fail(400, str(exc))
    return fail(503 if exc.__class__.__name__ == "ServiceUnavailable" else 500, str(exc))
