"""报表 and 一图可览 in Debian's chromium against a real uvicorn, feed, SQLite history and the
reports' rollup (web/reports_api.py): the board's tiles equal GET /api/board/summary (for the
city and for a county opened by drill-down) and its 大屏 turns its panels by itself; a report
drills down city → county → unit → vehicle with the API's own numbers at each level and comes
back up by the breadcrumb; a violation count opens the list behind it and the alarm history;
the XLSX export downloads, opens with openpyxl and holds the table's numbers.

Screenshots go to artifacts/ and to $RFRONT_SHOTS (default /tmp/rfront-shots)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openpyxl
import pytest

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.config import parse_config
from rules.events import AlarmEvent, episode_id
from store.history import day_bounds_ms
from store.sqlite import SQLiteHistory
from stream.feed import FeedCore
from tests.conftest import free_port
from tests.web.pagekit import ARTIFACTS, PASSWORD, Served, _start, wait_js
from tests.web.viewkit import cell_texts, log_in_as, open_page, rows, wait_rows
from web.app import create_app
from web.context import AppContext

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("RFRONT_SHOTS", "/tmp/rfront-shots"))
TZ = "Asia/Shanghai"
# A city with two counties; 武胜县 has two units, 岳池县 one, and the city holds two vehicles
# itself (a 本级 row).
ORGS = [
    {"id": "city", "name": "广安市"},
    {"id": "wusheng", "name": "武胜县", "parent": "city"},
    {"id": "yuechi", "name": "岳池县", "parent": "city"},
    {"id": "ws-jyj", "name": "武胜县教育局", "parent": "wusheng"},
    {"id": "ws-nyj", "name": "武胜县农业农村局", "parent": "wusheng"},
    {"id": "yc-gaj", "name": "岳池县公安局", "parent": "yuechi"},
]
UNITS = ["ws-jyj", "ws-nyj", "yc-gaj"]
N = 14  # V00000..V00011 in the units (i % 3), V00012..V00013 on the city itself


def org_of(i: int) -> str:
    return UNITS[i % 3] if i < 12 else "city"


def shot(name: str) -> list[str]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return [str(SHOTS / name), str(ARTIFACTS / name)]


async def screenshot(page: Any, name: str, **kw: Any) -> None:
    for p in shot(name):
        await page.screenshot(path=p, **kw)


@contextlib.asynccontextmanager
async def serve_city(tmp: Path) -> AsyncIterator[tuple[Served, str]]:
    """The application on a free port, ten of its terminals online, history on SQLite with
    today's seed (pagekit.serve's recipe with a three-level organisation tree); and today."""
    port = free_port()
    cfg = parse_config(
        {
            "service": {"timezone": TZ},
            "store": {"kind": "sqlite", "sqlite_path": str(tmp / "h.db")},
            "orgs": ORGS,
            "vehicles": [
                {
                    "id": f"V{i:05d}",
                    "plate": f"川X{i:05d}",
                    "terminal": f"1{i:010d}",
                    "org": org_of(i),
                }
                for i in range(N)
            ],
            "web": {
                "port": port,
                "feed_interval_ms": 200,
                "tiles": [{"name": "none", "url": ""}],
                "establishment": {"ws-jyj": 6, "ws-nyj": 5, "yc-gaj": 4, "city": 2},
                "users": [
                    {"username": "op", "password": PASSWORD, "org": "city", "role": "operator"}
                ],
            },
        },
        source=str(tmp / "fw.toml"),
    )
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=cfg.web.feed_interval_ms),
        history=history,
    )
    now = int(time.time() * 1000)
    # Ten of the fourteen terminals reported just now (online), four are silent.
    on = np.arange(10)
    ctx.feed.positions(
        PositionBatch.from_columns(
            vehicle=on,
            ts=np.full(on.size, now),
            lat=np.full(on.size, 30.45),
            lon=np.full(on.size, 106.63),
            speed=np.zeros(on.size, dtype=np.float32),
            acc=np.ones(on.size, dtype=bool),
        )
    )
    day = await seed_today(ctx)
    app = create_app(ctx)
    server, task = await _start(app, port)
    served = Served(f"http://127.0.0.1:{port}", ctx, port, server, task, app)
    try:
        yield served, day
    finally:
        if not served.task.done():
            await served.stop()
        await history.close()


def today_iso(now_ms: int) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(TZ)).date().isoformat()


def alarm(v: int, kind: str, started: int, severity: str = "warning") -> AlarmEvent:
    """A closed episode of vehicle ``v`` (its id as the pipeline makes it)."""
    vid = f"V{v:05d}"
    return AlarmEvent(
        id=episode_id(vid, kind, started),
        vehicle=v,
        vehicle_id=vid,
        kind=kind,
        action="close",
        started_at=started,
        ended_at=started + 60_000,
        ts=started + 60_000,
        lat=30.45,
        lon=106.63,
        severity=severity,  # type: ignore[arg-type]
    )


async def seed_today(ctx: AppContext) -> str:
    """Trips today for eight vehicles (V0..V7) and alarms: speeding on V0..V5, 非工作时间用车
    (critical) on V1, V4 and the city's V12 — every unit and the 本级 row has some. Written
    before the app starts, so its first rollup holds all of it. Returns today's date."""
    import datetime as dt

    now = int(time.time() * 1000)
    day = today_iso(now)
    start, _ = day_bounds_ms(dt.date.fromisoformat(day), TZ)
    t0 = now - 25 * 60_000
    if t0 < start:
        pytest.skip("today is younger than 25 minutes: no room for a trip today")
    assert ctx.history is not None
    for v in range(8):
        k = 60  # 10 minutes at 36 km/h, then 10 minutes parked with the engine on
        i = np.arange(k + 60)
        await ctx.history.write_positions(
            PositionBatch.from_columns(
                vehicle=np.full(i.size, v),
                ts=t0 + i * 10_000,
                lat=30.45 + np.minimum(i, k - 1) * 0.0009,
                lon=np.full(i.size, 106.63),
                speed=np.where(i < k, 36.0, 0.0).astype(np.float32),
                acc=np.ones(i.size, dtype=bool),
            )
        )
    started = t0 + 120_000
    events = [alarm(v, "speeding", started + v) for v in range(6)]
    events += [alarm(v, "off_hours", started + 50 + v, "critical") for v in (1, 4, 12)]
    await ctx.history.write_alarm_events(events)
    for ev in events:
        ctx.feed.alarm(ev)
    return day


