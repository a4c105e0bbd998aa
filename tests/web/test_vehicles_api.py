"""The record routes on a real app with real SQLite and PostgreSQL record stores."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import psycopg
import pytest
import xlsxwriter

from store.config import StoreConfig
from store.records import RecordStore, load_fleet
from tests.web.conftest import PASSWORD, Built, build

SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Built]:
    b = await build(tmp_path)
    if request.param == "sqlite":
        store = RecordStore(StoreConfig(), path=str(tmp_path / "records.db"))
        schema = None
    else:
        request.getfixturevalue("postgres")
        schema = f"t_rec_{unique}"
        store = RecordStore(
            StoreConfig(kind="postgres", postgres_dsn=SHARED_DSN, postgres_schema=schema)
        )
    await store.open()
    await load_fleet(store, b.ctx.registry, b.ctx.config.vehicles, b.clock.now)
    b.ctx.vehicle_records = store
    async with b.app.router.lifespan_context(b.app):
        yield b
    await store.close()
    await b.ctx.history.close()
    if schema:
        with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def login(c: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await c.post("/api/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
async def client(app: Built) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app), base_url="http://fw"
    ) as c:
        yield c


def car(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "id": f"N{i}",
        "plate": f"川X2{i:04d}",
        "org": "wusheng",
        "terminal": f"139{i:08d}",
        "vehicle_class": "执法执勤",
        **kw,
    }


async def test_register_change_and_history(app: Built, client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin")
    r = await client.post("/api/vehicles", json=car(1), headers=admin)
    assert r.status_code == 201, r.text
    assert app.ctx.registry.by_terminal("13900000001") is not None  # live, no restart
    listed = (await client.get("/api/vehicles", headers=admin)).json()["vehicles"]
    assert {"vehicle": "N1", "status": "在用", "vehicle_class": "执法执勤"}.items() <= next(
        v for v in listed if v["vehicle"] == "N1"
    ).items()
    r = await client.patch("/api/vehicles/N1", json={"colour": "白色", "seats": 5}, headers=admin)
    assert r.status_code == 200 and r.json()["changes"] == {
        "colour": [None, "白色"],
        "seats": [None, 5],
    }
    r = await client.patch("/api/vehicles/N1", json={"seats": 0}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "核定座位数: 不能小于 1"
    ws = await login(client, "ws-op")
    hist = (await client.get("/api/vehicles/N1/history", headers=ws)).json()["history"]
    assert [(h["by"], h["action"]) for h in hist] == [("admin", "update"), ("admin", "create")]
    assert hist[0]["before"]["colour"] is None and hist[0]["after"]["colour"] == "白色"
    detail = (await client.get("/api/vehicles/N1", headers=ws)).json()
    assert detail["vehicle"] == "N1" and detail["record"]["colour"] == "白色"
    assert (await client.post("/api/vehicles", json=car(2), headers=ws)).status_code == 403
    yc = await login(client, "yc-op")
    assert (await client.get("/api/vehicles/N1/history", headers=yc)).status_code == 404


async def test_quota_refuses_until_a_car_is_handed_over(
    app: Built, client: httpx.AsyncClient
) -> None:
    admin = await login(client, "admin")
    r = await client.put("/api/quota/wusheng", json={"by_class": {"执法执勤": 1}}, headers=admin)
    assert r.status_code == 200, r.text
    assert (await client.post("/api/vehicles", json=car(1), headers=admin)).status_code == 201
    r = await client.post("/api/vehicles", json=car(2), headers=admin)
    assert r.status_code == 409
    body = r.json()
    assert body["error"] == "over_quota" and body["authorised"] == 1 and body["actual"] == 1
    assert "先将一辆同单位同类别的车辆移交处置" in body["message"]
    assert app.ctx.registry.by_id("N2") is None
    assert (await client.post("/api/vehicles/N1/dispose", headers=admin)).status_code == 200
    assert (await client.post("/api/vehicles", json=car(2), headers=admin)).status_code == 201
    q = (await client.get("/api/quota", headers=admin)).json()["quota"]
    assert {
        "org": "wusheng",
        "vehicle_class": "执法执勤",
        "authorised": 1,
        "actual": 1,
        "over": 0,
    } in q
    stats = (await client.get("/api/stats", headers=admin)).json()
    assert stats["authorised"] == 1 and stats["over"] == 0
    assert not app.ctx.registry.expected[app.ctx.registry.by_id("N1")]


async def test_registration_needs_another_persons_approval(
    app: Built, client: httpx.AsyncClient
) -> None:
    ws = await login(client, "ws-op")
    r = await client.post("/api/vehicles/requests", json=car(3), headers=ws)
    assert r.status_code == 201
    rid = r.json()["id"]
    admin = await login(client, "admin")
    pending = (await client.get("/api/vehicles/requests?state=pending", headers=admin)).json()
    assert [x["id"] for x in pending["requests"]] == [rid]
    r = await client.post(f"/api/vehicles/requests/{rid}/approve", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "approved"
    assert app.ctx.registry.by_id("N3") is not None


def xlsx(rows: list[list[Any]]) -> bytes:
    out = io.BytesIO()
    wb = xlsxwriter.Workbook(out, {"in_memory": True})
    ws = wb.add_worksheet()
    for n, r in enumerate(rows):
        ws.write_row(n, 0, r)
    wb.close()
    return out.getvalue()


async def test_import_reports_bad_rows_and_keeps_the_good(
    app: Built, client: httpx.AsyncClient
) -> None:
    admin = await login(client, "admin")
    head = ["车辆编号", "车牌号", "所属单位", "终端手机号", "编制类别", "保险到期日", "核定座位数"]
    body = xlsx(
        [
            head,
            ["M1", "川X30001", "yuechi", "13700000001", "应急保障", "2027-01-31", 5],
            ["M2", "ABC", "yuechi", "13700000002", "应急保障", "", 5],
            ["M3", "川X30003", "yuechi", "13700000003", "应急保障", "明年", 5],
            ["M4", "川X30004", "yuechi", "13700000001", "应急保障", "", 5],
            ["M5", "川X30005", "yuechi", 13700000005, "应急保障", "", 7],
        ]
    )
    r = await client.post("/api/vehicles/import", content=body, headers=admin)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["created"] == 2
    assert [(e["line"], e["field"]) for e in got["errors"]] == [
        (3, "plate"),
        (4, "insurance_due"),
        (5, None),
    ]
    assert "车牌号格式不对" in got["errors"][0]["reason"] and "终端" in got["errors"][2]["reason"]
    assert app.ctx.registry.by_terminal("13700000005") is not None
    r = await client.get("/api/vehicles/export?format=xlsx", headers=admin)
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:3] == ("车辆编号", "车牌号", "所属单位")
    assert {"M1", "M5", "V1"} <= {row[0] for row in rows[1:]}
    r = await client.get("/api/vehicles/export?format=csv", headers=admin)
    assert r.content.startswith("\ufeff车辆编号,车牌号".encode())


async def test_drivers(app: Built, client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin")
    d = {
        "id": "D1",
        "name": "王师傅",
        "org": "wusheng",
        "licence_no": "510100199001011234",
        "vehicles": ["V2"],
    }
    assert (await client.post("/api/drivers", json=d, headers=admin)).status_code == 201
    bad = await client.post("/api/drivers", json={**d, "id": "D2", "phone": "123"}, headers=admin)
    assert bad.status_code == 400 and "手机号" in bad.json()["message"]
    r = await client.patch("/api/drivers/D1", json={"licence_expiry": "2027-05-01"}, headers=admin)
    assert r.json()["changes"] == {"licence_expiry": [None, "2027-05-01"]}
    hist = (await client.get("/api/drivers/D1/history", headers=admin)).json()["history"]
    assert [h["action"] for h in hist] == ["update", "create"]
    yc = await login(client, "yc-op")
    assert (await client.get("/api/drivers/D1", headers=yc)).status_code == 404
    r = await client.get("/api/drivers/export?format=csv", headers=admin)
    assert "王师傅" in r.content.decode("utf-8-sig")


async def test_resync_applies_what_a_missed_command_changed(app: Built) -> None:
    from store.records_core import VehicleRecord
    from web.vehicles_api import resync_vehicles

    store = app.ctx.vehicle_records
    missed = VehicleRecord.model_validate(car(9))  # written by another node, command lost
    await store.put_vehicle(missed, by="other-node", at=1)
    assert app.ctx.registry.by_id("N9") is None
    assert await resync_vehicles(app.app.state.api) == 1
    assert app.ctx.registry.by_terminal(missed.terminal) is not None
    assert await resync_vehicles(app.app.state.api) == 0
