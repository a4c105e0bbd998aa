"""轨迹回放 in Debian's chromium against a real uvicorn and SQLite history: a vehicle picked in
the form, a custom range typed into the pickers across midnight (two days in the fleet's zone),
the track drawn with start and end, the player (play, pause, speed) moving the marker along
the track, the speed chart over the whole range (a click on it moves the marker), and the stops
and trips listed.

The stops/trips and the limit line need helper "geo"'s additions to the track response
(``stops``, ``trips``, ``limit_kmh``, CONTRACTS.md): that test is skipped until the track of this
tree's API carries them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from fleet.batch import PositionBatch
from tests.web.pagekit import ARTIFACTS, PASSWORD, Served, serve, wait_js
from tests.web.viewkit import log_in_as, open_page

pytestmark = pytest.mark.browser

SH = ZoneInfo("Asia/Shanghai")
V = 1  # V00001, 川X00001, 武胜县


def midnight() -> int:
    """00:00 of yesterday in the fleet's zone: the track crosses it."""
    day = dt.datetime.now(SH).date() - dt.timedelta(days=1)
    return int(dt.datetime.combine(day, dt.time(), SH).timestamp() * 1000)


def wall(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, SH).strftime("%Y-%m-%d %H:%M:%S")


async def two_day_track(served: Served) -> dict[str, Any]:
    """22:40–23:20 driving, 23:20–23:45 parked, 23:45–00:40 driving (100 km/h for 5 minutes),
    then parked: a point every 10 s while driving, every 30 s while parked."""
    m = midnight()
    seg: list[tuple[int, int, int, float]] = [
        (m - 80 * 60_000, m - 40 * 60_000, 10_000, 40.0),
        (m - 40 * 60_000, m - 15 * 60_000, 30_000, 0.0),
        (m - 15 * 60_000, m + 40 * 60_000, 10_000, 45.0),
        (m + 40 * 60_000, m + 60 * 60_000, 30_000, 0.0),
    ]
    ts_l, sp_l = [], []
    for a, b, step, kmh in seg:
        t = np.arange(a, b, step, dtype=np.int64)
        s = np.full(len(t), kmh, dtype=np.float32)
        if kmh == 45.0:
            s[(t >= m + 10 * 60_000) & (t < m + 15 * 60_000)] = 100.0
        ts_l.append(t)
        sp_l.append(s)
    ts, speed = np.concatenate(ts_l), np.concatenate(sp_l)
    # Distance along a line to the north-east: speed × time.
    dt_h = np.diff(ts, prepend=ts[0]) / 3_600_000
    km = np.cumsum(speed * dt_h)
    lat0, lon0 = 30.35, 106.29
    lat = lat0 + km / 111.0 * 0.7
    lon = lon0 + km / 96.0 * 0.7
    n = len(ts)
    batch = PositionBatch.from_columns(
        vehicle=np.full(n, V),
        ts=ts,
        lat=lat,
        lon=lon,
        speed=speed,
        heading=np.full(n, 45, dtype=np.int16),
        acc=speed > 0,
    )
    assert served.ctx.history is not None
    await served.ctx.history.write_positions(batch)
    return {"m": m, "n": n, "from": m - 2 * 3_600_000, "to": m + 2 * 3_600_000}


async def pick_vehicle_and_range(page: Any, frm: int, to: int) -> None:
    await page.locator("#pb-vehicle").click()
    await page.keyboard.type("X00001")
    await page.locator(".el-select-dropdown__item", has_text="川X00001").first.click()
    inputs = page.locator(".pb-range .range-input input")
    await inputs.nth(0).fill(wall(frm))
    await inputs.nth(1).fill(wall(to))
    await inputs.nth(1).press("Enter")
    await page.locator(".pb-side h4").first.click()  # close the picker
    await page.click("#pb-load")


