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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fleetwatch.errors import BadRecord, FleetWatchError
from rules.events import KINDS, AlarmEvent
from stream.feed import STATES
from web.accounts import Accounts, HashBusy
from web.auth import DUTIES, LoginLimiter, Principal, role_at_least
from web.bodies import (
    DutyBody,
    Invalid,
    LoginBody,
    TokenCreate,
    UserCreate,
    UserPatch,
    parse_body,
    schema_of,
)
from web.context import AppContext
from web.records import Records

__all__ = ["API", "JSON", "ApiState", "BodyLimit", "Route"]


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
    orders: Any = None  # store.orders.OrderStore, opened by the app (web.orders_api)

    @property
    def registry(self) -> Any:
        return self.ctx.registry

    def now(self) -> int:
        return self.ctx.clock_ms()


Handler = Callable[[Request, ApiState, Principal], Awaitable[Any]]


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


API: list[Route] = []


def route(
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
) -> Callable[[Any], Any]:
    if model is not None:
        body = schema_of(model)
    if limit is None:  # CSV and GeoJSON uploads are big; everything else is small
        limit = "upload" if body is not None and _is_upload(body, tag) else "api"

    def deco(fn: Any) -> Any:
        API.append(Route(method, path, fn, role, summary, params, body, tag, limit, model, status))
        return fn

    return deco


