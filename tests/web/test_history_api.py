"""报警记录 over HTTP on SQLite and the real PostgreSQL: paging, filters, CSV/XLSX exports that
match the JSON; the geography routes."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import psycopg
import pytest

from fleet.events import AlarmEvent
from fleet.registry import Registry
from geofence.fence import Fence
from geofence.index import LiveFences
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory
from stream.feed import FeedCore
from tests.web.conftest import T0, Clock, login, web_config
from web.app import create_app
from web.context import AppContext

pytestmark = pytest.mark.services

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KTV = Fence.circle("ktv", "某KTV", "city", "forbidden", (106.225, 30.350), 150.0)
N = 5_300  # past the old cap of 5,000


@pytest.fixture(params=["sqlite", "postgres"])
async def app_client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext]]:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
        schema = f"t_hist_{request.getfixturevalue('unique')}"
        store: dict[str, Any] = {
            "kind": "postgres",
            "postgres_dsn": PG_DSN,
            "postgres_schema": schema,
        }
    else:
        store = {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")}
    cfg = web_config(tmp_path, store=store, export_max_rows=5_200)
    reg = Registry.from_config(cfg)
    history: Any = (
        PostgresHistory(cfg.store) if request.param == "postgres" else SQLiteHistory(cfg.store)
    )
    await history.open(reg)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        fences=LiveFences([KTV]),
        clock_ms=Clock(),
    )
    app = create_app(ctx)
    evs = []
    for k in range(N):
        v = k % 4
        evs.append(
            AlarmEvent(
                id=f"{reg.ids[v]}:speeding:{T0 + k * 1000}",
                vehicle=v,
                vehicle_id=reg.ids[v],
                kind=("speeding", "offline", "terminal_alarm")[k % 3],
                action="open",
                started_at=T0 + k * 1000,
                ts=T0 + k * 1000,
                lat=30.350 + 450.0 / 110_860.0,  # 300 m from the KTV's rim
                lon=106.225,
                severity="critical" if k % 10 == 0 else "warning",
                detail={"speed": 95.0},
            )
        )
    for i in range(0, N, 1000):
        await history.write_alarm_events(evs[i : i + 1000])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            yield c, ctx
    await history.close()
    if request.param == "postgres":
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {store['postgres_schema']} CASCADE")


async def test_paging_filters_and_exports(
    app_client: tuple[httpx.AsyncClient, AppContext],
) -> None:
    client, _ = app_client
    h = await login(client, "admin")
    r = await client.get("/api/alarms?page_size=500&page=11", headers=h)
    body = r.json()
    assert r.status_code == 200 and body["total"] == N and body["page"] == 11
    assert len(body["alarms"]) == N - 5_000  # the 11th page: beyond 5,000
    assert body["alarms"][-1]["started_at"] == T0  # the oldest comes last
    assert body["alarms"][0]["place"] == "武胜县 · 距 某KTV 300 米"
    # Filters: severity, plate (contains, any case), ISO times with an offset.
    r = await client.get("/api/alarms?severity=critical&page_size=500", headers=h)
    assert r.json()["total"] == N // 10
    assert {a["severity"] for a in r.json()["alarms"]} == {"critical"}
    r = await client.get("/api/alarms?plate=x1000&kind=speeding", headers=h)
    assert {a["plate"] for a in r.json()["alarms"]} == {"川X10001", "川X10003", "川X10004"}
    iso_from = "2025-11-25T09:30:10+08:00"  # T0 + 10 s
    r = await client.get(
        "/api/alarms", params={"from": iso_from, "to": str(T0 + 20_000)}, headers=h
    )
    assert r.json()["total"] == 10
    assert (await client.get("/api/alarms?severity=bad", headers=h)).status_code == 400
    assert (await client.get("/api/alarms?page_size=501", headers=h)).status_code == 400
    assert (await client.get("/api/alarms?from=yesterday", headers=h)).status_code == 400
    # The county operator sees only its county's alarms (V2, V3), in the total too.
    ws = await login(client, "ws-op")
    assert (await client.get("/api/alarms", headers=ws)).json()["total"] == N // 2
    # Exports: the same rows as the JSON, with Chinese headers; cut at the export limit, said.
    everything = []
    for page in range(1, 12):
        everything += (
            await client.get(f"/api/alarms?page_size=500&page={page}", headers=h)
        ).json()["alarms"]
    r = await client.get("/api/alarms?format=xlsx", headers=h)
    assert r.status_code == 200
    assert r.headers["x-export-total"] == str(N)
    assert r.headers["x-export-rows"] == "5200" and r.headers["x-export-truncated"] == "true"
    wb = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True)
    rows = list(wb["报警记录"].iter_rows(values_only=True))
    assert rows[0][:5] == ("报警编号", "车牌号", "车辆编号", "单位", "报警类型")
    assert "处理记录" in rows[0]
    assert [row[0] for row in rows[1:]] == [a["id"] for a in everything[:5_200]]
    first = dict(zip(rows[0], rows[1], strict=True))
    a0 = everything[0]
    assert first["车牌号"] == a0["plate"] and first["位置"] == a0["place"]
    assert first["纬度"] == pytest.approx(a0["lat"]) and first["状态"] == "进行中"
    assert first["开始时间"] == "2025-11-25 10:58:19"  # T0 + 5,299 s in Asia/Shanghai
    assert "5200" in str(next(wb["说明"].iter_rows(values_only=True))[0])
    r = await client.get("/api/alarms?format=csv&severity=critical&lang=en", headers=h)
    assert r.headers["x-export-truncated"] == "false"
    assert r.content.startswith("\ufeff".encode())
    table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert table[0][:2] == ["Alarm id", "Plate"] and len(table) == 1 + N // 10
    assert {row[5] for row in table[1:]} == {"Critical"}


async def test_handling_record_in_the_export(
    app_client: tuple[httpx.AsyncClient, AppContext],
) -> None:
    client, _ = app_client
    op = await login(client, "ws-op")
    alarm = (await client.get("/api/alarms?page_size=1", headers=op)).json()["alarms"][0]
    r = await client.post(
        f"/api/alarms/{alarm['id']}/ack", headers=op, json={"note": "已电话联系", "handled": True}
    )
    assert r.status_code == 200
    r = await client.get(f"/api/alarms?format=xlsx&vehicle={alarm['vehicle']}", headers=op)
    rows = list(openpyxl.load_workbook(io.BytesIO(r.content)).active.iter_rows(values_only=True))
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["报警编号"] == alarm["id"] and row["首次确认人"] == "ws-op"
    assert "ws-op 确认：已电话联系" in row["处理记录"]


async def test_geo_routes(app_client: tuple[httpx.AsyncClient, AppContext]) -> None:
    client, _ = app_client
    h = await login(client, "viewer")
    r = await client.get("/api/geo/boundaries", headers=h)
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 6
    assert {f["properties"]["level"] for f in fc["features"]} == {"district"}
    assert {"name", "adcode"} <= set(fc["features"][0]["properties"])
    lat = 30.350 + 450.0 / 110_860.0
    r = await client.get(f"/api/geo/place?lat={lat}&lon=106.225", headers=h)
    assert r.json() == {
        "text": "武胜县 · 距 某KTV 300 米",
        "district": "武胜县",
        "township": None,
        "near": {"name": "某KTV", "distance_m": 300},
    }
    r = await client.get(f"/api/geo/places?points={lat},106.225;30.6,104.0&lang=en", headers=h)
    assert [p["text"] for p in r.json()["places"]] == [
        "Wusheng County · 300 m from 某KTV",
        "outside Guang'an",
    ]
    too_many = ";".join(["30.4,106.6"] * 201)
    assert (await client.get(f"/api/geo/places?points={too_many}", headers=h)).status_code == 400
    assert (await client.get("/api/geo/place?lat=91&lon=0", headers=h)).status_code == 400
    assert (await client.get("/api/geo/places?points=1,2,3", headers=h)).status_code == 400
    assert (await client.get("/api/geo/boundaries")).status_code == 401