async def token(served: Served) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            served.url + "/api/login", json={"username": "op", "password": PASSWORD}
        )
    return str(r.json()["token"])


async def api_get(served: Served, path: str, **params: str) -> Any:
    async with httpx.AsyncClient() as client:
        r = await client.get(
            served.url + path,
            params=params,
            headers={"Authorization": f"Bearer {await token(served)}"},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    return r.json()


async def tile(page: Any, key: str) -> str:
    return (await page.locator(f'[data-tile="{key}"] .value').inner_text()).strip()


def fig(v: Any) -> str:
    """The board's integer figure (grouped thousands; none → —)."""
    return "—" if v is None else f"{int(v):,}"


async def board_ready(page: Any, org: str) -> None:
    await wait_js(
        page,
        "window.fw.board && window.fw.board.summary() !== null && !window.fw.board.loading()"
        f" && window.fw.board.summary().org === {org!r}",
    )


async def test_board_figures_equal_the_summary_and_the_wall_screen_turns(
    chromium: Any, tmp_path: Path
) -> None:
    async with serve_city(tmp_path) as (served, _), open_page(chromium) as page:
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board")
        await board_ready(page, "city")
        assert await page.evaluate("window.fw.board.fallback()") is False
        s = await api_get(served, "/api/board/summary")
        assert s["trips"] == 8 and s["alarms"] == 9  # the seed, rolled up
        for key in ("quota", "actual", "online", "trips", "alarms"):
            assert await tile(page, key) == fig(s[key]), key
        assert s["costs"] is None
        assert await tile(page, "costs") == "—"
        assert "费用" in await page.locator('[data-tile="costs"] .note').inner_text()
        # The charts have canvases with a size: both trends, the kinds, the attention lists.
        for sel in ("#board-trend7", "#board-trend30", "#board-kinds"):
            assert await page.locator(f"{sel} canvas").count() == 1, sel
            box = await page.locator(f"{sel} canvas").bounding_box()
            assert box and box["width"] > 200 and box["height"] > 150, sel
        assert await page.locator("[data-attention=violations] canvas").count() == 1
        # Idle: the vehicles without a trip today, as the summary lists them.
        idle_rows = rows(page, "#board-idle")
        assert await idle_rows.count() == len(s["idle"]) == N - 8
        plates = set(await cell_texts(page, "#board-idle", 0))
        assert plates == {r["name"] for r in s["idle"]}
        await screenshot(page, "board.png")
        await page.set_viewport_size({"width": 1400, "height": 1500})  # the whole board
        await page.wait_for_timeout(300)
        await screenshot(page, "board-full.png")
        await page.set_viewport_size({"width": 1400, "height": 900})

        # Drill-down by organisation: 武胜县 from the address; the breadcrumb goes back up.
        await page.goto(served.url + "/#/board?org=wusheng")
        await board_ready(page, "wusheng")
        sw = await api_get(served, "/api/board/summary", org="wusheng")
        for key in ("quota", "actual", "online", "trips", "alarms"):
            assert await tile(page, key) == fig(sw[key]), key
        assert sw["alarms"] == 6  # V0,1,3,4 speeding + V1,V4 off_hours
        crumbs = [t.strip() for t in await page.locator("#board-crumbs .crumb").all_inner_texts()]
        assert crumbs == ["广安市", "武胜县"]
        await page.click('#board-crumbs .crumb[data-org="city"]')
        await board_ready(page, "city")
        assert await tile(page, "alarms") == fig(s["alarms"])
        # …and a unit from the idle list opens that unit's board.
        await page.click('#board-idle .org-link:has-text("岳池县公安局")')
        await board_ready(page, "yc-gaj")
        su = await api_get(served, "/api/board/summary", org="yc-gaj")
        for key in ("actual", "trips", "alarms"):
            assert await tile(page, key) == fig(su[key]), key
        assert su["alarms"] == 2  # V2, V5 speeding
        assert await page.locator("#board-failure").count() == 0
        assert page.errors == []

    # 大屏 on a 1080p wall: dark, large type, one panel at a time, turning every 3 s.
    async with (
        serve_city(tmp_path / "wall") as (served, _),
        open_page(chromium, viewport={"width": 1920, "height": 1080}) as page,
    ):
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board?screen=1&rotate=3")
        await page.wait_for_selector(".board.screen")
        await board_ready(page, "city")
        bg = await page.evaluate(
            "getComputedStyle(document.querySelector('.board.screen')).backgroundColor"
        )
        assert bg == "rgb(11, 26, 46)"
        big = await page.evaluate(
            "parseFloat(getComputedStyle("
            "document.querySelector('[data-tile=actual] .value')).fontSize)"
        )
        assert big >= 48
        assert await page.locator(".board.screen .b-panel:visible").count() == 1
        assert await page.locator("#board-org").count() == 0  # nothing to pick on the wall
        seen = [await page.evaluate("window.fw.board.panel()")]
        await screenshot(page, f"board-screen-{seen[0]}.png")
        for _ in range(3):
            await wait_js(page, f"window.fw.board.panel() !== {seen[-1]!r}", timeout=8_000)
            seen.append(await page.evaluate("window.fw.board.panel()"))
            await page.wait_for_timeout(400)  # the panel's charts resized
            await screenshot(page, f"board-screen-{seen[-1]}.png")
        assert seen == ["trend", "kinds", "attention", "idle"]
        assert page.errors == []


async def table_rows(page: Any) -> list[list[str]]:
    """The report table's body cells, as drawn."""
    out: list[list[str]] = []
    for r in await rows(page, "#reports-table").all():
        out.append([(t or "").strip() for t in await r.locator("td").all_inner_texts()])
    return out


async def report_ready(page: Any, org: str, level: str) -> None:
    await wait_js(
        page,
        "window.fw.reports && !window.fw.reports.loading() && window.fw.reports.table()"
        f" && window.fw.reports.table().org === {org!r}"
        f" && window.fw.reports.table().level === {level!r}",
    )


def shown_columns(rep: dict[str, Any]) -> list[str]:
    """The figure columns the page shows for violations: the kinds someone committed."""
    kinds = {c["key"] for c in rep["columns"]} - {"name", "critical", "total"}
    return [
        c["key"]
        for c in rep["columns"]
        if c["key"] != "name"
        and (
            c["key"] not in kinds
            or any(r.get(c["key"]) for r in rep["rows"])
            or rep["totals"].get(c["key"])
        )
    ]


def expected(rep: dict[str, Any]) -> list[list[str]]:
    cols = shown_columns(rep)
    return [[r["name"], *(f"{int(r[k]):,}" for k in cols)] for r in rep["rows"]]


async def test_report_drills_down_and_back_and_exports_xlsx(chromium: Any, tmp_path: Path) -> None:
    async with (
        serve_city(tmp_path) as (served, day),
        open_page(chromium, accept_downloads=True) as page,
    ):
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + f"/#/reports?report=violations&from={day}&to={day}")
        await report_ready(page, "city", "county")

        async def check(org: str, level: str) -> dict[str, Any]:
            rep = await api_get(
                served, "/api/reports/violations", org=org, level=level, **{"from": day, "to": day}
            )
            assert await table_rows(page) == expected(rep), (org, level)
            return rep

        city = await check("city", "county")
        # Counties plus the city's own vehicles (本级); the seed's alarms by county.
        names = [r["name"] for r in city["rows"]]
        assert names == ["广安市（本级）", "武胜县", "岳池县"]
        assert city["totals"]["total"] == 9 and city["totals"]["speeding"] == 6
        assert await page.locator("#reports-chart canvas").count() == 1
        await screenshot(page, "reports-city.png")

        await page.click('#reports-table a.drill[data-org="wusheng"]')
        await report_ready(page, "wusheng", "unit")
        ws = await check("wusheng", "unit")
        assert [r["name"] for r in ws["rows"]] == ["武胜县教育局", "武胜县农业农村局"]
        crumbs = [t.strip() for t in await page.locator("#reports-crumbs .crumb").all_inner_texts()]
        assert crumbs == ["广安市", "武胜县"]
        await screenshot(page, "reports-county.png")

        await page.click('#reports-table a.drill[data-org="ws-nyj"]')
        await report_ready(page, "ws-nyj", "vehicle")
        unit = await check("ws-nyj", "vehicle")
        assert [r["name"] for r in unit["rows"]] == ["川X00001", "川X00004", "川X00007", "川X00010"]
        assert await page.locator("#reports-table a.drill").count() == 0  # vehicles: the bottom
        await screenshot(page, "reports-unit.png")

        # The list behind a count: 川X00001's 非工作时间用车 — one critical episode.
        await page.click('#reports-table tr:has-text("川X00001") a.vio-link[data-col="off_hours"]')
        await page.wait_for_selector("#reports-behind-table .el-table__row")
        await wait_rows(page, "#reports-behind-table", 1)
        assert "川X00001" in await page.locator("#reports-behind-table").inner_text()
        await page.wait_for_timeout(600)  # the drawer slid in
        await screenshot(page, "reports-behind.png")
        await page.click("#reports-behind-history")
        await page.wait_for_selector('[data-view="alarms"]')
        q = await page.evaluate("location.hash")
        assert "kind=off_hours" in q and "plate=" in q
        await wait_rows(page, "#hist-table", 1)
        await page.go_back()
        await report_ready(page, "ws-nyj", "vehicle")

        # Back up by the breadcrumb: straight to the city.
        await page.click('#reports-crumbs .crumb[data-index="0"]')
        await report_ready(page, "city", "county")
        assert await table_rows(page) == expected(city)
        assert await page.locator("#reports-crumbs .crumb").count() == 1

        # 广安市（本级）: the two vehicles booked on the city itself (own=1), and back.
        await page.click('#reports-table a.drill[data-org="city"]')
        await report_ready(page, "city", "vehicle")
        own = await api_get(
            served,
            "/api/reports/violations",
            org="city",
            level="vehicle",
            own="1",
            **{"from": day, "to": day},
        )
        assert [r["name"] for r in own["rows"]] == ["川X00012", "川X00013"]
        assert await table_rows(page) == expected(own)
        assert own["totals"]["total"] == 1
        await page.click('#reports-crumbs .crumb[data-index="0"]')
        await report_ready(page, "city", "county")

        # 车辆使用 at the county: the XLSX of what the table shows.
        await page.click('#reports-table a.drill[data-org="wusheng"]')
        await report_ready(page, "wusheng", "unit")
        await page.click("#report-use")
        await report_ready(page, "wusheng", "unit")
        use = await api_get(
            served, "/api/reports/use", org="wusheng", level="unit", **{"from": day, "to": day}
        )
        drawn = await table_rows(page)
        assert [r[0] for r in drawn] == [r["name"] for r in use["rows"]]
        trips_col = [c["key"] for c in use["columns"] if c["key"] != "name"].index("trips") + 1
        assert [int(r[trips_col]) for r in drawn] == [r["trips"] for r in use["rows"]]
        assert sum(r["trips"] for r in use["rows"]) == use["totals"]["trips"] == 6  # V0,1,3,4,6,7
        await screenshot(page, "reports-use-county.png")
        async with page.expect_download() as dl_info:
            await page.click("#reports-export-xlsx")
        dl = await dl_info.value
        assert dl.suggested_filename.endswith(".xlsx") and "车辆使用" in dl.suggested_filename
        path = tmp_path / dl.suggested_filename
        await dl.save_as(path)
        wb = openpyxl.load_workbook(path, read_only=True)
        try:  # read_only keeps the file open until close()
            sheet = [list(r) for r in wb[wb.sheetnames[0]].iter_rows(values_only=True)]
            sheetnames = wb.sheetnames
        finally:
            wb.close()
        headers = [c["zh"] for c in use["columns"]]
        assert sheet[0] == headers  # Chinese headers
        body, total = sheet[1:-1], sheet[-1]
        assert [r[0] for r in body] == [r[0] for r in drawn]
        cols = [c["key"] for c in use["columns"]]
        for xr, jr, dr in zip(body, use["rows"], drawn, strict=True):
            assert xr[cols.index("trips")] == jr["trips"] == int(dr[trips_col])
            assert xr[cols.index("vehicles")] == jr["vehicles"]
            assert round(xr[cols.index("km")], 1) == round(jr["km"], 1)
        assert total[0] == "合计" and total[cols.index("trips")] == 6
        assert "单位" in sheetnames  # the level asked, then the levels below
        # The CSV of the same filters: one level, UTF-8 with its BOM, the same numbers.
        async with page.expect_download() as dl_info:
            await page.click("#reports-export-csv")
        dl = await dl_info.value
        assert dl.suggested_filename.endswith(".csv")
        raw = (await dl.path()).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")
        table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        assert table[0] == headers
        assert [r[0] for r in table[1:-1]] == [r[0] for r in drawn]
        assert [int(r[cols.index("trips")]) for r in table[1:-1]] == [
            int(r[trips_col]) for r in drawn
        ]
        assert table[-1][0] == "合计" and int(table[-1][cols.index("trips")]) == 6
        assert page.errors == []


async def test_board_of_a_day_without_alarms(chromium: Any, tmp_path: Path) -> None:
    """A past day (?date=) with no trips and no alarms: zeros, not an error (h-reports once
    answered 500 for handling rows without alarms)."""
    import datetime as dt

    async with serve_city(tmp_path) as (served, day), open_page(chromium) as page:
        yesterday = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        async with httpx.AsyncClient() as client:
            r = await client.get(
                served.url + "/api/board/summary",
                params={"date": yesterday},
                headers={"Authorization": f"Bearer {await token(served)}"},
            )
        assert r.status_code == 200, r.text
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + f"/#/board?date={yesterday}")
        await board_ready(page, "city")
        assert await page.evaluate("window.fw.board.summary().date") == yesterday
        assert await tile(page, "alarms") == "0" and await tile(page, "trips") == "0"
