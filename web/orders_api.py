"""派车单 routes (#16): request, approval chain, dispatch, out and back, 补单, import.

The flow (states and the table of allowed moves: :mod:`store.orders_core`)::

    POST /api/orders                  a request (用车申请) → pending      duty requester
    POST /api/orders/{id}/approve     one step of the chain              duty approver
    POST /api/orders/{id}/reject      {"reason"} → rejected              duty approver
    POST /api/orders/{id}/dispatch    {"vehicle","driver"} → dispatched  duty dispatcher
    POST /api/orders/{id}/cancel      {"reason"} → cancelled             requester / dispatcher
    POST /api/orders/{id}/trip        {"out_at","back_at","km"} manual   duty dispatcher (audited)
    POST /api/orders/emergency        dispatched at once, late (补单)     duty dispatcher
    PATCH /api/orders/{id}            fill in a pending or late request  requester / dispatcher
    GET  /api/orders?state=&org=&from=&to=&inbox=1&mine=1
    GET  /api/orders/suggest?start=&end=&org=      free vehicles and drivers
    GET  /api/orders/{id}             the order, its track summary and the alarms of its window
    POST /api/orders/import           CSV, as before

Who decides a step: a user holding the ``approver`` duty in the organisations the step
names (``unit_head``: the order's own; ``office``: one above it), never the requester
(403). A request's message goes to the routes naming ``order_pending`` (with the
approvers' names), the decision to those naming ``order_approved``/``order_rejected``
(with the requester's): :mod:`notify.orders`.

Orders entered the earlier way — ``POST /api/orders`` with ``vehicle`` and no
``purpose``, or a CSV import — are the office's own record of an order, not a
request: an operator enters and approves them in one step, as before (``source``
``entry``/``import``).

Out and back (出车/回车): :func:`sweep_trips`, every ``[web.orders] sweep_interval_s``,
matches each dispatched order with its vehicle's GPS track and its lot
(:func:`store.orders_core.derive_trip`): the first exit makes it ``out``, the re-entry
``returned`` once the window has ended or the vehicle has been back for the tolerance,
and ``completed`` after the window and tolerance are over. A dispatcher's manual record
(``/trip``) wins over GPS from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StringConstraints, model_validator
from starlette.requests import Request

from rules.orders import DispatchOrder
from store.orders import OrderStore
from store.orders_core import (
    BadTransition,
    chain_for,
    derive_trip,
    haversine_m,
    step_approver_orgs,
    track_km,
    transition,
)
from web import bus

# BadRecord through web.api: the error classes move to the kernel (fleet.errors, #13) and
# web.api follows them; this module then needs no change.
from web.api import (
    ApiState,
    BadRecord,
    audit,
    body_json,
    broadcast,
    fail,
    q_time,
    str_field,
    vehicle_index,
    visible,
)
from web.auth import Principal
from web.bodies import _Body, parse_body, schema_of
from web.routes import RouteTable

__all__ = [
    "apply_orders",
    "open_orders",
    "run_sweeper",
    "sweep_trips",
]

ROUTES = RouteTable()
route = ROUTES.route

log = logging.getLogger(__name__)

#: States in which an order holds its vehicle and driver (not free for another order).
HOLDING = ("approved", "dispatched", "out")
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
OrderType = Literal["local", "out_of_area", "holiday", "overnight"]  # rules.config.ORDER_TYPES
MAX_WINDOW_MS = 31 * 86_400_000


# -- bodies -------------------------------------------------------------------------------------


NoColon = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=64, pattern=r"^[^:]*$")
]


class Destination(_Body):
    """Where to: a place, or a region (county: ``place`` names the county, else ``text``)."""

    kind: Literal["place", "county", "city", "out_of_city"]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    place: NoColon | None = None
    city: NoColon | None = None

    @model_validator(mode="after")
    def _region(self) -> Destination:
        if self.kind == "out_of_city" and not self.city:
            raise ValueError("an out-of-city destination names its city")
        if self.kind == "county" and not self.place and ":" in self.text:
            raise ValueError("a county destination names the county in place (no ':')")
        return self


class _Window(_Body):
    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _window(self) -> _Window:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_WINDOW_MS:
            raise ValueError("a window is at most 31 days")
        return self


class RequestBody(_Window):
    """用车申请."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    org: Name | None = None
    type: OrderType
    purpose: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    passengers: int = Field(1, ge=1, le=60)
    passenger_names: Text = ""
    destination: Destination
    vehicle_preferred: Name | None = None


