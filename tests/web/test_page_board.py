"""一图可览 in Debian's chromium against a real uvicorn, feed and SQLite history (the pagekit
fleet; test_browser_reports.py drives the rollup's city with drill-down and the 大屏): the
tiles are GET /api/board/summary's, the alarms-by-kind chart is drawn with the kinds' Chinese
names, and the 运行费用 tile shows the month's costs when the summary has them, "—" with its
note when not, and leads to 运行费用 of that month (not for a viewer, whose menu lacks it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fleet.batch import PositionBatch
from tests.web.pagekit import ARTIFACTS, PASSWORD, Served, alarm_event, serve, wait_js
from tests.web.viewkit import log_in_as, open_page

pytestmark = pytest.mark.browser

N = 30


async def seed_today(served: Served) -> None:
    """A short drive today for six vehicles, and alarms of two kinds."""
    now = int(time.time() * 1000)
    ts = np.arange(now - 20 * 60_000, now - 5 * 60_000, 10_000, dtype=np.int64)
    k = len(ts)
    steps = np.tile(np.arange(k), 6)
    assert served.ctx.history is not None
    await served.ctx.history.write_positions(
        PositionBatch.from_columns(
            vehicle=np.repeat(np.arange(6), k),
            ts=np.tile(ts, 6),
            lat=30.35 + steps * 0.0008,
            lon=106.29 + steps * 0.0008,
            speed=np.full(6 * k, 40.0, dtype=np.float32),
            acc=np.ones(6 * k, dtype=bool),
        )
    )
    for v in range(5):
        await served.record(alarm_event(served, v, "speeding", started_at=now - 600_000 - v))
    for v in range(5, 8):
        await served.record(alarm_event(served, v, "off_hours", started_at=now - 500_000 - v))


async def api_summary(served: Served, user: str = "op") -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        token = (
            await client.post(
                served.url + "/api/login", json={"username": user, "password": PASSWORD}
            )
        ).json()["token"]
        r = await client.get(
            served.url + "/api/board/summary", headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def tile(page: Any, key: str, part: str = "value") -> str:
    return (await page.locator(f'[data-tile="{key}"] .{part}').inner_text()).strip()


async def board_loaded(page: Any) -> dict[str, Any]:
    await wait_js(
        page,
        "window.fw.board && window.fw.board.summary() !== null && !window.fw.board.loading()",
    )
    return dict(await page.evaluate("window.fw.board.summary()"))


async def test_board_tiles_and_kinds_are_the_summarys(chromium: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=N) as served, open_page(chromium) as page:
        await seed_today(served)
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board")
        shown = await board_loaded(page)
        assert await page.evaluate("window.fw.board.fallback()") is False
        api = await api_summary(served)
        today = shown["today"]
        assert today["actual"] == N
        assert await tile(page, "actual") == str(N)
        for key in ("quota", "actual", "online", "trips", "alarms"):
            v = today[key]
            assert await tile(page, key) == ("—" if v is None else f"{int(v):,}"), key
        assert shown["date"] == api["date"]
        # The alarms of today by kind, with their Chinese names, in a drawn chart.
        assert dict(api["alarms_by_kind"]) == {"speeding": 5, "off_hours": 3}
        assert await tile(page, "alarms") == "8"
        await wait_js(page, "window.fw.board.charts() >= 3")
        assert await page.locator("#board-kinds canvas").count() == 1
        box = await page.locator("#board-kinds").bounding_box()
        assert box and box["width"] > 200 and box["height"] > 150
        labels = await page.evaluate("window.fw.board.summary().alarmsByKind.map(([k]) => k)")
        assert sorted(labels) == ["off_hours", "speeding"]
        # No raw i18n key anywhere on the board.
        text = await page.locator('[data-view="board"]').inner_text()
        assert "board." not in text and "kind." not in text
        # 运行费用: the server has none yet → "—" with its note, and the link to the page.
        if api.get("costs") is None:
            assert await tile(page, "costs") == "—"
            assert await tile(page, "costs", "note") == "本月尚无费用记录"
        await page.screenshot(path=str(ARTIFACTS / "page-board.png"))
        link = page.locator('[data-tile="costs"] a.tile-link')
        assert (await link.inner_text()).startswith("查看运行费用")
        await link.click()
        await page.wait_for_selector('[data-view="costs"]')
        assert f"month={api['date'][:7]}" in await page.evaluate("location.hash")
        assert (
            await page.evaluate(
                "(e => (e.tagName === 'INPUT' ? e : e.querySelector('input')).value)"
                "(document.querySelector('#costs-month'))"
            )
            == api["date"][:7]
        )
        assert page.errors == []


async def test_costs_tile_shows_the_months_figure(chromium: Any, tmp_path: Path) -> None:
    """The summary's ``costs`` (a number once costs are recorded) is the tile's value; the
    summary goes through the page's own request, only its figure changed."""
    async with serve(tmp_path, n=N) as served, open_page(chromium) as page:

        async def with_costs(route: Any) -> None:
            resp = await route.fetch()
            body = await resp.json()
            body["costs"] = 123456.7
            if isinstance(body.get("today"), dict):
                body["today"]["costs"] = 123456.7
            await route.fulfill(response=resp, body=json.dumps(body))

        await page.route("**/api/board/summary*", with_costs)
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board")
        await board_loaded(page)
        assert await tile(page, "costs") == "123,457"
        assert await tile(page, "costs", "note") == "本月累计（元）"
        assert await page.locator('[data-tile="costs"].muted').count() == 0
        await page.click(".lang-switch")
        assert await tile(page, "costs", "note") == "This month so far (yuan)"
        assert (await tile(page, "costs", "tile-link")).startswith("Open running costs")
        # 大屏: the figure stays, nothing to click.
        await page.click("#board-screen")
        await page.wait_for_selector(".board.screen")
        assert await tile(page, "costs") == "123,457"
        assert await page.locator('[data-tile="costs"] a.tile-link').count() == 0
        assert page.errors == []