def _is_upload(body: dict[str, Any], tag: str) -> bool:
    return body.get("description") == "text/csv" or tag == "fences"


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
    from web.orders_api import apply_orders

    op = cmd.get("op")
    if op == "orders" and st.orders is not None:
        found = [await st.orders.get(str(k[0]), str(k[1])) for k in cmd.get("keys") or ()]
        for i in cmd.get("ids") or ():  # from a node of an earlier version
            found.extend(await st.orders.by_id(str(i)))
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
        if st.orders is not None:
            await apply_orders(st, await st.orders.select())


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def retry_after(ms: int) -> dict[str, str]:
    return {"Retry-After": str(max(1, -(-ms // 1000)))}


# -- session -----------------------------------------------------------------------------------


@route(
    "POST",
    "/api/login",
    None,
    "Log in; returns a session token (sliding expiry, absolute cap). room: a wall screen",
    model=LoginBody,
    limit="login",
    tag="auth",
)
async def login(request: Request, st: ApiState, _: Principal | None) -> Any:
    body = parse_body(LoginBody, await request.body())
    addr = client_address(request)
    now = st.now()
    # counted on arrival, before hashing: a burst of guesses meets the limit too
    wait = st.limiter.admit(body.username, addr, now)
    if wait > 0:
        return JSON({"error": "rate_limited"}, status_code=429, headers=retry_after(wait))
    try:
        p = await st.accounts.check_password(body.username, body.password)
    except HashBusy:
        st.limiter.withdrawn(body.username, addr)
        busy_ms = st.ctx.config.web.auth.busy_retry_after_s * 1000
        return JSON({"error": "busy"}, status_code=503, headers=retry_after(busy_ms))
    if p is None:
        st.limiter.failed(body.username, addr, now)
        raise fail(401, "wrong user name or password")
    st.limiter.succeeded(body.username, addr)
    token, rec = await st.accounts.open_session(p, room=body.room, duty_operator=body.duty_operator)
    await audit(st, p, "login", body.username, room=body.room, duty_operator=body.duty_operator)
    if now - st.purged_at > 60_000:
        st.purged_at = now
        await st.accounts.purge_expired()
    return {
        "token": token,
        "expires_at": rec["expires_at"],
        "absolute_expires_at": rec["absolute_expires_at"],
        "user": {"name": p.name, "org": p.org, "role": p.role},
    }


@route("POST", "/api/logout", "viewer", "End the session used for this call", tag="auth")
async def logout(request: Request, st: ApiState, p: Principal) -> Any:
    if p.token_id:
        await st.accounts.revoke_token(p.token_id, "logout")
    return {"ok": True}


@route(
    "PUT",
    "/api/session/duty",
    "viewer",
    "Name the duty operator (值班员) of this room session (audited)",
    model=DutyBody,
    limit="login",
    tag="auth",
)
async def session_duty(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(DutyBody, await request.body())
    if p.session is None or not p.session.room or p.token_id is None:
        raise fail(409, "not a room session: log in with room = true")
    if not await st.accounts.set_duty_operator(p.token_id, body.duty_operator):
        raise fail(409, "not a room session: log in with room = true")
    await audit(
        st,
        p,
        "session.duty",
        p.token_id,
        before=p.session.duty_operator,
        after=body.duty_operator,
    )
    return {"session": _session_info(p, body.duty_operator)}


def _session_info(p: Principal, duty_operator: str | None = None) -> dict[str, Any] | None:
    s = p.session
    if s is None:
        return None
    return {
        "expires_at": s.expires_at,
        "absolute_expires_at": s.absolute_expires_at,
        "room": s.room,
        "duty_operator": duty_operator if duty_operator is not None else s.duty_operator,
    }


@route("GET", "/api/me", "viewer", "Who the token belongs to, and the page's settings", tag="auth")
async def me(request: Request, st: ApiState, p: Principal) -> Any:
    cfg = st.ctx.config
    reg = st.registry
    orgs = visible(st, p)
    return {
        "user": {
            "name": p.name,
            "username": p.username,
            "org": p.org,
            "role": p.role,
            "duties": [d for d in DUTIES if d in p.duties],
        },
        "session": _session_info(p),
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


@route(
    "GET",
    "/api/vehicles/{id}/track",
    "viewer",
    "Track playback: positions in [from, to) as columns, stops, trips and alarms in that window",
    params=(
        ("from", "string", "epoch ms or ISO 8601 with offset; default: start of today"),
        ("to", "string", "epoch ms or ISO 8601 with offset; default: now (at most 31 days on)"),
        ("simplify_m", "number", "Douglas–Peucker tolerance in metres (points only)"),
        ("lang", "string", "zh|en: language of the stops' place names"),
    ),
    tag="vehicles",
)
async def track(request: Request, st: ApiState, p: Principal) -> Any:
    from store.figures import project_m, simplify
    from store.history import AlarmQuery, day_bounds_ms
    from store.playback import stops_and_trips
    from web.geo_api import place_texts

    vid = request.path_params["id"]
    i = vehicle_index(st, p, vid)
    history = need(st.ctx.history, "history store")
    start, _ = day_bounds_ms(today(st), st.ctx.config.service.timezone)
    from_ms = q_time(request, "from", start)
    to_ms = q_time(request, "to", st.now() + 1)
    assert from_ms is not None and to_ms is not None
    if to_ms <= from_ms or to_ms - from_ms > 31 * 86_400_000:
        raise fail(400, "need from < to, at most 31 days apart")
    simplify_q = request.query_params.get("simplify_m")
    try:
        tol = float(simplify_q) if simplify_q else None
    except ValueError:
        raise fail(400, "simplify_m must be a number of metres") from None
    en = request.query_params.get("lang", st.ctx.config.web.language) == "en"
    # Stops and trips from every point; the points sent may then be simplified.
    cols = await history.track(vid, from_ms, to_ms, None)
    stops, trips = stops_and_trips(cols["ts"], cols["lat"], cols["lon"], cols["speed"], cols["acc"])
    if tol:
        x, y = project_m(cols["lat"], cols["lon"])
        keep = simplify(x, y, tol)
        cols = {k: v[keep] for k, v in cols.items()}
    alarms = await history.alarms(
        AlarmQuery(vehicle_id=vid, from_ms=from_ms, to_ms=to_ms, limit=5000)
    )
    places = place_texts(st, stops["lat"].tolist(), stops["lon"].tolist(), "en" if en else "zh")
    return {
        "vehicle": vid,
        "from": from_ms,
        "to": to_ms,
        "limit_kmh": float(st.registry.speed_limit_kmh[i]),
        "points": {k: cols[k].tolist() for k in ("ts", "lat", "lon", "speed", "heading", "acc")},
        "stops": [
            {
                "start": int(a),
                "end": int(b),
                "lat": float(la),
                "lon": float(lo),
                "duration_s": round((int(b) - int(a)) / 1000),
                "place": pl,
            }
            for a, b, la, lo, pl in zip(
                stops["start"], stops["end"], stops["lat"], stops["lon"], places, strict=True
            )
        ],
        "trips": [
            {
                "start": int(a),
                "end": int(b),
                "km": round(float(km), 3),
                "max_speed_kmh": round(float(v), 1),
            }
            for a, b, km, v in zip(
                trips["start"], trips["end"], trips["km"], trips["max_speed_kmh"], strict=True
            )
        ],
        "alarms": alarms,
    }


# -- alarms ------------------------------------------------------------------------------------


@route(
    "GET",
    "/api/alarms",
    "viewer",
    "Alarm history (报警记录), newest first, paged; format=csv|xlsx exports every page",
    params=(
        ("state", "string", "open|closed"),
        ("kind", "string", "comma-separated kinds"),
        ("severity", "string", "comma-separated: critical|warning|info"),
        ("org", "string", "organisation subtree"),
        ("vehicle", "string", "vehicle id"),
        ("plate", "string", "plate contains (case-insensitive)"),
        ("from", "string", "started at or after: epoch ms or ISO 8601 with offset"),
        ("to", "string", "started before: epoch ms or ISO 8601 with offset"),
        ("page", "integer", "page number, from 1"),
        ("page_size", "integer", "alarms per page, 1–500 (default 100)"),
        ("format", "string", "json (default) | csv | xlsx"),
        ("lang", "string", "zh|en: language of the export's headers and words"),
    ),
    tag="alarms",
)
async def alarms(request: Request, st: ApiState, p: Principal) -> Any:
    from store.history import AlarmQuery
    from web.geo_api import place_texts

    q = request.query_params
    state = q.get("state") or None
    if state not in (None, "open", "closed"):
        raise fail(400, "state must be open or closed")
    kinds = q_list(request, "kind")
    if kinds and not set(kinds) <= set(KINDS):
        raise fail(400, f"kind must be among {KINDS}")
    severities = q_list(request, "severity")
    if severities and not set(severities) <= {"critical", "warning", "info"}:
        raise fail(400, "severity must be among critical, warning, info")
    orgs = visible(st, p)
    org = q.get("org")
    if org:
        if org not in orgs:
            raise fail(404, f"no organisation {org!r}")
        orgs = st.registry.orgs.subtree(org)
    vid = q.get("vehicle") or None
    if vid:
        vehicle_index(st, p, vid)
    plate = (q.get("plate") or "").strip().upper() or None
    from_ms, to_ms = q_time(request, "from"), q_time(request, "to")
    page = q_int(request, "page", 1) or 1
    # ``limit`` is the older name of page_size (its old cap of 5,000 is gone with paging).
    size = q_int(request, "page_size", q_int(request, "limit", 100)) or 100
    if page < 1 or not 1 <= size <= 500:
        raise fail(400, "page must be >= 1 and page_size within 1..500")
    fmt = q.get("format") or "json"
    if fmt not in ("json", "csv", "xlsx"):
        raise fail(400, "format must be json, csv or xlsx")
    lang = q.get("lang") or st.ctx.config.web.language
    if lang not in ("zh", "en"):
        raise fail(400, "lang must be zh or en")
    query = AlarmQuery(
        state=state,
        kinds=kinds,
        severities=severities,
        orgs=sorted(orgs),
        vehicle_id=vid,
        plate=plate,
        from_ms=from_ms,
        to_ms=to_ms,
    )

    async def fetch(
        offset: int, limit: int, count: bool = True
    ) -> tuple[int, list[dict[str, Any]]]:
        if st.ctx.history is None:  # the live desk only: what the feed holds
            want = set(severities) if severities else None
            found = [
                a
                for a in st.ctx.feed.alarm_items()[::-1]
                if a["org"] in orgs
                and (state is None or a["state"] == state)
                and (not kinds or a["kind"] in kinds)
                and (want is None or a.get("severity") in want)
                and (vid is None or a["vehicle"] == vid)
                and (plate is None or plate in str(a.get("plate") or "").upper())
                and (from_ms is None or a["started_at"] >= from_ms)
                and (to_ms is None or a["started_at"] < to_ms)
            ]
            return len(found), found[offset : offset + limit]
        page_q = dataclasses.replace(query, offset=offset, limit=limit)
        total = await st.ctx.history.count_alarms(query) if count else -1
        return total, await st.ctx.history.alarms(page_q)

    def with_places(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        texts = place_texts(
            st,
            [float(a["lat"]) if a.get("lat") is not None else float("nan") for a in items],
            [float(a["lon"]) if a.get("lon") is not None else float("nan") for a in items],
            "en" if lang == "en" else "zh",
        )
        return [{**a, "place": t} for a, t in zip(items, texts, strict=True)]

    if fmt == "json":
        total, items = await fetch((page - 1) * size, size)
        return {"total": total, "page": page, "page_size": size, "alarms": with_places(items)}
    return await _export_alarms(st, fetch, with_places, fmt, "en" if lang == "en" else "zh")


async def _export_alarms(
    st: ApiState, fetch: Any, with_places: Any, fmt: str, lang: Any
) -> Response:
    """Every page of the query as one file, up to ``web.export_max_rows`` (said when cut)."""
    import asyncio

    from web.export import alarm_table, to_csv, to_xlsx

    cap = st.ctx.config.web.export_max_rows
    chunk = 5000
    total, rows = await fetch(0, min(chunk, cap))
    rows = list(rows)
    while len(rows) < min(total, cap):
        _, more = await fetch(len(rows), min(chunk, cap - len(rows)), count=False)
        if not more:
            break
        rows.extend(more)
    org_names = dict(zip(st.registry.orgs.ids, st.registry.orgs.names, strict=True))
    tz = st.ctx.config.service.timezone
    headers, table = alarm_table(with_places(rows), tz=tz, org_names=org_names, lang=lang)
    cut = total > len(rows)
    notes = []
    if cut:
        notes.append(
            f"共 {total} 条，导出上限 {cap} 条，仅导出最新的 {len(rows)} 条"
            if lang == "zh"
            else f"{total} alarms; the export holds at most {cap}: the newest {len(rows)} only"
        )
    stamp = dt.datetime.fromtimestamp(st.now() / 1000, ZoneInfo(tz)).strftime("%Y%m%d-%H%M")
    if fmt == "csv":
        body, media = to_csv(headers, table), "text/csv; charset=utf-8"
    else:
        body = await asyncio.to_thread(
            to_xlsx,
            headers,
            table,
            sheet="报警记录" if lang == "zh" else "Alarms",
            notes=notes,
            notes_sheet="说明" if lang == "zh" else "Notes",
        )
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="alarms-{stamp}.{fmt}"',
            "X-Export-Total": str(total),
            "X-Export-Rows": str(len(rows)),
            "X-Export-Truncated": "true" if cut else "false",
        },
    )


def _alarm_vehicle(st: ApiState, p: Principal, alarm_id: str) -> int:
    from rules.events import ALARM_ID_RE

    if not ALARM_ID_RE.match(alarm_id):
        raise fail(404, f"no alarm {alarm_id!r}")
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
    from web.commands_api import confirm_on_ack  # it imports this module

    alarm_id = request.path_params["id"]
    i = _alarm_vehicle(st, p, alarm_id)
    data = await body_json(request)
    note = str_field(data, "note", required=False)
    handled = bool(data.get("handled", False))
    now = st.now()
    if st.ctx.history is not None and not await st.ctx.history.ack_alarm(
        alarm_id, p.name, note, handled, now, action="ack"
    ):
        raise fail(404, f"no alarm {alarm_id!r}")
    ack = _handled(st, alarm_id, p.name, note, now, "ack", handled)
    await audit(st, p, "alarm.handle" if handled else "alarm.ack", alarm_id, note=note)
    # with commands.confirm_on_ack: the 0x8203 that clears a terminal's latched alarm
    await confirm_on_ack(st, p, alarm_id, st.registry.ids[i])
    return {"ok": True, "ack": ack}


def _handled(
    st: ApiState, alarm_id: str, user: str, note: str, at: int, action: str, handled: bool
) -> dict[str, Any]:
    """One entry of the handling record (first ack stays first), to every node's desks."""
    entry = {"user": user, "at": at, "note": note, "action": action, "handled": handled}
    if st.ctx.relay is not None:
        st.ctx.relay.acknowledge(alarm_id, entry)  # every node's desks, this one's included
    else:
        st.ctx.feed.acknowledge(alarm_id, entry)
    return entry


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
    if st.ctx.history is not None:
        await st.ctx.history.ack_alarm(alarm_id, p.name, note, True, now, action="close")
    _handled(st, alarm_id, p.name, note, now, "close", True)
    await audit(st, p, "alarm.close", alarm_id, note=note)
    return {"ok": True}


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


def _check_grant(st: ApiState, p: Principal, org: str, role: str) -> None:
    if org not in visible(st, p):
        # the same answer for an organisation elsewhere and for none at all
        raise Invalid([{"field": "org", "reason": "no such organisation in your subtree"}])
    if not role_at_least(p.role, role):
        raise fail(403, "you cannot grant a role above your own")


@route("GET", "/api/users", "admin", "Users of your organisation subtree", tag="users")
async def list_users(request: Request, st: ApiState, p: Principal) -> Any:
    return {"users": await st.accounts.users(visible(st, p))}


@route("POST", "/api/users", "admin", "Create a user (audited)", model=UserCreate, tag="users")
async def create_user(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(UserCreate, await request.body())
    _check_grant(st, p, body.org, body.role)
    if not await st.accounts.create_user(
        body.username, body.password, body.org, body.role, duties=body.duties
    ):
        # user names are one name space (they log in without an organisation): this
        # says the name is taken, never where or by whom
        raise fail(409, "user name not available")
    await audit(
        st, p, "user.create", body.username, org=body.org, role=body.role, duties=body.duties
    )
    return await st.accounts.user(body.username)


async def _own_user(st: ApiState, p: Principal, username: str) -> dict[str, Any]:
    u = await st.accounts.user(username)
    if u is None or u["org"] not in visible(st, p):
        raise fail(404, f"no user {username!r}")
    return u


@route(
    "PATCH",
    "/api/users/{username}",
    "admin",
    "Change a user's password, role, organisation, duties or disable it (audited)",
    model=UserPatch,
    tag="users",
)
async def update_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    u = await _own_user(st, p, username)
    body = parse_body(UserPatch, await request.body())
    if not role_at_least(p.role, u["role"]):
        raise fail(403, "you cannot change a user above your own role")
    _check_grant(st, p, body.org or u["org"], body.role or u["role"])
    await st.accounts.update_user(
        username,
        password=body.password,
        role=body.role,
        org=body.org,
        disabled=body.disabled,
        duties=body.duties,
    )
    changed = sorted(body.model_fields_set)
    await audit(st, p, "user.update", username, changed=changed)
    return await st.accounts.user(username)


@route("DELETE", "/api/users/{username}", "admin", "Delete a user (audited)", tag="users")
async def delete_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    await _own_user(st, p, username)
    await st.accounts.delete_user(username)
    await audit(st, p, "user.delete", username)
    return {"ok": True}


@route("GET", "/api/tokens", "admin", "Live tokens and sessions (never their secret)", tag="users")
async def list_tokens(request: Request, st: ApiState, p: Principal) -> Any:
    return {"tokens": await st.accounts.tokens(visible(st, p))}


@route(
    "POST",
    "/api/tokens",
    "admin",
    "Issue a machine token; the secret is shown once (audited)",
    tag="users",
    model=TokenCreate,
)
async def create_token(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(TokenCreate, await request.body())
    org = body.org or p.org
    _check_grant(st, p, org, body.role)
    token, rec = await st.accounts.issue_token(
        Principal(name=body.name, org=org, role=body.role), body.ttl_s, body.name
    )
    await audit(st, p, "token.create", rec["id"], name=body.name, org=org, role=body.role)
    return {"token": token, **rec}


@route("DELETE", "/api/tokens/{id}", "admin", "Revoke a token or session (audited)", tag="users")
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
        ("action", {"type": "string", "maxLength": 64}, "e.g. alarm.ack"),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "at most (default 500)"),
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
