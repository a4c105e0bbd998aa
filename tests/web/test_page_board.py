"""一图可览 in Debian's chromium against a real uvicorn, feed and SQLite history: today's
figures from /api/stats in the tiles, the charts drawn, the per-organisation table, 编制 shown
as "—" with its note, and the 大屏 mode (button and ?screen=1) turning its panels by itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fleet.batch import PositionBatch
from tests.web.pagekit import ARTIFACTS, PASSWORD, Served, alarm_event, serve, wait_js
from tests.web.viewkit import log_in_as, open_page, rows

pytestmark = pytest.mark.browser

N = 30


async def today_figures(served: Served) -> dict[str, Any]:
    """A short drive today for six vehicles, and alarms of two kinds; the API's own figures."""
    now = int(time.time() * 1000)
    ts = np.arange(now - 20 * 60_000, now - 5 * 60_000, 10_000, dtype=np.int64)
    k = len(ts)
    vs = np.repeat(np.arange(6), k)
    t = np.tile(ts, 6)
    steps = np.tile(np.arange(k), 6)
    assert served.ctx.history is not None
    await served.ctx.history.write_positions(
        PositionBatch.from_columns(
            vehicle=vs,
            ts=t,
            lat=30.35 + steps * 0.0008,
            lon=106.29 + steps * 0.0008,
            speed=np.full(len(t), 40.0, dtype=np.float32),
            acc=np.ones(len(t), dtype=bool),
        )
    )
    for v in range(5):
        await served.record(alarm_event(served, v, "speeding", started_at=now - 600_000 - v))
    for v in range(5, 8):
        await served.record(alarm_event(served, v, "off_hours", started_at=now - 500_000 - v))
    async with httpx.AsyncClient() as client:
        token = (
            await client.post(
                served.url + "/api/login", json={"username": "op", "password": PASSWORD}
            )
        ).json()["token"]
        r = await client.get(
            served.url + "/api/stats", headers={"Authorization": f"Bearer {token}"}
        )
    return dict(r.json())


async def test_board_shows_todays_figures_and_charts(chromium: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=N) as served, open_page(chromium) as page:
        stats = await today_figures(served)
        assert stats["alarms_by_kind"] == {"speeding": 5, "off_hours": 3}
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board")
        await wait_js(page, "window.fw.board && window.fw.board.charts() === 3")
        await wait_js(page, "window.fw.board.stats() !== null")

        async def tile(key: str) -> str:
            return (await page.locator(f'[data-tile="{key}"] .value').inner_text()).strip()

        assert await tile("actual") == str(N)
        assert await tile("online") == str(stats["online"])
        assert await tile("moving") == str(stats["moving"])
        assert await tile("open") == str(stats["open_alarms"]) == "8"
        assert await tile("today") == "8"
        assert await tile("authorised") == "—"
        assert "档案" in await page.locator('[data-tile="authorised"] .note').inner_text()
        # Canvases with pixels: the state pie, the kinds, the organisations.
        for chart in ("#board-state-chart", "#board-kind-chart", "#board-org-chart"):
            assert await page.locator(f"{chart} canvas").count() == 1
            box = await page.locator(chart).bounding_box()
            assert box and box["width"] > 200 and box["height"] > 150
        # The per-organisation table the old page left out: one row per organisation.
        assert len(stats["by_org"]) >= 1
        org_rows = rows(page, "#board-org-table")
        assert await org_rows.count() == len(stats["by_org"])
        names = {
            (await c.inner_text()).strip() for c in await org_rows.locator("td:nth-child(1)").all()
        }
        assert names <= {"武胜县", "岳池县", "广安市"} and names
        await page.screenshot(path=str(ARTIFACTS / "page-board.png"))

        # 大屏: the button turns it on; dark, large; the panels turn by themselves.
        await page.click("#board-screen")
        await page.wait_for_selector(".board.screen")
        bg = await page.evaluate(
            "getComputedStyle(document.querySelector('.board.screen')).backgroundColor"
        )
        assert bg == "rgb(11, 26, 46)"
        big = await page.evaluate(
            "parseFloat(getComputedStyle("
            "document.querySelector('[data-tile=actual] .value')).fontSize)"
        )
        assert big >= 48
        first = await page.evaluate("window.fw.board.panel()")
        await wait_js(page, f"window.fw.board.panel() !== {first!r}", timeout=15_000)
        await page.screenshot(path=str(ARTIFACTS / "page-board-screen.png"))
        assert page.errors == []


async def test_screen_query_opens_the_wall_screen(chromium: Any, tmp_path: Path) -> None:
    async with (
        serve(tmp_path, n=N) as served,
        open_page(chromium, viewport={"width": 1920, "height": 1080}) as page,
    ):
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/board?screen=1")
        await page.wait_for_selector(".board.screen")
        await wait_js(page, "window.fw.board.screen() && window.fw.board.charts() >= 1")
        # Nothing to click: the tiles fill the width and the panel shown is the rotation's.
        assert await page.locator(".board.screen .b-panel:visible").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "page-board-screen-1080.png"))
        await page.click("#board-screen")
        await page.wait_for_selector(".board:not(.screen)")
        assert await page.locator(".board .b-panel:visible").count() == 3
        assert page.errors == []
