"""The live view of the fleet: the vehicle list and detail (served by :mod:`web.vehicles_api`,
which adds the records), tracks and the day's figures (the board)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from starlette.requests import Request

from stream.feed import STATES
from web.api import (
    ApiState,
    fail,
    need,
    q_time,
    today,
    vehicle_index,
    visible,
)
from web.auth import Principal
from web.routes import RouteTable

__all__ = ["ROUTES", "vehicle_detail", "vehicles"]

ROUTES = RouteTable()
route = ROUTES.route


# -- vehicles ----------------------------------------------------------------------------------


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