class EmergencyBody(_Window):
    """补单: dispatched at once; the request is filed afterwards."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    org: Name | None = None
    vehicle: Name
    driver: Name
    type: OrderType
    purpose: Text = ""
    passengers: int = Field(1, ge=1, le=60)
    passenger_names: Text = ""
    destination: Destination | None = None
    requester: Name | None = None


class PatchBody(_Body):
    purpose: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
        | None
    ) = None
    passengers: int | None = Field(None, ge=1, le=60)
    passenger_names: Text | None = None
    destination: Destination | None = None
    vehicle_preferred: Name | None = None


class DispatchBody(_Body):
    vehicle: Name
    driver: Name


class ReasonBody(_Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class CancelBody(_Body):
    reason: Text = ""


class TripBody(_Body):
    out_at: int = Field(ge=0)
    back_at: int = Field(ge=0)
    km: float = Field(ge=0, le=10_000)

    @model_validator(mode="after")
    def _order(self) -> TripBody:
        if self.back_at < self.out_at:
            raise ValueError("back_at must not be before out_at")
        return self


# -- helpers ------------------------------------------------------------------------------------


def _store(st: ApiState) -> OrderStore:
    store = st.orders
    if store is None:
        raise fail(503, "the order store is not open")
    return store


def ancestry(st: ApiState, org: str) -> list[str]:
    """``org``, its parent, …, the top."""
    tree = st.registry.orgs
    ids = list(tree.ids)
    if org not in ids:
        return [org]
    out: list[str] = []
    i = ids.index(org)
    while i >= 0:
        out.append(ids[i])
        i = int(tree.parent[i])
    return out


def region_of(dest: dict[str, Any] | None) -> str | None:
    """What the rules check (CONTRACTS.md): null | county:<name> | city | out_of_city:<city>."""
    if not dest:
        return None
    kind = dest.get("kind")
    if kind == "county":
        return f"county:{dest.get('place') or dest.get('text')}"
    if kind == "city":
        return "city"
    if kind == "out_of_city":
        return f"out_of_city:{dest.get('city')}"
    return None


def next_step(o: dict[str, Any]) -> str | None:
    """The step of the chain waiting for a decision (None: decided, or not a request)."""
    if o["approved"] or o["state"] in ("rejected", "cancelled"):
        return None
    if o["state"] != "pending" and not o.get("late"):
        return None
    done = sum(1 for a in o.get("approvals") or () if a["decision"] == "approve")
    chain = o.get("chain") or ["office"]
    return str(chain[done]) if done < len(chain) else None


def render(st: ApiState, o: dict[str, Any]) -> dict[str, Any]:
    """The order as the API shows it (CONTRACTS.md "Order JSON")."""
    reg = st.registry
    vid = o.get("vehicle")
    i = reg.by_id(vid) if vid else None
    out = {k: v for k, v in o.items() if k not in ("version", "chain")}
    out["plate"] = reg.plates[i] if i is not None else None
    out["vehicle_id"] = vid
    out["next_step"] = next_step(o)
    out["chain"] = list(o.get("chain") or [])
    return out


def _visible(st: ApiState, p: Principal, o: dict[str, Any]) -> bool:
    orgs = visible(st, p)
    if o["org"] in orgs:
        return True
    if o["org"] == "" and o.get("vehicle"):  # the oldest orders: ids unique city-wide
        i = st.registry.by_id(o["vehicle"])
        return i is not None and st.registry.org_of(i) in orgs
    return False


async def _find(request: Request, st: ApiState, p: Principal) -> dict[str, Any]:
    """The order named by the path's id (and ``?org=`` where the caller sees several)."""
    org = request.query_params.get("org")
    found = [
        o
        for o in await _store(st).by_id(request.path_params["id"])
        if _visible(st, p, o) and (org is None or o["org"] == org)
    ]
    if not found:
        raise fail(404, "no such order")
    if len(found) > 1:
        raise fail(409, "several of your organisations have an order with this id: add ?org=")
    return found[0]


def _keys(orders: list[dict[str, Any]]) -> list[list[str]]:
    return [[o["org"], o["id"]] for o in orders]


def _need_duty(p: Principal, duty: str) -> None:
    if not p.has(duty):
        raise fail(403, f"needs the {duty} duty")


def _move(o: dict[str, Any], action: str) -> str:
    try:
        return transition(o["state"], action)
    except BadTransition as exc:
        raise fail(409, str(exc)) from None


async def _save(st: ApiState, o: dict[str, Any]) -> dict[str, Any]:
    saved = await _store(st).update(o)
    if saved is None:
        raise fail(409, "the order changed meanwhile: read it again")
    return saved


def _is_request(o: dict[str, Any]) -> bool:
    return o.get("source") in ("request", "emergency")


def dispatch_order(o: dict[str, Any], *, approved: bool) -> Any:
    """The rules engine's view of an order (``rules.orders.DispatchOrder``)."""
    from rules.orders import DispatchOrder

    base: dict[str, Any] = {
        # the engine knows an order once by its id: ids are unique per organisation only
        "id": f"{o['org']}:{o['id']}" if o.get("org") else o["id"],
        "vehicle_id": o["vehicle"],
        "type": o["type"],
        "start": o["start"],
        "end": o["end"],
        "approved": approved,
        "approved_at": o.get("approved_at"),
    }
    extra = {"driver_id": o.get("driver"), "region": o.get("region"), "state": o["state"]}
    return DispatchOrder(**base, **extra)


def excuses(o: dict[str, Any]) -> bool:
    """Whether the order excuses its trip: approved and neither rejected nor cancelled."""
    return bool(o.get("approved")) and o["state"] not in ("rejected", "cancelled", "pending")


