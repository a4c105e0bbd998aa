"""The cost routes through the app: import with bad rows, idempotence, mappings, checks, figures."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openpyxl

from tests.costs.conftest import drive, write_track
from tests.web.conftest import T0, Built, login

# T0 is Tuesday 2025-11-25 09:30 +08:00; 2025-11-29 is a Saturday.
FUEL_HEADER = "加油卡号,车牌号,加油站,交易时间,加油量(升),油品,金额(元)"
FUEL = "\n".join(
    [
        FUEL_HEADER,
        "C001,川X10001,城南站,2025-11-25 09:30:00,40,92#,300",  # 2 good: at the station
        "C001,川X10001,东郊站,2025-11-25 09:45:00,30,92#,225",  # 3 the car is 13 km away
        "C001,川X10003,城南站,2025-11-25 10:00:00,20,92#,150",  # 4 same card, other plate
        "C001,川X99999,城南站,2025-11-25 11:00:00,20,92#,150",  # 5 bad: unknown plate
        "C001,川X10001,城南站,2025-11-25 12:00:00,20,92#,-5",  # 6 bad: amount
        "C001,川X10001,城南站,2025-11-29 10:00:00,60,92#,450",  # 7 Saturday, > tank, no trip
        "C001,川X10001,城南站,2025-11-25 09:30:00,40,92#,300",  # 8 bad: repeats line 2
        "C777,川X10001,城南站,2025-11-25 13:00:00,20,92#,150",  # 9 bad: unknown card
    ]
).encode()


async def setup(app: Built, c: httpx.AsyncClient) -> dict[str, str]:
    app.clock.now = T0 + 10 * 86_400_000  # the supplier's file comes in December
    admin = await login(c, "admin")
    r = await c.patch(
        "/api/vehicles/V1", json={"fuel_card": "C001", "fuel_tank_l": 50}, headers=admin
    )
    assert r.status_code == 200, r.text
    r = await c.put(
        "/api/costs/stations/sinopec",
        json={
            "stations": [
                {"name": "城南站", "lat": 30.30, "lon": 106.225},
                {"name": "东郊站", "lat": 30.30, "lon": 106.32},
            ]
        },
        headers=admin,
    )
    assert r.status_code == 200, r.text
    await write_track(app, "V1", [drive(T0, 30, 30.30)])
    return admin


async def test_fuel_import_reports_bad_rows_and_is_idempotent(
    app: Built, client: httpx.AsyncClient
) -> None:
    admin = await setup(app, client)
    r = await client.post(
        "/api/costs/import?kind=fuel&supplier=sinopec&filename=11月.csv",
        content=FUEL,
        headers=admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 4 and body["duplicates"] == 0, body
    bad = {b["line"]: b["reason"] for b in body["bad"]}
    assert set(bad) == {5, 6, 8, 9}
    assert "川X99999 不在车辆档案中" in bad[5]
    assert "金额" in bad[6] and "应大于 0" in bad[6]
    assert bad[8] == "与第 2 行重复"
    assert "C777" in bad[9]
    assert body["bad"][0]["row"]["车牌号"] == "川X99999"
    # The bad rows are kept with the import.
    kept = (await client.get(f"/api/costs/imports/{body['id']}", headers=admin)).json()
    assert [b["line"] for b in kept["bad_rows"]] == [5, 6, 8, 9]
    # The same file again adds nothing.
    again = (
        await client.post(
            "/api/costs/import?kind=fuel&supplier=sinopec", content=FUEL, headers=admin
        )
    ).json()
    assert again["imported"] == 0 and again["duplicates"] == 4 and again["anomalies"] == 0
    items = (await client.get("/api/costs/items?month=2025-11", headers=admin)).json()["items"]
    assert len(items) == 4
    # The checks against the track, each an episode kind.
    an = (await client.get("/api/costs/anomalies?month=2025-11", headers=admin)).json()
    kinds = sorted((a["kind"], a["vehicle"]) for a in an["anomalies"])
    assert kinds == [
        ("cost_card_shared", "V3"),
        ("cost_no_trip", "V1"),
        ("cost_no_trip", "V3"),
        ("cost_refuel_away", "V1"),
        ("cost_rest_day", "V1"),
        ("cost_tank_overfill", "V1"),
    ]
    away = next(a for a in an["anomalies"] if a["kind"] == "cost_refuel_away")
    assert 12_000 < away["detail"]["distance_m"] < 13_500 and "东郊站" in away["detail"]["text"]
    desk = (await client.get("/api/alarms?kind=cost_card_shared", headers=admin)).json()
    assert [a["vehicle"] for a in desk["alarms"]] == ["V3"]
    assert "C001" in desk["alarms"][0]["detail"]["text"]
    # Running the checks again finds the same anomalies under the same ids.
    r = await client.post("/api/costs/check?month=2025-11", headers=admin)
    assert r.json()["new"] == 0


async def test_scope_headers_mapping_and_xlsx(app: Built, client: httpx.AsyncClient) -> None:
    admin = await setup(app, client)
    ws = await login(client, "ws-op")  # operator of wusheng: V2, V3 are theirs, V1 is not
    r = await client.post("/api/costs/import?kind=fuel", content=FUEL, headers=ws)
    body = r.json()
    assert body["imported"] == 1  # only line 4 (V3)
    assert any("无权导入单位 city" in b["reason"] for b in body["bad"])
    # A supplier's own headers: refused until its mapping is set.
    toll = "车号,过站时间,站名,费用\n川X10001,2025/11/25 09:40,广安东收费站,35\n".encode()
    r = await client.post("/api/costs/import?kind=toll&supplier=gaosu", content=toll, headers=admin)
    assert r.status_code == 400 and "未知的列 '车号'" in r.json()["error"]
    r = await client.put(
        "/api/costs/mappings/gaosu/toll",
        json={"columns": {"车号": "plate", "过站时间": "time", "站名": "place", "费用": "amount"}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    bad_map = await client.put(
        "/api/costs/mappings/gaosu/toll", json={"columns": {"车号": "litres"}}, headers=admin
    )
    assert bad_map.status_code == 400 and "litres" in bad_map.json()["error"]
    r = await client.post("/api/costs/import?kind=toll&supplier=gaosu", content=toll, headers=admin)
    assert r.json()["imported"] == 1 and r.json()["bad"] == []
    # XLSX repair invoices: a sealed car's invoice is an anomaly.
    r = await client.patch("/api/vehicles/V4", json={"status": "封存"}, headers=admin)
    assert r.status_code == 200, r.text
    wb = openpyxl.Workbook()
    sh = wb.active
    sh.append(["车牌号", "维修厂", "维修日期", "维修项目", "材料费(元)", "工时费(元)", "金额(元)"])
    sh.append(["川X10004", "定点维修中心", "2025-11-20", "更换刹车片", 380, 120, 500])
    sh.append(["川X10001", "定点维修中心", "2025-11-21", "保养", 100, 50, 900])
    buf = io.BytesIO()
    wb.save(buf)
    r = await client.post("/api/costs/import?kind=repair", content=buf.getvalue(), headers=admin)
    body = r.json()
    assert body["imported"] == 1 and [b["line"] for b in body["bad"]] == [3]
    assert "不等于材料费" in body["bad"][0]["reason"]
    an = (await client.get("/api/costs/anomalies?month=2025-11", headers=admin)).json()
    assert any(a["kind"] == "cost_repair_status" and a["vehicle"] == "V4" for a in an["anomalies"])
    # Templates.
    t = await client.get("/api/costs/templates/repair", headers=ws)
    assert t.status_code == 200
    head = [c.value for c in next(openpyxl.load_workbook(io.BytesIO(t.content)).active.iter_rows())]
    assert head[:3] == ["车牌号", "维修厂", "维修日期"]
    csv_t = await client.get("/api/costs/templates/fuel?format=csv", headers=ws)
    assert csv_t.content.decode("utf-8-sig").startswith(FUEL_HEADER)
    assert (await client.get("/api/costs/templates/nope", headers=ws)).status_code == 404
    assert (
        await client.post("/api/costs/import?kind=nope", content=toll, headers=admin)
    ).status_code == 400


async def test_summary_budget_vehicle_record_and_export(
    app: Built, client: httpx.AsyncClient
) -> None:
    admin = await setup(app, client)
    await client.post("/api/costs/import?kind=fuel&supplier=sinopec", content=FUEL, headers=admin)
    r = await client.put(
        "/api/costs/budgets/city", json={"year": 2025, "amount": 10000}, headers=admin
    )
    assert r.status_code == 200, r.text
    s = (await client.get("/api/costs/summary?month=2025-11", headers=admin)).json()
    assert s["month"] == "2025-11" and s["org"] == "city"
    assert s["total"] == 1125.0 and s["by_kind"]["fuel"] == 1125.0 and s["by_kind"]["repair"] == 0
    assert s["budget"] == 10000 and s["budget_used_share"] == 0.1125
    assert s["trips"] == 1 and 17 < s["km"] < 19 and s["per_trip"] == 1125.0
    units = {r["org"]: r["total"] for r in s["rows"]}
    assert units == {"city": 975.0, "wusheng": 150.0, "yuechi": 0.0}
    v = (await client.get("/api/costs/summary?month=2025-11&level=vehicle", headers=admin)).json()
    assert {r["vehicle"]: r["total"] for r in v["rows"]}["V3"] == 150.0
    ws = await login(client, "ws-op")
    mine = (await client.get("/api/costs/summary?month=2025-11", headers=ws)).json()
    assert mine["total"] == 150.0
    assert (await client.get("/api/costs/summary?org=city", headers=ws)).status_code == 404
    assert (await client.get("/api/costs/summary?month=2025-13", headers=ws)).status_code == 400
    rec = (await client.get("/api/vehicles/V1/costs?month=2025-11", headers=admin)).json()
    assert rec["total"] == 975.0 and len(rec["items"]) == 3 and rec["trips"] == 1
    assert {a["kind"] for a in rec["anomalies"]} >= {"cost_refuel_away", "cost_tank_overfill"}
    assert (await client.get("/api/vehicles/V1/costs", headers=ws)).status_code == 404
    x = await client.get("/api/costs/export?month=2025-11", headers=admin)
    assert x.status_code == 200
    wb = openpyxl.load_workbook(io.BytesIO(x.content))
    assert wb.sheetnames == ["按单位", "按车辆", "费用明细", "异常", "说明"]
    assert wb["按单位"]["A2"].value == "广安市" and wb["按单位"]["B2"].value == 975


async def test_multipart_upload_and_bad_requests(app: Built, client: httpx.AsyncClient) -> None:
    admin = await setup(app, client)
    r = await client.post(
        "/api/costs/import?kind=fuel&supplier=sinopec",
        files={"file": ("11月.csv", FUEL, "text/csv")},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 4 and len(r.json()["bad"]) == 4
    imports = (await client.get("/api/costs/imports", headers=admin)).json()["imports"]
    assert imports[0]["filename"] == "11月.csv" and imports[0]["bad"] == 4
    r = await client.post(
        "/api/costs/import?kind=fuel", files={"other": ("x.csv", FUEL)}, headers=admin
    )
    assert r.status_code == 400 and "file" in r.json()["error"]
    assert (await client.post("/api/costs/import?kind=fuel", headers=admin)).status_code == 400
    r = await client.post("/api/costs/import?kind=fuel", content=b"\xff\xfe\x00bad", headers=admin)
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    viewer = await login(client, "viewer")
    assert (
        await client.post("/api/costs/import?kind=fuel", content=FUEL, headers=viewer)
    ).status_code == 403
    bad_budget = await client.put(
        "/api/costs/budgets/city", json={"year": 2025, "amount": -1}, headers=admin
    )
    assert bad_budget.status_code == 400
    bad_station = await client.put(
        "/api/costs/stations/s",
        json={"stations": [{"name": "x", "lat": 95, "lon": 1}]},
        headers=admin,
    )
    assert bad_station.status_code == 400


async def test_broken_files_and_months_are_refused(app: Built, client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin")
    r = await client.post(
        "/api/costs/import?kind=toll", content=b"PK\x03\x04 not a workbook", headers=admin
    )
    assert r.status_code == 400 and "不是有效的 CSV 或 XLSX" in r.json()["error"]
    nul = "车牌号,通行时间,收费站,金额(元)\n川X\x00,2025-11-25 09:00,站\x00,3\n".encode()
    r = await client.post("/api/costs/import?kind=toll", content=nul, headers=admin)
    assert r.status_code == 200 and r.json()["bad"][0]["line"] == 2  # kept, in both databases
    for month in ("0000-01", "9999-12", "2026-1", "２０２６-11"):
        r = await client.get(f"/api/costs/summary?month={month}", headers=admin)
        assert r.status_code == 400, (month, r.text)


async def test_a_rest_day_cost_under_an_order_in_the_order_store_is_excused(
    app: Built, client: httpx.AsyncClient
) -> None:
    """The rest-day check reads the order store (#16): an approved order of V1 on the
    Saturday excuses the Saturday refuel; a pending one of V3 would not."""
    from store.orders import legacy_order

    admin = await setup(app, client)
    st = app.app.state.api
    sat = T0 + 4 * 86_400_000  # 2025-11-29 09:30 +08:00
    for oid, vid, ok in (("SAT-1", "V1", True), ("SAT-3", "V3", False)):
        o = legacy_order(
            {
                "org": "city" if vid == "V1" else "ws-police",
                "id": oid,
                "vehicle": vid,
                "type": "holiday",
                "start": sat,
                "end": sat + 3 * 3_600_000,
                "approved": ok,
                "created_by": "admin",
            }
        )
        assert await st.orders.add(o)
    sat_fuel = FUEL_HEADER + "\nC001,川X10003,城南站,2025-11-29 11:00:00,20,92#,150"
    r = await client.post(
        "/api/costs/import?kind=fuel&supplier=sinopec", content=FUEL, headers=admin
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/costs/import?kind=fuel&supplier=sinopec", content=sat_fuel.encode(), headers=admin
    )
    assert r.status_code == 200, r.text
    an = (await client.get("/api/costs/anomalies?month=2025-11", headers=admin)).json()
    rest = sorted(a["vehicle"] for a in an["anomalies"] if a["kind"] == "cost_rest_day")
    assert rest == ["V3"]  # V1's is under its approved order; V3's order is pending


async def test_the_board_shows_the_months_costs_so_far(
    app: Built, client: httpx.AsyncClient
) -> None:
    """/api/board/summary `costs` (运行费用) = the cost store's month so far, in the
    caller's subtree; null while there is no cost data."""
    admin = await setup(app, client)

    async def board(h: dict[str, str], date: str) -> Any:
        r = await client.get("/api/board/summary", params={"date": date}, headers=h)
        assert r.status_code == 200, r.text
        return r.json()["costs"]

    assert await board(admin, "2025-11-30") is None  # nothing imported yet
    await client.post("/api/costs/import?kind=fuel&supplier=sinopec", content=FUEL, headers=admin)
    summary = (await client.get("/api/costs/summary?month=2025-11", headers=admin)).json()
    assert await board(admin, "2025-11-30") == summary["total"] == 1125.0
    assert await board(admin, "2025-11-26") == 1125.0 - 450.0  # before the Saturday's refuel
    assert await board(admin, "2025-10-31") is None
    ws = await login(client, "ws-op")
    assert await board(ws, "2025-11-30") == 150.0  # only 武胜's vehicles