async def test_playback_across_midnight(chromium: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=10) as served, open_page(chromium) as page:
        tr = await two_day_track(served)
        await log_in_as(page, served.url, "op")
        await page.goto(served.url + "/#/playback")
        await page.wait_for_selector("#pb-map")
        await pick_vehicle_and_range(page, tr["from"], tr["to"])
        await wait_js(
            page, f"window.fw.playback && window.fw.playback.points() === {tr['n']}", timeout=15_000
        )

        # The query is the typed range, in the fleet's zone, across two days.
        clock = await page.evaluate("window.fw.playback.clock()")
        assert (clock["from"], clock["to"]) == (tr["from"], tr["to"])
        assert "川X00001" in await page.locator("#pb-summary").inner_text()
        # Track, start and end pins drawn; the chart spans the range.
        assert await page.locator(".pb-pin.pb-start").count() == 1
        assert await page.locator(".pb-pin.pb-end").count() == 1
        assert await page.evaluate("window.fw.playback.linePoints()") == tr["n"]
        assert await page.evaluate("window.fw.playback.chartDrawn()")
        assert await page.locator("#pb-chart canvas").count() >= 1

        # Play at 900×: the marker moves along the track and the clock with it; pause holds.
        start = await page.evaluate("window.fw.playback.marker()")
        await page.locator(".pb-opt .el-select").click()
        await page.locator(".el-select-dropdown__item", has_text="900×").click()
        await page.click("#pb-play")
        await page.wait_for_timeout(1_500)
        await page.click("#pb-play")
        c1 = await page.evaluate("window.fw.playback.clock()")
        assert not c1["playing"] and c1["speed"] == 900
        moved = await page.evaluate("window.fw.playback.marker()")
        assert moved != start and moved[0] > start[0]
        # ~1.5 s × 900 = ~22 minutes of track (generously bounded for a loaded machine)
        assert 5 * 60_000 < c1["t"] - (tr["m"] - 80 * 60_000) < 90 * 60_000
        await page.wait_for_timeout(500)
        assert (await page.evaluate("window.fw.playback.clock()"))["t"] == c1["t"]

        # A click at 3/4 of the chart's width moves the marker to about 3/4 of the range.
        box = await page.locator("#pb-chart").bounding_box()
        grid_left, grid_right = 48, 24  # speedChart.ts grid
        x = box["x"] + grid_left + 0.75 * (box["width"] - grid_left - grid_right)
        await page.mouse.click(x, box["y"] + box["height"] / 2)
        c2 = await page.evaluate("window.fw.playback.clock()")
        want = tr["from"] + 0.75 * (tr["to"] - tr["from"])
        assert abs(c2["t"] - want) < 0.02 * (tr["to"] - tr["from"])
        shown = await page.locator("#pb-time").inner_text()
        assert shown.endswith(wall(int(c2["t"])))  # in the fleet's zone
        await page.screenshot(path=str(ARTIFACTS / "page-playback.png"))
        assert page.errors == []


async def test_stops_and_trips_of_a_two_day_range(chromium: Any, tmp_path: Path) -> None:
    """Needs helper "geo"'s stops/trips/limit_kmh in the track response (CONTRACTS.md)."""
    async with serve(tmp_path, n=10) as served:
        tr = await two_day_track(served)
        async with httpx.AsyncClient() as client:
            login = await client.post(
                served.url + "/api/login", json={"username": "op", "password": PASSWORD}
            )
            token = login.json()["token"]
            body = (
                await client.get(
                    f"{served.url}/api/vehicles/V00001/track",
                    params={"from": tr["from"], "to": tr["to"]},
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
        if "stops" not in body:
            pytest.skip("this tree's track has no stops/trips yet (helper geo, CONTRACTS.md)")
        async with open_page(chromium) as page:
            await log_in_as(page, served.url, "op")
            await page.goto(
                f"{served.url}/#/playback?vehicle=V00001&from={tr['from']}&to={tr['to']}"
            )
            await wait_js(
                page,
                f"window.fw.playback && window.fw.playback.points() === {tr['n']}",
                timeout=15_000,
            )
            m = tr["m"]
            # The 25-minute stop before midnight, listed with its start in the fleet's zone.
            assert len(body["stops"]) >= 1 and len(body["trips"]) >= 2
            stops = page.locator("#pb-stops li.pb-stop")
            assert await stops.count() == len(body["stops"])
            first = await stops.first.inner_text()
            # 23:20 of the day before (the server may start it at the arrival point, 10 s ahead)
            assert abs(body["stops"][0]["start"] - (m - 40 * 60_000)) <= 60_000
            assert first.startswith(wall(body["stops"][0]["start"]))  # in the fleet's zone
            assert await page.locator("#pb-trips li.pb-trip").count() == len(body["trips"])
            # A click on the stop moves the marker to it.
            await stops.first.click()
            c = await page.evaluate("window.fw.playback.clock()")
            assert c["t"] == body["stops"][0]["start"]
            pos = await page.evaluate("window.fw.playback.marker()")
            assert abs(pos[0] - body["stops"][0]["lat"]) < 1e-3
            await page.screenshot(path=str(ARTIFACTS / "page-playback-stops.png"))
            assert page.errors == []