async def apply_orders(st: ApiState, orders: list[dict[str, Any]]) -> int:
    """Give orders with a vehicle to the rules engine — an approved one excuses, a rejected
    or cancelled one withdraws (``approved=False``) — and publish the episodes they cover
    after the fact. Returns how many excuse."""
    if st.ctx.rules is None:
        return 0
    given: list[DispatchOrder] = []
    n = 0
    for o in orders:
        if not o.get("vehicle"):
            continue
        ok = excuses(o)
        if not ok and o["state"] not in ("rejected", "cancelled"):
            continue  # pending: nothing to tell the engine yet
        n += ok
        given.append(dispatch_order(o, approved=ok))
    await bus.add_orders(st, given)
    return n


async def _engine(st: ApiState, o: dict[str, Any]) -> None:
    """Hand the order to this node's engine and, when it names a vehicle (the only orders
    an engine takes), to the other nodes' engines through the command bus."""
    await apply_orders(st, [o])
    if o.get("vehicle"):
        await broadcast(st, "orders", keys=_keys([o]))


async def _users_with(st: ApiState, duty: str, orgs: tuple[str, ...] | list[str]) -> list[str]:
    users = await st.accounts.users(frozenset(orgs))
    return [u["username"] for u in users if duty in u["duties"] and not u["disabled"]]


async def _notify(
    st: ApiState,
    o: dict[str, Any],
    kind: str,
    to: list[str],
    *,
    by: str = "",
    reason: str = "",
    step: str | None = None,
) -> None:
    """Queue the order message on the routes that carry ``kind`` (nothing when notifications
    are off). A failure to queue is logged, never fails the decision itself."""
    notifier = st.ctx.notifier
    if notifier is None:
        return
    from notify.orders import order_entries

    cfg = st.ctx.config
    try:
        entries = order_entries(
            notifier.config,  # the routes this notifier delivers ([notify])
            st.registry,
            o,
            kind,
            to=to,
            now=st.now(),
            timezone=cfg.service.timezone,
            public_url=cfg.service.public_url,
            by=by,
            reason=reason,
            step=step,
        )
        await notifier.enqueue(entries)
    except Exception:
        log.exception("order %s: the %s message could not be queued", o["id"], kind)


async def _tell_approvers(st: ApiState, o: dict[str, Any]) -> None:
    step = next_step(o)
    if step is None:
        return
    orgs = step_approver_orgs(step, ancestry(st, o["org"]))
    to = [u for u in await _users_with(st, "approver", orgs) if u != o.get("requester")]
    await _notify(st, o, "order_pending", to, step=step)


def _new_id(st: ApiState, given: str | None) -> str:
    return given or f"web-{st.now()}-{secrets.token_hex(3)}"


def _resolve_vehicle(st: ApiState, p: Principal, vid: str) -> str:
    reg = st.registry
    if reg.by_id(vid) is None:
        vid = dict(zip(reg.plates, reg.ids, strict=True)).get(vid, vid)
    vehicle_index(st, p, vid)
    return vid


def _order_org(st: ApiState, p: Principal, org: str | None) -> str:
    org = org or p.org
    if org not in visible(st, p):
        raise fail(404, f"no organisation {org!r}")
    return org


# -- free vehicles and drivers ---------------------------------------------------------------