async def test_a_viewer_sees_the_costs_tile_without_a_link(chromium: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=N) as served, open_page(chromium) as page:
        await log_in_as(page, served.url, "ws")
        await page.goto(served.url + "/#/board")
        await board_loaded(page)
        assert await page.locator('[data-tile="costs"]').count() == 1
        assert await page.locator('[data-tile="costs"] a.tile-link').count() == 0
        assert await page.locator('[data-nav="costs"]').count() == 0
        assert page.errors == []


async def test_costs_tile_is_the_cost_stores_month(chromium: Any, tmp_path: Path) -> None:
    """A supplier's toll rows imported through POST /api/costs/import: the summary's ``costs``
    becomes the month's total and the tile shows it."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    async with serve(tmp_path, n=N) as served, open_page(chromium) as page:
        tz = ZoneInfo(served.ctx.config.service.timezone)
        when = (dt.datetime.now(tz) - dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
        body = (
            "车牌号,通行时间,收费站,金额(元)\n"
            f"川X00001,{when},广安东收费站,1200\n"
            f"川X00003,{when},岳池收费站,34.5\n"
        ).encode()
        async with httpx.AsyncClient() as client:
            token = (
                await client.post(
                    served.url + "/api/login", json={"username": "op", "password": PASSWORD}
                )
            ).json()["token"]
            r = await client.post(
                served.url + "/api/costs/import",
                params={"kind": "toll", "supplier": "default", "filename": "toll.csv"},
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
                content=body,
            )
        assert r.status_code == 200, r.text
        api = await api_summary(served)
        assert api["costs"] == pytest.approx(1234.5)
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board")
        await board_loaded(page)
        assert await tile(page, "costs") == "1,235"
        assert await tile(page, "costs", "note") == "本月累计（元）"
        assert page.errors == []
