"""/api/reports and /api/board/summary over HTTP on a seeded SQLite history: the JSON
contract, drill-down, role scoping, CSV/XLSX matching the JSON, and one set of numbers
on the board, in the reports and in their exports."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from tests.reports.conftest import seed
from tests.web.conftest import Built, build, login

pytestmark = pytest.mark.services

SPAN = {"from": "2025-11-24", "to": "2025-11-26"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Built, Any]]:
    b = await build(tmp_path)
    s = await seed(b.ctx.history, b.ctx.registry)
    b.clock.now = s.now  # 2025-11-27 01:00 local: the three days are over
    async with b.app.router.lifespan_context(b.app):
        transport = httpx.ASGITransport(app=b.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            yield c, b, s
    await b.ctx.history.close()


async def _rebuild(b: Built, s: Any) -> None:
    """Close the three seeded days (the job itself only closes yesterday)."""
    from reports.daily import build_day
    from tests.reports.conftest import DAYS, TZ
    from web.reports_api import reports_state

    st = b.app.state.api
    rs = await reports_state(st)
    for d in DAYS:
        await build_day(
            b.ctx.history, rs.rollup, b.ctx.registry, d, TZ, now_ms=s.now, orders=s.orders
        )


async def test_index_and_contract(app: Any) -> None:
    c, b, s = app
    h = await login(c, "admin")
    r = await c.get("/api/reports", headers=h)
    assert [x["name"] for x in r.json()["reports"]] == [
        "violations",
        "use",
        "handling",
        "online",
        "coverage",
        "quota",
    ]
    await _rebuild(b, s)
    for name in ("violations", "use", "handling", "online", "coverage", "quota"):
        r = await c.get(f"/api/reports/{name}", params=SPAN, headers=h)
        assert r.status_code == 200, (name, r.text)
        j = r.json()
        assert {"name", "from", "to", "org", "level", "columns", "rows", "totals"} <= set(j)
        assert j["level"] == "county" and j["children_level"] == "unit"
        assert all({"key", "zh", "en"} <= set(col) for col in j["columns"])
        assert all("org" in row and "name" in row for row in j["rows"])


async def test_use_drill_down_adds_up(app: Any) -> None:
    c, b, s = app
    h = await login(c, "admin")
    await _rebuild(b, s)
    city = (await c.get("/api/reports/use", params=SPAN, headers=h)).json()
    # V1 is booked on the city itself: its own row (本级) keeps the rows adding up
    assert [row["org"] for row in city["rows"]] == ["city", "wusheng", "yuechi"]
    assert city["rows"][0]["own"] is True
    own = (
        await c.get(
            "/api/reports/use",
            params={**SPAN, "org": "city", "level": "vehicle", "own": "1"},
            headers=h,
        )
    ).json()
    assert [r["vehicle"] for r in own["rows"]] == ["V1"]
    assert own["totals"]["trips"] == city["rows"][0]["trips"]
    # 3 days × 3 vehicles used × 2 trips
    assert city["totals"]["trips"] == 18
    assert sum(row["trips"] for row in city["rows"]) == 18
    ws = next(row for row in city["rows"] if row["org"] == "wusheng")
    units = (
        await c.get(
            "/api/reports/use", params={**SPAN, "org": "wusheng", "level": "unit"}, headers=h
        )
    ).json()
    assert sum(row["trips"] for row in units["rows"]) == ws["trips"]
    assert units["children_level"] == "vehicle"
    veh = (
        await c.get(
            "/api/reports/use", params={**SPAN, "org": "wusheng", "level": "vehicle"}, headers=h
        )
    ).json()
    assert {row["vehicle"] for row in veh["rows"]} == {"V2", "V3"}
    assert sum(row["trips"] for row in veh["rows"]) == ws["trips"]
    assert veh["children_level"] is None
    # idle: no trip in the N days up to `to`. The seed rests vehicle v on day d when
    # (v + d) % 4 == 3: V2 (v=1) on 11-26, V3 on 11-25, V4 on 11-24.
    one = (await c.get("/api/reports/use", params={**SPAN, "idle_days": "1"}, headers=h)).json()
    assert [v["vehicle"] for v in one["idle"]] == ["V2"]
    assert one["totals"]["idle_vehicles"] == 1
    two = (await c.get("/api/reports/use", params={**SPAN, "idle_days": "2"}, headers=h)).json()
    assert two["idle"] == []


async def test_scoping_and_bad_input(app: Any) -> None:
    c, b, s = app
    await _rebuild(b, s)
    h = await login(c, "ws-op")
    r = await c.get("/api/reports/violations", params=SPAN, headers=h)
    assert r.status_code == 200
    j = r.json()
    assert j["org"] == "wusheng" and j["level"] == "unit"
    assert {row["org"] for row in j["rows"]} <= {"wusheng", "ws-police"}
    assert {a["org"] for a in j["items"]} <= {"wusheng", "ws-police"}
    r = await c.get("/api/reports/use", params={**SPAN, "org": "yuechi"}, headers=h)
    assert r.status_code == 404
    r = await c.get("/api/reports/use", params={**SPAN, "org": "city"}, headers=h)
    assert r.status_code == 404
    for bad in (
        {"from": "2025-13-01"},
        {"from": "2025-11-26", "to": "2025-11-24"},
        {"from": "2024-01-01", "to": "2025-11-24"},
        {"format": "pdf"},
        {"level": "planet"},
        {"level": "city"},  # above the caller's county
        {"idle_days": "x"},
        {"idle_days": "0"},
        {"from": "0001-01-01", "to": "0001-01-02"},
    ):
        r = await c.get("/api/reports/use", params={**SPAN, **bad}, headers=h)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]
    assert (await c.get("/api/reports/nope", headers=h)).status_code == 400
    r = await c.get("/api/board/summary", params={"date": "0001-01-01"}, headers=h)
    assert r.status_code == 400
    r = await c.get("/api/board/summary", params={"org": "yuechi"}, headers=h)
    assert r.status_code == 404
    assert (await c.get("/api/reports/use")).status_code == 401


async def test_exports_match_json(app: Any) -> None:
    c, b, s = app
    h = await login(c, "admin")
    await _rebuild(b, s)
    for name in ("violations", "use", "handling", "online", "coverage"):
        j = (await c.get(f"/api/reports/{name}", params=SPAN, headers=h)).json()
        r = await c.get(f"/api/reports/{name}", params={**SPAN, "format": "csv"}, headers=h)
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0] == [col["zh"] for col in j["columns"]]
        assert len(rows) == len(j["rows"]) + 2  # header + rows + 合计
        assert rows[-1][0] == "合计"
        r = await c.get(f"/api/reports/{name}", params={**SPAN, "format": "xlsx"}, headers=h)
        assert r.status_code == 200
        wb = openpyxl.load_workbook(io.BytesIO(r.content))
        assert wb.sheetnames[:3] == ["区县", "单位", "车辆"]
        ws = wb["区县"]
        values = list(ws.iter_rows(values_only=True))
        assert list(values[0]) == [col["zh"] for col in j["columns"]]
        for got, want in zip(values[1:], j["rows"], strict=False):
            for v, col in zip(got, j["columns"], strict=True):
                w = want[col["key"]]
                assert v == w or (v is None and w is None), (name, col["key"], v, w)
        total = values[len(j["rows"]) + 1]
        for v, col in list(zip(total, j["columns"], strict=True))[1:]:
            assert v == j["totals"][col["key"]], (name, col["key"])
        if name == "violations":
            assert "明细" in wb.sheetnames


async def test_board_reports_exports_agree(app: Any) -> None:
    c, b, s = app
    h = await login(c, "admin")
    await _rebuild(b, s)
    day = {"from": "2025-11-25", "to": "2025-11-25"}
    board = (await c.get("/api/board/summary", params={"date": "2025-11-25"}, headers=h)).json()
    use = (await c.get("/api/reports/use", params=day, headers=h)).json()
    viol = (await c.get("/api/reports/violations", params=day, headers=h)).json()
    assert board["trips"] == use["totals"]["trips"] == 6
    assert board["alarms"] == viol["totals"]["total"] == sum(board["alarms_by_kind"].values())
    assert board["km"] == pytest.approx(use["totals"]["km"], abs=0.05)
    r = await c.get("/api/reports/use", params={**day, "format": "csv"}, headers=h)
    total = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))[-1]
    keys = [col["key"] for col in use["columns"]]
    assert int(total[keys.index("trips")]) == board["trips"]
    stats = (await c.get("/api/stats", params={"day": "2025-11-25"}, headers=h)).json()
    assert stats["trips"] == board["trips"]
    assert sum(stats["alarms_by_kind"].values()) == board["alarms"]
    trend = {t["date"]: t for t in board["trend7"]}
    assert trend["2025-11-25"]["trips"] == board["trips"]
    assert len(board["trend30"]) == 30
    assert board["quota"] == 6 and board["actual"] == 4  # web.establishment, the registry
    # One 编制数: the establishment seeds the quota store, which the quota report reads.
    quota = (await c.get("/api/reports/quota", params=day, headers=h)).json()
    assert quota["totals"]["authorised"] == board["quota"]
    assert quota["totals"]["actual"] == board["actual"]
    for org in ("wusheng", "yuechi"):
        b_org = (
            await c.get("/api/board/summary", params={"date": "2025-11-25", "org": org}, headers=h)
        ).json()
        q_org = next(r for r in quota["rows"] if r["org"] == org)
        assert b_org["quota"] == q_org["authorised"] == {"wusheng": 3, "yuechi": 2}[org]
    assert board["costs"] is None  # no cost data (tests/costs: the month so far)
    assert set(board["attention"]) == {"violations", "slow_handling", "low_online"}


async def test_empty_history_answers(tmp_path: Path) -> None:
    """No positions, no alarms: every report and the board answer zeros, not errors."""
    b = await build(tmp_path)
    async with b.app.router.lifespan_context(b.app):
        transport = httpx.ASGITransport(app=b.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            h = await login(c, "admin")
            r = await c.get("/api/board/summary", params={"org": ""}, headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["trips"] == 0 and r.json()["alarms"] == 0
            for name in ("violations", "use", "handling", "online", "coverage", "quota"):
                for level in ("county", "unit", "vehicle"):
                    if name == "quota" and level == "vehicle":
                        continue
                    r = await c.get(f"/api/reports/{name}", params={"level": level}, headers=h)
                    assert r.status_code == 200, (name, level, r.text)
                r = await c.get(f"/api/reports/{name}", params={"format": "xlsx"}, headers=h)
                assert r.status_code == 200, (name, r.text)
    await b.ctx.history.close()


async def test_an_order_made_through_the_api_counts_in_coverage(tmp_path: Path) -> None:
    """The rollup reads the order store the order routes write (#16): an order posted
    through POST /api/orders and approved covers its vehicle's trip in the coverage
    report."""
    from tests.web.test_orders_flow import USERS

    b = await build(tmp_path, users=USERS)
    s = await seed(b.ctx.history, b.ctx.registry)
    b.clock.now = s.now
    async with b.app.router.lifespan_context(b.app):
        transport = httpx.ASGITransport(app=b.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            await _order_covers(c, b, s)
    await b.ctx.history.close()


async def _order_covers(c: httpx.AsyncClient, b: Built, s: Any) -> None:
    from store.history import day_bounds_ms
    from tests.reports.conftest import DAYS, TZ

    h = await login(c, "admin")
    day = {"from": "2025-11-26", "to": "2025-11-26", "level": "vehicle", "org": "ws-police"}
    before = (await c.get("/api/reports/coverage", params=day, headers=h)).json()
    assert before["totals"]["trips"] == 2 and before["totals"]["trips_covered"] == 0
    start, _ = day_bounds_ms(DAYS[-1], TZ)
    r = await c.post(
        "/api/orders",
        headers=h,
        json={
            "id": "COV-1",
            "vehicle": "V3",  # ws-police; drives 09:00 and 14:00 on 11-26
            "type": "local",
            "start": start + 8 * 3_600_000,
            "end": start + 10 * 3_600_000,
            "approved": True,
        },
    )
    assert r.status_code == 200, r.text
    for u in ("kezhang", "chuzhang"):  # the unit head's step, then the office's
        r = await c.post("/api/orders/COV-1/approve", headers=await login(c, u))
        assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    # The day is rebuilt from the job (it reads the orders itself), as the service does.
    from web.reports_api import reports_state

    rs = await reports_state(b.app.state.api)
    assert rs.job is not None
    rs.job.closed_through = None  # close 11-26 again with the new order
    await rs.job.tick(s.now, force=True)
    after = (await c.get("/api/reports/coverage", params=day, headers=h)).json()
    assert after["totals"]["trips_covered"] == 1 and after["totals"]["orders"] == 1
    assert after["rows"][0]["vehicle"] == "V3"


async def test_establishment_seeds_the_quota_once(tmp_path: Path) -> None:
    """[web] establishment seeds only organisations whose quota was never set: a quota
    set (or cleared) by hand stays what the board and the quota report show."""
    from store.config import StoreConfig
    from store.records import SEED_CLASS, RecordStore

    rs = RecordStore(StoreConfig(), path=str(tmp_path / "r.db"))
    await rs.open()
    try:
        assert await rs.seed_quota({"wusheng": 3, "yuechi": 2}, by="config", at=1) == 2
        assert await rs.quota() == {("wusheng", SEED_CLASS): 3, ("yuechi", SEED_CLASS): 2}
        await rs.set_quota("wusheng", {"执法执勤": 5}, by="admin", at=2)
        await rs.set_quota("yuechi", {}, by="admin", at=3)
        assert await rs.seed_quota({"wusheng": 3, "yuechi": 2, "city": 1}, by="config", at=4) == 1
        assert await rs.quota() == {("wusheng", "执法执勤"): 5, ("city", SEED_CLASS): 1}
    finally:
        await rs.close()


async def test_names_follow_the_language(app: Any) -> None:
    """The violations' critical column is 紧急 (notify's severity name); an organisation's
    own row is "（本级）" in Chinese and "(own)" with lang=en, in JSON and in the files."""
    from notify.message import SEVERITY_NAMES

    c, b, s = app
    h = await login(c, "admin")
    await _rebuild(b, s)
    viol = (await c.get("/api/reports/violations", params=SPAN, headers=h)).json()
    crit = next(col for col in viol["columns"] if col["key"] == "critical")
    assert crit["zh"] == SEVERITY_NAMES["critical"] == "紧急" and crit["en"] == "Critical"
    assert viol["rows"][0]["name"] == "广安市（本级）"
    en = (await c.get("/api/reports/use", params={**SPAN, "lang": "en"}, headers=h)).json()
    assert en["rows"][0]["own"] is True and en["rows"][0]["name"] == "广安市 (own)"
    assert not any("本级" in r["name"] for r in en["rows"])
    r = await c.get("/api/reports/use", params={**SPAN, "lang": "en", "format": "csv"}, headers=h)
    body = r.content.decode("utf-8-sig")
    assert "广安市 (own)" in body and "本级" not in body
    r = await c.get("/api/reports/violations", params={**SPAN, "format": "csv"}, headers=h)
    head = r.content.decode("utf-8-sig").splitlines()[0]
    assert "紧急" in head and "严重" not in head
    r = await c.get("/api/reports/use", params={**SPAN, "lang": "en", "format": "xlsx"}, headers=h)
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    cells = [str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row]
    assert "广安市 (own)" in cells and not any("本级" in v for v in cells)