async def _busy(
    st: ApiState, start: int, end: int, skip: tuple[str, str] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Vehicles and drivers held by another order overlapping ``[start, end]``."""
    vehicles: dict[str, dict[str, Any]] = {}
    drivers: dict[str, dict[str, Any]] = {}
    for o in await _store(st).holding(start, end, HOLDING):
        if skip is not None and (o["org"], o["id"]) == skip:
            continue
        if o.get("vehicle"):
            vehicles.setdefault(o["vehicle"], o)
        if o.get("driver"):
            drivers.setdefault(o["driver"], o)
    return vehicles, drivers


def _vehicle_refusal(st: ApiState, vid: str, busy: dict[str, dict[str, Any]]) -> str | None:
    reg = st.registry
    i = reg.by_id(vid)
    if i is None:
        return "未登记"
    v = reg.vehicles[i]
    if bool(reg.sealed[i]) or v.status == "封存":
        return "封存车辆"
    if v.status != "在用":
        return f"车辆状态为{v.status}"
    other = busy.get(vid)
    if other is not None:
        return f"已在派车单 {other['id']} 上"
    return None


async def _driver(st: ApiState, p: Principal, driver_id: str) -> Any:
    records = st.ctx.vehicle_records
    d = await records.driver(driver_id) if records is not None else None
    if d is None or d.org not in visible(st, p):
        raise fail(404, f"no driver {driver_id!r}")
    return d


def _driver_refusal(d: Any, busy: dict[str, dict[str, Any]]) -> str | None:
    if d.status != "在岗":
        return f"驾驶员状态为{d.status}"
    other = busy.get(d.id)
    if other is not None:
        return f"已在派车单 {other['id']} 上"
    return None


def _lot_points(st: ApiState, org: str) -> list[tuple[float, float]]:
    """Centres (lon, lat) of the lot fences of ``org`` (or, failing that, of the nearest
    organisation above it that has one)."""
    index = st.ctx.fences.index if st.ctx.fences is not None else None
    if index is None:
        return []
    for o in ancestry(st, org):
        pts = [
            (float(f.geometry.centroid.x), float(f.geometry.centroid.y))
            for f in index.fences
            if f.use == "lot" and f.org == o
        ]
        if pts:
            return pts
    return []


def _position(st: ApiState, i: int) -> tuple[float, float] | None:
    feed = st.ctx.feed
    if bool(feed.has[i]):
        return float(feed.lon[i]), float(feed.lat[i])
    lots = _lot_points(st, st.registry.org_of(i))
    return lots[0] if lots else None


@route(
    "GET",
    "/api/orders/suggest",
    "viewer",
    "Free vehicles (in service, not sealed, not on another order, nearest the requester's lot "
    "first) and free drivers for a window",
    params=(
        ("start", "string", "epoch ms or ISO 8601 with offset"),
        ("end", "string", "epoch ms or ISO 8601 with offset"),
        ("org", "string", "the requesting organisation (its lot); default yours"),
    ),
    tag="orders",
)
async def suggest(request: Request, st: ApiState, p: Principal) -> Any:
    start, end = q_time(request, "start"), q_time(request, "end")
    if start is None or end is None or end <= start:
        raise fail(400, "start and end are required, start before end")
    org = _order_org(st, p, request.query_params.get("org"))
    busy_v, busy_d = await _busy(st, start, end)
    lots = _lot_points(st, org)
    reg = st.registry
    orgs = visible(st, p)
    vehicles = []
    for i, v in enumerate(reg.vehicles):
        if v.org not in orgs or v.status in ("待处置", "已处置"):
            continue
        why = _vehicle_refusal(st, v.id, busy_v)
        pos = _position(st, i)
        dist = (
            min(haversine_m(pos[0], pos[1], lo, la) for lo, la in lots)
            if pos is not None and lots
            else None
        )
        vehicles.append(
            {
                "id": v.id,
                "plate": v.plate,
                "org": v.org,
                "distance_m": round(dist) if dist is not None else None,
                "free": why is None,
                "why": why or "空闲",
            }
        )
    vehicles.sort(
        key=lambda x: (not x["free"], x["distance_m"] is None, x["distance_m"] or 0, x["id"])
    )
    drivers = []
    records = st.ctx.vehicle_records
    for d in await records.drivers() if records is not None else []:
        if d.org not in orgs or d.status == "离职":
            continue
        why = _driver_refusal(d, busy_d)
        drivers.append(
            {"id": d.id, "name": d.name, "org": d.org, "free": why is None, "why": why or "空闲"}
        )
    drivers.sort(key=lambda x: (not x["free"], x["org"] != org, x["id"]))
    return {"start": start, "end": end, "org": org, "vehicles": vehicles, "drivers": drivers}


# -- listing and reading ---------------------------------------------------------------------


async def _may_decide(st: ApiState, p: Principal, o: dict[str, Any]) -> bool:
    step = next_step(o)
    if step is None or not _is_request(o) or p.username == o.get("requester"):
        return False
    return p.has("approver") and p.org in step_approver_orgs(step, ancestry(st, o["org"]))


@route(
    "GET",
    "/api/orders",
    "viewer",
    "Dispatch orders (派车单), filtered",
    params=(
        ("state", "string", "comma-separated states"),
        ("org", "string", "organisation subtree"),
        ("from", "string", "window overlaps [from, to): epoch ms or ISO 8601 with offset"),
        ("to", "string", "epoch ms or ISO 8601 with offset"),
        ("inbox", "string", "1: the requests waiting for your decision"),
        ("mine", "string", "1: the orders you requested"),
    ),
    tag="orders",
)
async def list_orders(request: Request, st: ApiState, p: Principal) -> Any:
    from store.orders_core import STATES

    q = request.query_params
    states = [s for s in (q.get("state") or "").split(",") if s] or None
    for s in states or ():
        if s not in STATES:
            raise fail(400, f"state must be among {', '.join(STATES)}")
    orgs = visible(st, p)
    if q.get("org"):
        if q["org"] not in orgs:
            raise fail(404, f"no organisation {q['org']!r}")
        orgs = st.registry.orgs.subtree(q["org"])
    from_ms, to_ms = q_time(request, "from"), q_time(request, "to")
    mine = q.get("mine") in ("1", "true")
    found = await _store(st).select(
        orgs=None if "" in orgs else [*orgs, ""],
        states=states,
        from_ms=from_ms,
        to_ms=to_ms,
        requester=(p.username or p.name) if mine else None,
    )
    out = [o for o in found if _visible(st, p, o) and (o["org"] in orgs or not q.get("org"))]
    if q.get("inbox") in ("1", "true"):
        out = [o for o in out if await _may_decide(st, p, o)]
    return {"orders": [render(st, o) for o in out]}


@route(
    "GET",
    "/api/orders/{id}",
    "viewer",
    "One order with its track summary (points, km, out, back) and the alarms of its window",
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def get_order(request: Request, st: ApiState, p: Principal) -> Any:
    from store.history import AlarmQuery

    o = await _find(request, st, p)
    out = render(st, o)
    tol = st.ctx.config.web.orders.tolerance_min * 60_000
    out["track"] = None
    out["alarms"] = []
    history = st.ctx.history
    vid = o.get("vehicle")
    if history is None or not vid:
        return out
    a = o.get("out_at") or o["start"] - tol
    b = o.get("back_at") or min(o["end"] + tol, st.now())
    if b > a:
        cols = await history.track(vid, a, b + 1, None)
        out["track"] = {
            "points": {k: cols[k].tolist() for k in ("ts", "lat", "lon")},
            "km": o.get("km")
            if o.get("km") is not None
            else round(track_km(cols["lon"], cols["lat"]), 3),
            "first": o.get("out_at"),
            "last": o.get("back_at"),
        }
    out["alarms"] = await history.alarms(
        AlarmQuery(vehicle_id=vid, from_ms=o["start"] - tol, to_ms=o["end"] + tol, limit=500)
    )
    return out


# -- filing --------------------------------------------------------------------------------


def _legacy_entry(st: ApiState, p: Principal, data: dict[str, Any]) -> dict[str, Any]:
    """An order in the earlier body (``{id, vehicle, type, start, end[, reason]}``): the
    office's record, organisation of the vehicle, pending until an operator approves."""
    from rules.config import ORDER_TYPES

    reg = st.registry
    vid = _resolve_vehicle(st, p, str_field(data, "vehicle", max_len=64))
    typ = str_field(data, "type", max_len=32)
    if typ not in ORDER_TYPES:
        raise fail(400, f"type must be one of {ORDER_TYPES}")
    start, end = data.get("start"), data.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or end < start:
        raise fail(400, "start and end must be epoch ms with start <= end")
    oid = data.get("id") or _new_id(st, None)
    if not isinstance(oid, str) or not 0 < len(oid) <= 64:
        raise fail(400, "id must be a string of at most 64 characters")
    from store.orders import legacy_order

    i = reg.by_id(vid)
    if i is None:
        raise fail(404, f"no vehicle {vid!r}")
    o = legacy_order(
        {
            "org": reg.org_of(i),
            "id": oid,
            "vehicle": vid,
            "type": typ,
            "start": start,
            "end": end,
            "reason": str_field(data, "reason", required=False),
            "created_by": p.name,
            "created_at": st.now(),
            "approved": False,
        }
    )
    return o


def _blank(st: ApiState, org: str, oid: str, source: str, p: Principal) -> dict[str, Any]:
    return {
        "org": org,
        "id": oid,
        "state": "new",
        "source": source,
        "created_by": p.name,
        "created_at": st.now(),
        "chain": chain_for(st.ctx.config.web.orders, ancestry(st, org)),
        "approvals": [],
        "approved": False,
        "approved_by": None,
        "approved_at": None,
        "vehicle_preferred": None,
        "vehicle": None,
        "driver": None,
        "driver_name": None,
        "dispatched_by": None,
        "dispatched_at": None,
        "out_at": None,
        "back_at": None,
        "km": None,
        "trip_source": None,
        "late": False,
        "cancel_reason": None,
        "reject_reason": None,
        "destination": None,
        "region": None,
        "reason": "",
    }


_ENTRY_BODY = {
    "type": "object",
    "description": "the earlier body: an office order, pending until an operator approves it",
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


@route(
    "POST",
    "/api/orders",
    "viewer",
    "File a request (用车申请, duty requester) → pending; the earlier body {id, vehicle, type, "
    "start, end} (no purpose) enters an office order (operator)",
    body={"oneOf": [schema_of(RequestBody), _ENTRY_BODY]},
    tag="orders",
)
async def create_order(request: Request, st: ApiState, p: Principal) -> Any:
    raw = await request.body()
    data = await body_json(request)
    store = _store(st)
    if "purpose" not in data and "destination" not in data and "vehicle" in data:
        if not p.may("operator"):
            raise fail(403, "needs the operator role")
        o = _legacy_entry(st, p, data)
        if not await store.add(o):
            # ids are unique per organisation (the vehicle's): the one taken is the caller's own
            raise fail(409, f"order {o['id']!r} exists in {o['org']}")
        await audit(st, p, "order.create", o["id"], vehicle=o["vehicle"], type=o["type"])
        return render(st, o)
    _need_duty(p, "requester")
    body = parse_body(RequestBody, raw)
    org = _order_org(st, p, body.org)
    o = _blank(st, org, _new_id(st, body.id), "request", p)
    dest = body.destination.model_dump()
    pref = _resolve_vehicle(st, p, body.vehicle_preferred) if body.vehicle_preferred else None
    o.update(
        type=body.type,
        purpose=body.purpose,
        reason=body.purpose,
        passengers=body.passengers,
        passenger_names=body.passenger_names,
        destination=dest,
        region=region_of(dest),
        start=body.start,
        end=body.end,
        vehicle_preferred=pref,
        requester=p.username or p.name,
    )
    o["state"] = transition("new", "request")
    if not await store.add(o):
        raise fail(409, f"order {o['id']!r} exists in {org}")
    await audit(st, p, "order.request", o["id"], org=org, type=o["type"])
    await _tell_approvers(st, o)
    return render(st, o)


@route(
    "POST",
    "/api/orders/emergency",
    "viewer",
    "补单: dispatch at once (duty dispatcher); the request is filed and approved afterwards, "
    "within [web.orders] late_hours",
    model=EmergencyBody,
    tag="orders",
)
async def emergency(request: Request, st: ApiState, p: Principal) -> Any:
    _need_duty(p, "dispatcher")
    body = parse_body(EmergencyBody, await request.body())
    vid = _resolve_vehicle(st, p, body.vehicle)
    d = await _driver(st, p, body.driver)
    busy_v, busy_d = await _busy(st, body.start, body.end)
    why = _vehicle_refusal(st, vid, busy_v) or _driver_refusal(d, busy_d)
    if why is not None:
        raise fail(409, why)
    vi = st.registry.by_id(vid)
    if vi is None:
        raise fail(404, f"no vehicle {vid!r}")
    org = _order_org(st, p, body.org or st.registry.org_of(vi))
    if body.requester is not None:
        u = await st.accounts.user(body.requester)
        if u is None or u["org"] not in visible(st, p):
            raise fail(404, f"no user {body.requester!r}")
    o = _blank(st, org, _new_id(st, body.id), "emergency", p)
    dest = body.destination.model_dump() if body.destination else None
    now = st.now()
    o.update(
        type=body.type,
        purpose=body.purpose,
        reason=body.purpose,
        passengers=body.passengers,
        passenger_names=body.passenger_names,
        destination=dest,
        region=region_of(dest),
        start=body.start,
        end=body.end,
        vehicle=vid,
        driver=d.id,
        driver_name=d.name,
        requester=body.requester or p.username or p.name,
        dispatched_by=p.name,
        dispatched_at=now,
        late=True,
    )
    o["state"] = transition("new", "emergency")
    if not await _store(st).add(o):
        raise fail(409, f"order {o['id']!r} exists in {org}")
    await audit(st, p, "order.emergency", o["id"], org=org, vehicle=vid, driver=d.id)
    await _tell_approvers(st, o)
    return render(st, o)


def _late_open(st: ApiState, o: dict[str, Any]) -> None:
    """A 补单's request is filed within the limit after its dispatch, or never."""
    hours = st.ctx.config.web.orders.late_hours
    since = o.get("dispatched_at") or o["created_at"]
    if st.now() > since + hours * 3_600_000:
        raise fail(409, f"补单 must be filed within {hours} h of the dispatch")


@route(
    "PATCH",
    "/api/orders/{id}",
    "viewer",
    "Fill in a pending request or a 补单 (its requester or a dispatcher)",
    model=PatchBody,
    tag="orders",
)
async def patch_order(request: Request, st: ApiState, p: Principal) -> Any:
    o = await _find(request, st, p)
    body = parse_body(PatchBody, await request.body())
    own = p.username is not None and p.username == o.get("requester")
    if not (own or p.has("dispatcher")):
        raise fail(403, "only the requester or a dispatcher changes a request")
    if o.get("late") and not o["approved"]:
        _late_open(st, o)
    elif o["state"] != "pending":
        raise fail(409, f"an order in state {o['state']!r} cannot be changed")
    changes = body.model_dump(exclude_unset=True)
    if "destination" in changes and changes["destination"] is not None:
        o["region"] = region_of(changes["destination"])
    if changes.get("vehicle_preferred"):
        changes["vehicle_preferred"] = _resolve_vehicle(st, p, changes["vehicle_preferred"])
    o.update({k: v for k, v in changes.items() if v is not None})
    o["reason"] = o.get("purpose") or ""
    o = await _save(st, o)
    await audit(st, p, "order.update", o["id"], org=o["org"], changed=sorted(changes))
    return render(st, o)


# -- deciding ------------------------------------------------------------------------------


async def _decide(
    request: Request, st: ApiState, p: Principal, decision: str, reason: str
) -> dict[str, Any]:
    o = await _find(request, st, p)
    if not _is_request(o):
        raise fail(409, "this order was entered by the office: approve it, there is no chain")
    if p.username is not None and p.username == o.get("requester"):
        raise fail(403, "you requested this order: another approver decides it")
    late = bool(o.get("late")) and not o["approved"]
    action = ("late_" if late else "") + decision
    nxt = _move(o, action)
    if late:
        _late_open(st, o)
    step = next_step(o)
    if step is None:
        raise fail(409, "this order waits for no decision")
    if not p.has("approver"):
        raise fail(403, "needs the approver duty")
    if p.org not in step_approver_orgs(step, ancestry(st, o["org"])):
        raise fail(403, f"the {step} step is decided by an approver of another organisation")
    now = st.now()
    o["approvals"] = [
        *(o.get("approvals") or []),
        {"by": p.name, "at": now, "decision": decision, "reason": reason, "step": step},
    ]
    if decision == "reject":
        o["state"] = nxt
        o["reject_reason"] = reason
    elif next_step(o) is None:  # the last step
        o["state"] = nxt
        o["approved"] = True
        o["approved_by"] = p.name
        o["approved_at"] = now
    return await _save(st, o)


@route(
    "POST",
    "/api/orders/{id}/approve",
    "viewer",
    "Approve a step of a request (duty approver, not its requester; audited); an office "
    "order (operator) in one step",
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def approve_order(request: Request, st: ApiState, p: Principal) -> Any:
    o = await _find(request, st, p)
    if not _is_request(o):
        if not p.may("operator"):
            raise fail(403, "needs the operator role")
        if not o["approved"]:  # approved once: a second approval keeps the first's who/when
            _move(o, "approve")
            now = st.now()
            o.update(state="approved", approved=True, approved_by=p.name, approved_at=now)
            o["approvals"] = [
                *(o.get("approvals") or []),
                {"by": p.name, "at": now, "decision": "approve", "reason": "", "step": "office"},
            ]
            o = await _save(st, o)
            await _engine(st, o)
        await audit(st, p, "order.approve", o["id"], vehicle=o["vehicle"], org=o["org"])
        return render(st, o)
    o = await _decide(request, st, p, "approve", "")
    await audit(st, p, "order.approve", o["id"], org=o["org"], step=o["approvals"][-1]["step"])
    if o["approved"]:
        await _engine(st, o)
        # one message (one outbox key per change): the requester, and the dispatchers who
        # now have a car to assign
        to = [o["requester"]]
        if not o.get("vehicle"):
            to += await _users_with(st, "dispatcher", ancestry(st, o["org"]))
        await _notify(st, o, "order_approved", to, by=p.name)
    else:
        await _tell_approvers(st, o)
    return render(st, o)


@route(
    "POST",
    "/api/orders/{id}/reject",
    "viewer",
    "Reject a request with a reason (duty approver, not its requester; audited)",
    model=ReasonBody,
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def reject_order(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(ReasonBody, await request.body())
    o = await _decide(request, st, p, "reject", body.reason)
    await audit(st, p, "order.reject", o["id"], org=o["org"], reason=body.reason)
    await _engine(st, o)
    await _notify(st, o, "order_rejected", [o["requester"]], by=p.name, reason=body.reason)
    return render(st, o)


@route(
    "POST",
    "/api/orders/{id}/dispatch",
    "viewer",
    "Assign a free vehicle and driver to an approved order (duty dispatcher; audited)",
    model=DispatchBody,
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def dispatch(request: Request, st: ApiState, p: Principal) -> Any:
    _need_duty(p, "dispatcher")
    body = parse_body(DispatchBody, await request.body())
    o = await _find(request, st, p)
    nxt = _move(o, "dispatch")
    vid = _resolve_vehicle(st, p, body.vehicle)
    d = await _driver(st, p, body.driver)
    busy_v, busy_d = await _busy(st, o["start"], o["end"], skip=(o["org"], o["id"]))
    why = _vehicle_refusal(st, vid, busy_v) or _driver_refusal(d, busy_d)
    if why is not None:
        raise fail(409, why)
    # an office order re-assigned: the engine replaces it by id, the old car excuses nothing
    o.update(
        state=nxt,
        vehicle=vid,
        driver=d.id,
        driver_name=d.name,
        dispatched_by=p.name,
        dispatched_at=st.now(),
    )
    o = await _save(st, o)
    await audit(st, p, "order.dispatch", o["id"], org=o["org"], vehicle=vid, driver=d.id)
    await _engine(st, o)
    await _notify(st, o, "order_dispatched", [o["requester"]], by=p.name)
    return render(st, o)


@route(
    "POST",
    "/api/orders/{id}/cancel",
    "viewer",
    "Cancel an order not yet out (its requester, a dispatcher, or an operator for an office "
    "order; audited); it excuses nothing from then on",
    model=CancelBody,
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def cancel(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(CancelBody, await request.body() or b"{}")
    o = await _find(request, st, p)
    own = p.username is not None and p.username == o.get("requester")
    office = not _is_request(o) and p.may("operator")
    if not (own or office or p.has("dispatcher")):
        raise fail(403, "only the requester or a dispatcher cancels an order")
    o["state"] = _move(o, "cancel")
    o["cancel_reason"] = body.reason
    o = await _save(st, o)
    await audit(st, p, "order.cancel", o["id"], org=o["org"], reason=body.reason)
    await _engine(st, o)
    if not own and o.get("requester"):
        await _notify(st, o, "order_cancelled", [o["requester"]], by=p.name, reason=body.reason)
    return render(st, o)


@route(
    "POST",
    "/api/orders/{id}/trip",
    "viewer",
    "Record out and back by hand (duty dispatcher; audited): the order is returned",
    model=TripBody,
    params=(("org", "string", "which organisation's order, where you see several"),),
    tag="orders",
)
async def manual_trip(request: Request, st: ApiState, p: Principal) -> Any:
    _need_duty(p, "dispatcher")
    body = parse_body(TripBody, await request.body())
    o = await _find(request, st, p)
    before = {k: o.get(k) for k in ("out_at", "back_at", "km", "trip_source")}
    o["state"] = _move(o, "trip")
    o.update(out_at=body.out_at, back_at=body.back_at, km=round(body.km, 3), trip_source="manual")
    o = await _save(st, o)
    await audit(
        st,
        p,
        "order.trip",
        o["id"],
        org=o["org"],
        before=before,
        after={"out_at": body.out_at, "back_at": body.back_at, "km": o["km"]},
    )
    return render(st, o)


# -- CSV import -----------------------------------------------------------------------------


@route(
    "POST",
    "/api/orders/import",
    "operator",
    "Import orders from CSV (id,vehicle,type,start,end[,approved][,approved_at])",
    body={"type": "string", "description": "text/csv"},
    tag="orders",
)
async def import_orders(request: Request, st: ApiState, p: Principal) -> Any:
    """Row by row: good rows are imported, each bad one is listed with its line and reason.

    A row only ever writes its own vehicle's organisation's order (ids are unique per
    organisation), so an id another county uses is simply a new order here; a row for a
    vehicle outside the caller's subtree is refused exactly like an unknown vehicle. An
    approved row is an already-approved order.
    """
    from rules.orders import parse_orders_rows
    from store.orders import legacy_order

    text = (await request.body()).decode("utf-8-sig", errors="replace")
    reg = st.registry
    try:
        parsed, bad = parse_orders_rows(text, reg, timezone=st.ctx.config.service.timezone)
    except BadRecord as exc:
        raise fail(400, exc.detail or exc.reason) from None
    rejected: list[dict[str, Any]] = [{"line": line, "reason": reason} for line, reason in bad]
    now = st.now()
    out: list[dict[str, Any]] = []
    for line, d in parsed:
        v = reg.by_id(d.vehicle_id)
        if v is None:  # parse_orders_csv checked the vehicles against the registry
            raise fail(400, f"line {line}: no vehicle {d.vehicle_id!r}")
        o = legacy_order(
            {
                "org": reg.org_of(v),
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
        )
        o["source"] = "import"
        if not _visible(st, p, o):
            rejected.append({"line": line, "reason": f"unknown vehicle {d.vehicle_id!r}"})
            continue
        out.append(o)
    rejected.sort(key=lambda r: int(r["line"]))
    await _store(st).put_many(out)
    await apply_orders(st, out)
    if any(o["approved"] for o in out):
        await broadcast(st, "orders", keys=_keys([o for o in out if o["approved"]]))
    await audit(
        st,
        p,
        "order.import",
        f"{len(out)} orders",
        ids=[o["id"] for o in out],
        orgs=sorted({o["org"] for o in out}),
        rejected=rejected,
    )
    return {"imported": len(out), "orders": [render(st, o) for o in out], "rejected": rejected}


# -- out and back from GPS ---------------------------------------------------------------------


def _lot_mask(st: ApiState, vid: str, lon: Any, lat: Any) -> Any:
    """Whether each point lies in the vehicle's lot: the lot fences of its organisation,
    as the rules engine's parking rule sees them (the registry carries no per-vehicle
    ``lot``). None when it has no lot."""
    index = st.ctx.fences.index if st.ctx.fences is not None else None
    reg = st.registry
    i = reg.by_id(vid)
    if index is None or i is None:
        return None
    org = reg.org_of(i)
    lots = [k for k, f in enumerate(index.fences) if f.use == "lot" and f.org == org]
    if not lots:
        return None
    inside = np.zeros(len(lon), dtype=bool)
    if len(lon):
        pts, fence = index.membership(lon, lat)
        inside[pts[np.isin(fence, lots)]] = True
    return inside


async def sweep_trips(st: ApiState) -> int:
    """One pass: dispatched orders → out → returned from GPS, returned → completed.
    Returns how many orders changed."""
    store, history = st.orders, st.ctx.history
    if store is None or history is None:
        return 0
    cfg = st.ctx.config.web.orders
    tol = cfg.tolerance_min * 60_000
    now = st.now()
    changed = 0
    for o in await store.select(states=["dispatched", "out", "returned"]):
        try:
            if await _sweep_one(st, store, history, o, now, tol):
                changed += 1
        except Exception:
            log.exception("order %s/%s: trip not derived this pass", o["org"], o["id"])
    return changed


async def _sweep_one(
    st: ApiState, store: OrderStore, history: Any, o: dict[str, Any], now: int, tol: int
) -> bool:
    if o["state"] == "returned":
        if now > max(o["end"], o.get("back_at") or 0) + tol:
            o["state"] = transition("returned", "complete")
            return await store.update(o) is not None
        return False
    vid = o.get("vehicle")
    if not vid or o.get("trip_source") == "manual" or now < o["start"] - tol:
        return False
    cols = await history.track(vid, o["start"] - tol, min(now, o["end"] + tol) + 1, None)
    inside = _lot_mask(st, vid, cols["lon"], cols["lat"])
    if inside is None:
        return False
    trip = derive_trip(cols["ts"], cols["lon"], cols["lat"], inside, o["start"], o["end"], tol)
    if trip is None:
        return False
    settled = trip.back_at is not None and (now >= o["end"] or now - trip.back_at >= tol)
    state = o["state"]
    if state == "dispatched":
        state = transition(state, "out")
    if settled:
        state = transition(state, "back")
    new = {"out_at": trip.out_at, "back_at": trip.back_at if settled else None, "km": trip.km}
    if state == o["state"] and all(o.get(k) == v for k, v in new.items()):
        return False
    o.update(new, state=state, trip_source="gps")
    return await store.update(o) is not None


async def run_sweeper(st: ApiState) -> None:
    """:func:`sweep_trips` every ``sweep_interval_s`` until cancelled."""
    every = st.ctx.config.web.orders.sweep_interval_s
    while True:
        try:
            await sweep_trips(st)
        except Exception:
            log.exception("order sweeper pass failed")
        await asyncio.sleep(every)


async def open_orders(st: ApiState) -> OrderStore:
    """Open the order store beside the records and copy in the earlier table's orders."""
    store = OrderStore(st.ctx.config.store)
    await store.open()
    try:
        n = await store.migrate(await st.records.legacy_orders())
    except BaseException:
        with contextlib.suppress(Exception):
            await store.close()
        raise
    if n:
        log.info("copied %d orders of the earlier web_dispatch_orders table", n)
    st.orders = store
    return store
