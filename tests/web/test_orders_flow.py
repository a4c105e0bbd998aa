"""#16 through the app: request → approval chain (never one's own) → dispatch of a free car and
driver → out and back from a synthetic GPS track; rejection, cancellation, 补单, filters,
suggestions, the messages on the notify routes — on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from shapely.geometry import box

from fleetwatch.batch import PositionBatch
from fleetwatch.config import Config
from fleetwatch.registry import Registry
from geofence.fence import Fence
from geofence.index import LiveFences
from rules.engine import RulesEngine
from store.orders_core import track_km_scalar
from store.records_core import DriverRecord
from stream.feed import FeedCore
from tests.conftest import require_service
from tests.notify.conftest import HOOK_SECRET, Receiver, receiver  # noqa: F401 (a fixture)
from tests.web.conftest import PASSWORD, T0, Clock, login, web_config
from web.app import create_app
from web.context import AppContext
from web.orders_api import sweep_trips

H = 3_600_000
MIN = 60_000
EVENING = T0 + 10 * H + 30 * MIN  # 2025-11-25 (Tue) 20:00 +08:00
LOT = box(106.625, 30.445, 106.635, 30.455)  # 武胜县公安局's lot


def _user(name: str, org: str, role: str, *duties: str) -> dict[str, Any]:
    return {
        "username": name,
        "password": PASSWORD,
        "org": org,
        "role": role,
        "duties": list(duties),
    }


USERS = [
    _user("admin", "city", "admin"),
    _user("ws-op", "wusheng", "operator"),
    _user("yc-op", "yuechi", "operator"),
    _user("viewer", "city", "viewer"),
    _user("kezhang", "ws-police", "operator", "requester", "approver"),  # A
    _user("fuke", "ws-police", "viewer", "approver"),  # B: the unit head's step
    _user("chuzhang", "wusheng", "operator", "approver"),  # the office's step
    _user("diaodu", "wusheng", "operator", "dispatcher"),
    _user("keyuan", "ws-police", "viewer", "requester"),
    _user("yc-boss", "yuechi", "operator", "approver"),
]


@dataclass
class App:
    client: httpx.AsyncClient
    ctx: AppContext
    clock: Clock
    engine: RulesEngine
    st: Any

    async def h(self, user: str) -> dict[str, str]:
        return await login(self.client, user)


def config(
    tmp: Path, store: dict[str, Any] | None = None, notify: Any = None, **web: Any
) -> Config:
    cfg = web_config(tmp, store, users=USERS, **web)
    if notify is not None:
        cfg = cfg.model_copy(update={"notify": notify})
    return cfg


@asynccontextmanager
async def running(cfg: Config, history: Any, notifier: Any = None) -> AsyncIterator[App]:
    reg = Registry.from_config(cfg)
    fences = LiveFences([Fence.polygon("lot-wsp", "公安局停车场", "ws-police", "lot", LOT)])
    engine = RulesEngine(cfg.rules, reg, fences=lambda: fences.index, timezone="Asia/Shanghai")
    await history.open(reg)
    clock = Clock(T0)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        rules=engine,
        fences=fences,
        clock_ms=clock,
        notifier=notifier,
    )
    app = create_app(ctx)
    try:
        async with app.router.lifespan_context(app):
            records = ctx.vehicle_records
            for did, name, org in (
                ("D1", "张师傅", "ws-police"),
                ("D2", "李师傅", "ws-police"),
                ("D9", "王师傅", "yuechi"),
            ):
                rec = DriverRecord(id=did, name=name, org=org, licence_no=f"51160219800101{did}")
                await records.put_driver(rec, by="test", at=T0, action="create")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
                yield App(c, ctx, clock, engine, app.state.api)
    finally:
        await history.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[App]:
    if request.param == "sqlite":
        from store.sqlite import SQLiteHistory

        cfg = config(tmp_path)
        async with running(cfg, SQLiteHistory(cfg.store)) as a:
            yield a
        return
    require_service("postgres")
    import psycopg

    from store.postgres import PostgresHistory

    schema = f"t_orders_{unique}"
    base = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{base}?options=-csearch_path%3D{schema}"
    try:
        cfg = config(tmp_path, {"kind": "postgres", "postgres_dsn": dsn, "postgres_schema": schema})
        async with running(cfg, PostgresHistory(cfg.store)) as a:
            yield a
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


def request_body(**kw: Any) -> dict[str, Any]:
    return {
        "type": "local",
        "purpose": "赴县政府开会",
        "passengers": 2,
        "passenger_names": "张三、李四",
        "destination": {"kind": "county", "text": "武胜县人民政府", "place": "武胜县"},
        "start": EVENING,
        "end": EVENING + 2 * H,
        **kw,
    }


def evening_trip(vehicle: int) -> PositionBatch:
    """20:00–22:00, a point every 30 s: in the lot until 20:10, away, back at 21:40."""
    n = 241
    ts = EVENING + np.arange(n, dtype=np.int64) * 30_000
    minute = np.arange(n) / 2
    away = (minute >= 10) & (minute < 100)
    lon = np.where(away, 106.64 + (minute - 10) * 2e-4, 106.63)
    return PositionBatch.from_columns(
        vehicle=np.full(n, vehicle, dtype=np.int32),
        ts=ts,
        lat=np.full(n, 30.45),
        lon=lon,
        speed=np.where(away, 40.0, 0.0),
        acc=np.ones(n, dtype=bool),
    )


async def test_the_whole_flow(env: App) -> None:
    c = env.client
    a, b, office, disp = (
        await env.h("kezhang"),
        await env.h("fuke"),
        await env.h("chuzhang"),
        await env.h("diaodu"),
    )
    me = (await c.get("/api/me", headers=a)).json()["user"]
    assert me["duties"] == ["requester", "approver"] and me["username"] == "kezhang"

    r = await c.post("/api/orders", headers=a, json=request_body(id="R-1"))
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["state"], o["org"], o["requester"], o["next_step"]) == (
        "pending",
        "ws-police",
        "kezhang",
        "unit_head",
    )
    assert o["region"] == "county:武胜县" and o["approved"] is False and o["vehicle"] is None
    # A holds the approver duty in the right organisation, but requested it: 403
    r = await c.post("/api/orders/R-1/approve", headers=a)
    assert r.status_code == 403 and "requested" in r.json()["error"]
    # the office cannot take the unit head's step
    r = await c.post("/api/orders/R-1/approve", headers=office)
    assert r.status_code == 403 and "unit_head" in r.json()["error"]
    # the inbox of B has it; A's has not
    inbox = (await c.get("/api/orders?inbox=1", headers=b)).json()["orders"]
    assert [x["id"] for x in inbox] == ["R-1"]
    assert (await c.get("/api/orders?inbox=1", headers=a)).json()["orders"] == []
    # B approves the first step; it waits for the office
    r = await c.post("/api/orders/R-1/approve", headers=b)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["next_step"]) == ("pending", "office")
    assert (await c.post("/api/orders/R-1/approve", headers=b)).status_code == 403
    # dispatching before the last approval: the wrong state
    r = await c.post(
        "/api/orders/R-1/dispatch", headers=disp, json={"vehicle": "V3", "driver": "D1"}
    )
    assert r.status_code == 409
    r = await c.post("/api/orders/R-1/approve", headers=office)
    o = r.json()
    assert (o["state"], o["approved"], o["approved_by"], o["next_step"]) == (
        "approved",
        True,
        "chuzhang",
        None,
    )
    assert [(x["by"], x["step"]) for x in o["approvals"]] == [
        ("fuke", "unit_head"),
        ("chuzhang", "office"),
    ]
    assert (await c.post("/api/orders/R-1/approve", headers=office)).status_code == 409

    # suggestions: V3 (in 公安局, nearest its lot) free; V4 of 岳池 not visible to 武胜
    s = (
        await c.get(
            f"/api/orders/suggest?start={EVENING}&end={EVENING + 2 * H}&org=ws-police",
            headers=disp,
        )
    ).json()
    assert [v["id"] for v in s["vehicles"]] == ["V3", "V2"]
    assert s["vehicles"][0]["free"] and s["vehicles"][0]["distance_m"] == 0
    assert [d["id"] for d in s["drivers"] if d["free"]] == ["D1", "D2"]
    # only a dispatcher dispatches
    body = {"vehicle": "V3", "driver": "D1"}
    assert (await c.post("/api/orders/R-1/dispatch", headers=office, json=body)).status_code == 403
    r = await c.post(
        "/api/orders/R-1/dispatch", headers=disp, json={"vehicle": "V3", "driver": "D9"}
    )
    assert r.status_code == 404  # 岳池's driver is not 武胜's to give
    r = await c.post("/api/orders/R-1/dispatch", headers=disp, json=body)
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["state"], o["vehicle"], o["plate"], o["driver"], o["driver_name"]) == (
        "dispatched",
        "V3",
        "川X10003",
        "D1",
        "张师傅",
    )
    assert len(env.engine.orders) == 1  # the engine has it, with its vehicle

    # the car and the driver are taken for that window: another order cannot have them
    r = await c.post(
        "/api/orders", headers=await env.h("keyuan"), json=request_body(id="R-2", start=EVENING + H)
    )
    assert r.status_code == 200
    for u in ("fuke", "chuzhang"):
        assert (await c.post("/api/orders/R-2/approve", headers=await env.h(u))).status_code == 200
    r = await c.post("/api/orders/R-2/dispatch", headers=disp, json=body)
    assert r.status_code == 409 and "R-1" in r.json()["error"]
    r = await c.post(
        "/api/orders/R-2/dispatch", headers=disp, json={"vehicle": "V3", "driver": "D2"}
    )
    assert r.status_code == 409  # the vehicle still is
    s = (
        await c.get(f"/api/orders/suggest?start={EVENING + H}&end={EVENING + 3 * H}", headers=disp)
    ).json()
    v3 = next(v for v in s["vehicles"] if v["id"] == "V3")
    assert not v3["free"] and "R-1" in v3["why"]

    # the 20:30 trip raises no off_hours alarm for V3; the same trip of V1 (no order) does
    events = env.engine.process(PositionBatch.concat([evening_trip(2), evening_trip(0)]))
    opened = {(e.vehicle_id, e.kind) for e in events if e.action == "open"}
    assert ("V1", "off_hours") in opened and ("V3", "off_hours") not in opened

    # out and back from GPS
    await env.ctx.history.write_positions(evening_trip(2))
    env.clock.now = EVENING + 30 * MIN
    a = await env.h("kezhang")
    assert await sweep_trips(env.st) == 1
    r = await c.get("/api/orders/R-1", headers=a)
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["state"], o["out_at"], o["back_at"], o["trip_source"]) == (
        "out",
        EVENING + 10 * MIN,
        None,
        "gps",
    )
    env.clock.now = EVENING + 2 * H + 5 * MIN  # the window is over, the car is back
    a = await env.h("kezhang")
    assert await sweep_trips(env.st) == 1
    o = (await c.get("/api/orders/R-1", headers=a)).json()
    assert (o["state"], o["out_at"], o["back_at"]) == (
        "returned",
        EVENING + 10 * MIN,
        EVENING + 100 * MIN,
    )
    # along the track from the first point out (20:10) to the first back in the lot (21:40):
    # 1.72 km east, then the 2.67 km hop back to the lot's point
    b = evening_trip(2)
    expect = track_km_scalar(list(b.lon[20:201]), list(b.lat[20:201]))
    assert o["km"] == pytest.approx(expect, abs=1e-3) and o["km"] == pytest.approx(4.39, abs=0.01)
    assert o["track"]["km"] == o["km"]
    assert o["track"]["first"] == o["out_at"] and len(o["track"]["points"]["ts"]) == 181
    assert await sweep_trips(env.st) == 0  # nothing new
    env.clock.now = EVENING + 4 * H
    a = await env.h("kezhang")
    assert await sweep_trips(env.st) == 1
    o = (await c.get("/api/orders/R-1", headers=a)).json()
    assert o["state"] == "completed" and o["alarms"] == []
    # filters
    assert [
        x["id"] for x in (await c.get("/api/orders?state=completed", headers=a)).json()["orders"]
    ] == ["R-1"]
    assert [x["id"] for x in (await c.get("/api/orders?mine=1", headers=a)).json()["orders"]] == [
        "R-1"
    ]


async def test_reject_needs_a_reason_and_tells_nothing_to_the_engine(env: App) -> None:
    c = env.client
    a, b = await env.h("keyuan"), await env.h("fuke")
    await c.post("/api/orders", headers=a, json=request_body(id="X"))
    r = await c.post("/api/orders/X/reject", headers=b, json={})
    assert r.status_code == 422
    r = await c.post("/api/orders/X/reject", headers=b, json={"reason": "   "})
    assert r.status_code == 422
    r = await c.post("/api/orders/X/reject", headers=a, json={"reason": "不去了"})
    assert r.status_code == 403  # not an approver (and the requester)
    r = await c.post("/api/orders/X/reject", headers=b, json={"reason": "会议改为视频会议"})
    assert r.status_code == 200
    o = r.json()
    assert (o["state"], o["approved"], o["next_step"], o["reject_reason"]) == (
        "rejected",
        False,
        None,
        "会议改为视频会议",
    )
    assert o["approvals"][-1]["decision"] == "reject"
    for action in ("approve", "reject", "cancel"):
        r = await c.post(f"/api/orders/X/{action}", headers=b, json={"reason": "x"})
        assert r.status_code in (403, 409), action
    r = await c.post(
        "/api/orders/X/dispatch",
        headers=await env.h("diaodu"),
        json={"vehicle": "V3", "driver": "D1"},
    )
    assert r.status_code == 409
    assert len(env.engine.orders) == 0
    audit = (await c.get("/api/audit?action=order.reject", headers=await env.h("admin"))).json()
    assert audit["entries"][0]["detail"]["reason"] == "会议改为视频会议"


async def test_cancel_by_requester_or_dispatcher_only(env: App) -> None:
    c = env.client
    req, disp, other = await env.h("keyuan"), await env.h("diaodu"), await env.h("fuke")
    await c.post("/api/orders", headers=req, json=request_body(id="C-1"))
    await c.post(
        "/api/orders",
        headers=req,
        json=request_body(id="C-2", start=EVENING + 3 * H, end=EVENING + 4 * H),
    )
    assert (await c.post("/api/orders/C-1/cancel", headers=other, json={})).status_code == 403
    r = await c.post("/api/orders/C-1/cancel", headers=req, json={"reason": "行程取消"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert r.json()["cancel_reason"] == "行程取消"
    assert (await c.post("/api/orders/C-1/cancel", headers=req, json={})).status_code == 409
    for u in ("fuke", "chuzhang"):
        await c.post("/api/orders/C-2/approve", headers=await env.h(u))
    await c.post("/api/orders/C-2/dispatch", headers=disp, json={"vehicle": "V3", "driver": "D1"})
    assert len(env.engine.orders) == 1
    r = await c.post("/api/orders/C-2/cancel", headers=disp, json={"reason": "改派"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert len(env.engine.orders) == 0  # withdrawn: it excuses nothing any more
    # the car is free again for that window
    s = (
        await c.get(
            f"/api/orders/suggest?start={EVENING + 3 * H}&end={EVENING + 4 * H}", headers=disp
        )
    ).json()
    assert next(v for v in s["vehicles"] if v["id"] == "V3")["free"]
    # cancelled is final
    assert (await c.post("/api/orders/C-2/cancel", headers=disp, json={})).status_code == 409


async def test_emergency_late_request_within_24_h_and_refused_after(env: App) -> None:
    c = env.client
    disp, b, office = await env.h("diaodu"), await env.h("fuke"), await env.h("chuzhang")
    assert (
        await c.post("/api/orders/emergency", headers=b, json={"vehicle": "V3", "driver": "D1"})
    ).status_code in (403, 422)
    body = {
        "id": "E-1",
        "org": "ws-police",
        "vehicle": "V3",
        "driver": "D1",
        "type": "local",
        "start": T0,
        "end": T0 + 2 * H,
        "requester": "keyuan",
    }
    r = await c.post("/api/orders/emergency", headers=disp, json=body)
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["state"], o["late"], o["approved"], o["next_step"], o["requester"]) == (
        "dispatched",
        True,
        False,
        "unit_head",
        "keyuan",
    )
    assert len(env.engine.orders) == 0  # excuses nothing until its request is approved
    # the requester files the request afterwards
    r = await c.patch(
        "/api/orders/E-1",
        headers=await env.h("keyuan"),
        json={"purpose": "抢险", "destination": {"kind": "city", "text": "市区"}},
    )
    assert r.status_code == 200 and r.json()["purpose"] == "抢险" and r.json()["region"] == "city"
    env.clock.now = T0 + 20 * H
    disp, b, office = await env.h("diaodu"), await env.h("fuke"), await env.h("chuzhang")
    assert (await c.post("/api/orders/E-1/approve", headers=b)).status_code == 200
    r = await c.post("/api/orders/E-1/approve", headers=office)
    assert r.status_code == 200
    o = r.json()
    assert (o["state"], o["approved"], o["late"]) == ("dispatched", True, True)
    assert len(env.engine.orders) == 1
    # a second one, decided too late
    env.clock.now = T0 + 30 * H
    disp, b, office = await env.h("diaodu"), await env.h("fuke"), await env.h("chuzhang")
    r = await c.post(
        "/api/orders/emergency",
        headers=disp,
        json={**body, "id": "E-2", "start": T0 + 29 * H, "end": T0 + 31 * H},
    )
    assert r.status_code == 200
    env.clock.now = T0 + 30 * H + 24 * H + 1
    disp, b, office = await env.h("diaodu"), await env.h("fuke"), await env.h("chuzhang")
    r = await c.post("/api/orders/E-2/approve", headers=b)
    assert r.status_code == 409 and "24 h" in r.json()["error"]
    r = await c.patch("/api/orders/E-2", headers=disp, json={"purpose": "抢险"})
    assert r.status_code == 409
    # the late order can still be rejected? no: the window to decide it has passed
    r = await c.post("/api/orders/E-2/reject", headers=b, json={"reason": "逾期"})
    assert r.status_code == 409


async def test_manual_trip_is_audited_and_wins_over_gps(env: App) -> None:
    c = env.client
    disp = await env.h("diaodu")
    body = {
        "id": "M-1",
        "vehicle": "V3",
        "driver": "D2",
        "type": "local",
        "start": EVENING,
        "end": EVENING + 2 * H,
    }
    assert (await c.post("/api/orders/emergency", headers=disp, json=body)).status_code == 200
    trip = {"out_at": EVENING + 5 * MIN, "back_at": EVENING + 50 * MIN, "km": 12.5}
    assert (
        await c.post("/api/orders/M-1/trip", headers=await env.h("keyuan"), json=trip)
    ).status_code == 403
    bad = {**trip, "back_at": EVENING}
    assert (await c.post("/api/orders/M-1/trip", headers=disp, json=bad)).status_code == 422
    r = await c.post("/api/orders/M-1/trip", headers=disp, json=trip)
    assert r.status_code == 200
    o = r.json()
    assert (o["state"], o["km"], o["trip_source"], o["back_at"]) == (
        "returned",
        12.5,
        "manual",
        EVENING + 50 * MIN,
    )
    await env.ctx.history.write_positions(evening_trip(2))
    env.clock.now = EVENING + 2 * H + 10 * MIN
    disp = await env.h("diaodu")
    await sweep_trips(env.st)
    o = (await c.get("/api/orders/M-1", headers=disp)).json()
    assert (o["km"], o["trip_source"]) == (12.5, "manual")
    log = (await c.get("/api/audit?action=order.trip", headers=await env.h("admin"))).json()
    [e] = log["entries"]
    assert e["actor"] == "diaodu" and e["detail"]["after"]["km"] == 12.5
    assert e["detail"]["before"]["km"] is None


async def test_filters_scope_and_bad_input(env: App) -> None:
    c = env.client
    ws, yc = await env.h("keyuan"), await env.h("yc-op")
    await c.post("/api/orders", headers=ws, json=request_body(id="F-1"))
    await c.post(
        "/api/orders",
        headers=ws,
        json=request_body(id="F-2", start=EVENING + 24 * H, end=EVENING + 25 * H),
    )
    # 岳池 sees none of 武胜's
    assert (await c.get("/api/orders", headers=yc)).json()["orders"] == []
    assert (await c.get("/api/orders/F-1", headers=yc)).status_code == 404
    assert (
        await c.post("/api/orders/F-1/approve", headers=await env.h("yc-boss"))
    ).status_code == 404
    admin = await env.h("admin")
    ids = lambda r: [o["id"] for o in r.json()["orders"]]  # noqa: E731
    assert ids(await c.get(f"/api/orders?from={EVENING + 20 * H}", headers=admin)) == ["F-2"]
    assert ids(await c.get(f"/api/orders?to={EVENING + 20 * H}", headers=admin)) == ["F-1"]
    assert ids(await c.get("/api/orders?org=ws-police&state=pending", headers=admin)) == [
        "F-1",
        "F-2",
    ]
    assert ids(await c.get("/api/orders?org=yuechi", headers=admin)) == []
    assert (await c.get("/api/orders?state=nonsense", headers=admin)).status_code == 400
    assert (await c.get("/api/orders?org=nowhere", headers=admin)).status_code == 404
    assert (await c.get("/api/orders?from=yesterday", headers=admin)).status_code == 400
    # bad requests: 422 naming the field, or 403 without the duty
    assert (
        await c.post("/api/orders", headers=await env.h("fuke"), json=request_body())
    ).status_code == 403
    r = await c.post("/api/orders", headers=ws, json=request_body(end=EVENING - 1))
    assert r.status_code == 422
    r = await c.post(
        "/api/orders",
        headers=ws,
        json=request_body(destination={"kind": "out_of_city", "text": "成都"}),
    )
    assert r.status_code == 422
    r = await c.post("/api/orders", headers=ws, json=request_body(type="joyride"))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "type"
    r = await c.post("/api/orders", headers=ws, json=request_body(org="yuechi"))
    assert r.status_code == 404
    assert (await c.get("/api/orders/suggest?start=5&end=1", headers=admin)).status_code == 400


async def test_duties_through_the_user_admin_api(env: App) -> None:
    c = env.client
    admin = await env.h("admin")
    r = await c.post(
        "/api/users",
        headers=admin,
        json={
            "username": "xiaoli",
            "password": "a long password 1",
            "org": "ws-police",
            "role": "viewer",
            "duties": ["requester"],
        },
    )
    assert r.status_code == 200 and r.json()["duties"] == ["requester"]
    r = await c.patch(
        "/api/users/xiaoli", headers=admin, json={"duties": ["approver", "requester"]}
    )
    assert r.json()["duties"] == ["requester", "approver"]
    r = await c.patch("/api/users/xiaoli", headers=admin, json={"duties": ["mayor"]})
    assert r.status_code == 422
    login_r = await c.post(
        "/api/login", json={"username": "xiaoli", "password": "a long password 1"}
    )
    h = {"Authorization": f"Bearer {login_r.json()['token']}"}
    assert (await c.get("/api/me", headers=h)).json()["user"]["duties"] == ["requester", "approver"]
    # a duty taken away counts at the next call (no new login needed)
    await c.patch("/api/users/xiaoli", headers=admin, json={"duties": []})
    assert (await c.get("/api/me", headers=h)).json()["user"]["duties"] == []
    users = (await c.get("/api/users", headers=admin)).json()["users"]
    assert next(u for u in users if u["username"] == "diaodu")["duties"] == ["dispatcher"]


async def test_messages_reach_the_approver_and_the_requester(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    from notify.config import NotifyConfig
    from notify.worker import Notifier, ThreadedSQLiteOutbox
    from store.sqlite import SQLiteHistory

    ncfg = NotifyConfig.model_validate(
        {
            "enabled": True,
            "channels": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": f"{receiver.url}/hook",
                    "secret": HOOK_SECRET.decode(),
                }
            ],
            "routes": [
                {"name": "alarms", "channels": ["hook"]},  # an alarm route: no order messages
                {
                    "name": "orders",
                    "channels": ["hook"],
                    "orgs": ["wusheng"],
                    "kinds": ["order_pending", "order_approved", "order_rejected"],
                },
            ],
            "poll_interval_s": 0.05,
        }
    )
    cfg = config(tmp_path, notify=ncfg)
    notifier = Notifier(ncfg, ThreadedSQLiteOutbox(cfg.store.sqlite_path))
    run = asyncio.create_task(notifier.run())

    async def bodies(n: int) -> list[dict[str, Any]]:
        end = time.monotonic() + 10
        while len(receiver.unique("/hook")) < n and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return [json.loads(h.body) for h in receiver.unique("/hook")]

    try:
        async with running(cfg, SQLiteHistory(cfg.store), notifier) as env:
            c = env.client
            a = await env.h("keyuan")
            await c.post("/api/orders", headers=a, json=request_body(id="N-1"))
            [m] = await bodies(1)
            assert m["event"] == "order.pending"
            [n] = m["alarms"]
            assert n["purpose"] == "order" and n["route"] == "orders"
            assert n["detail"]["to"] == ["fuke", "kezhang"] and n["detail"]["step"] == "unit_head"
            assert "用车申请待审批" in m["text"] and "赴县政府开会" in m["text"]
            await c.post("/api/orders/N-1/approve", headers=await env.h("fuke"))
            m = (await bodies(2))[1]
            assert m["event"] == "order.pending" and m["alarms"][0]["detail"]["to"] == ["chuzhang"]
            r = await c.post(
                "/api/orders/N-1/reject", headers=await env.h("chuzhang"), json={"reason": "无预算"}
            )
            assert r.status_code == 200
            m = (await bodies(3))[2]
            assert m["event"] == "order.rejected"
            assert m["alarms"][0]["detail"]["to"] == ["keyuan"] and "无预算" in m["text"]
            await asyncio.sleep(0.3)
            assert len(receiver.unique("/hook")) == 3  # one per change, none on the alarm route
    finally:
        notifier.stop()
        await run


def test_demo_accounts_hold_their_duties_and_one_approval_step() -> None:
    from fleetwatch.config import parse_config
    from simulator.fleet import FleetSpec
    from simulator.scenario import demo_config
    from store.orders_core import chain_for, step_approver_orgs

    cfg = parse_config(demo_config(FleetSpec(vehicles=4), mqtt_port=1, web_port=2, db_path="x"))
    users = {u.username: (u.org, u.role, u.duties) for u in cfg.web.users}
    assert users["demo"] == ("ga", "operator", ["requester", "dispatcher"])
    assert users["admin"] == ("ga", "admin", ["requester", "approver", "dispatcher"])
    assert users["keyuan"] == ("ga-yc-nyj", "viewer", ["requester"])
    assert users["chuzhang"] == ("ga-yc", "operator", ["approver"])
    assert users["wusheng"][2] == []
    reg = Registry.from_config(cfg)
    up = [reg.orgs.ids[i] for i in _ancestors(reg, "ga-yc-nyj")]
    assert chain_for(cfg.web.orders, up) == ["office"]
    assert "ga-yc" in step_approver_orgs("office", up)  # chuzhang decides keyuan's request
    assert step_approver_orgs("office", ["ga"]) == ("ga",)  # admin decides demo's


def _ancestors(reg: Registry, org: str) -> list[int]:
    i = list(reg.orgs.ids).index(org)
    out = []
    while i >= 0:
        out.append(i)
        i = int(reg.orgs.parent[i])
    return out


async def test_order_messages_queue_in_the_postgresql_outbox(unique: str) -> None:
    require_service("postgres")
    from notify.config import NotifyConfig
    from notify.orders import order_entries
    from notify.outbox import PostgresOutbox

    ncfg = NotifyConfig.model_validate(
        {
            "enabled": True,
            "channels": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/"}],
            "routes": [
                {"name": "o", "channels": ["hook"], "kinds": ["order_pending"], "orgs": ["yuechi"]},
                {
                    "name": "q",
                    "channels": ["hook"],
                    "kinds": ["order_pending"],
                    "quiet_hours": "09:00-10:00",
                },
            ],
        }
    )
    cfg = web_config(Path("/nonexistent"))
    reg = Registry.from_config(cfg)
    o = {"org": "ws-police", "id": "P", "start": T0, "end": T0 + H, "version": 3, "purpose": "x"}
    entries = order_entries(
        ncfg,
        reg,
        o,
        "order_pending",
        to=["fuke"],
        now=T0,
        timezone="Asia/Shanghai",
        public_url="http://fw",
    )
    # route o is 岳池's: not this order's; route q holds it until its quiet hours end (10:00)
    assert [(e.route, e.key, e.due_at) for e in entries] == [
        ("q", "order:ws-police:P|order_pending.3|q|hook", T0 + 30 * MIN)
    ]
    with pytest.raises(ValueError):
        order_entries(ncfg, reg, o, "order_lost", to=[], now=T0, timezone="UTC", public_url="")
    schema = f"t_oq_{unique}"
    box_ = PostgresOutbox("postgresql://postgres@127.0.0.1:5432/test", schema)
    await box_.open()
    try:
        assert await box_.enqueue(entries) == 1
        await box_.enqueue(entries)  # the same change again: nothing new
        rows = await box_.claim(T0 + H, 60_000, 10, "t")
        assert [(r.purpose, r.notice.kind, r.notice.detail["to"]) for r in rows] == [
            ("order", "order_pending", ["fuke"])
        ]
    finally:
        await box_.close()
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_orders_of_the_earlier_table_are_copied_in_and_keep_working(tmp_path: Path) -> None:
    import sqlite3

    from store.sqlite import SQLiteHistory

    cfg = config(tmp_path)
    db = sqlite3.connect(cfg.store.sqlite_path)
    db.execute(
        """CREATE TABLE web_dispatch_orders (
        org TEXT NOT NULL, id TEXT NOT NULL, vehicle TEXT NOT NULL, type TEXT NOT NULL,
        start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, reason TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at BIGINT NOT NULL,
        approved BOOLEAN NOT NULL, approved_by TEXT, approved_at BIGINT,
        PRIMARY KEY (org, id))"""
    )
    db.executemany(
        "INSERT INTO web_dispatch_orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                "ws-police",
                "OLD-1",
                "V3",
                "local",
                EVENING,
                EVENING + H,
                "接待",
                "ws-op",
                1,
                1,
                "ws-op",
                2,
            ),
            (
                "ws-police",
                "OLD-2",
                "V3",
                "holiday",
                EVENING,
                EVENING + H,
                "",
                "ws-op",
                3,
                0,
                None,
                None,
            ),
        ],
    )
    db.commit()
    db.close()
    async with running(cfg, SQLiteHistory(cfg.store)) as env:
        op = await env.h("ws-op")
        got = {
            o["id"]: o for o in (await env.client.get("/api/orders", headers=op)).json()["orders"]
        }
        assert set(got) == {"OLD-1", "OLD-2"}
        assert (got["OLD-1"]["state"], got["OLD-1"]["approved_by"], got["OLD-1"]["purpose"]) == (
            "approved",
            "ws-op",
            "接待",
        )
        assert got["OLD-2"]["state"] == "pending" and got["OLD-2"]["source"] == "entry"
        assert len(env.engine.orders) == 1  # the approved one excuses again after the restart
        r = await env.client.post("/api/orders/OLD-2/approve", headers=op)
        assert r.status_code == 200 and r.json()["approved"] and len(env.engine.orders) == 2
    # a second start copies nothing again (and keeps the approval made since)
    async with running(cfg, SQLiteHistory(cfg.store)) as env:
        op = await env.h("ws-op")
        orders = (await env.client.get("/api/orders", headers=op)).json()["orders"]
        assert [o["approved"] for o in orders] == [True, True]


async def test_the_app_runs_the_sweeper_by_itself(tmp_path: Path) -> None:
    from store.sqlite import SQLiteHistory

    cfg = config(tmp_path, orders={"sweep_interval_s": 0.05, "tolerance_min": 10})
    async with running(cfg, SQLiteHistory(cfg.store)) as env:
        disp = await env.h("diaodu")
        body = {
            "id": "S-1",
            "vehicle": "V3",
            "driver": "D1",
            "type": "local",
            "start": EVENING,
            "end": EVENING + 2 * H,
        }
        assert (
            await env.client.post("/api/orders/emergency", headers=disp, json=body)
        ).status_code == 200
        await env.ctx.history.write_positions(evening_trip(2))
        env.clock.now = EVENING + 2 * H + 11 * MIN  # after the window and its tolerance
        end = time.monotonic() + 10
        state = None
        while time.monotonic() < end:
            o = await env.st.orders.get("ws-police", "S-1")
            state = o["state"]
            if state == "completed":
                break
            await asyncio.sleep(0.05)
        assert state == "completed"
        assert (o["out_at"], o["back_at"], o["trip_source"]) == (
            EVENING + 10 * MIN,
            EVENING + 100 * MIN,
            "gps",
        )
