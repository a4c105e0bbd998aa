"""The shell and the monitor at the sizes people use, in Debian's chromium against a real
uvicorn: a phone (390×844) opens the monitor without a page error (Leaflet once threw
"Invalid LatLng (NaN, NaN)" on a map of no width), and a 1400 px window with a long login
name and every menu still shows 退出 inside the window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.pagekit import ARTIFACTS, PASSWORD, serve, wait_js
from tests.web.viewkit import log_in_as, open_page

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LONG = "chuzhang_of_the_yuechi_county_office"


async def test_monitor_on_a_phone_throws_nothing(chromium: Any, tmp_path: Path) -> None:
    async with (
        serve(tmp_path, n=40) as served,
        open_page(chromium, viewport=PHONE, is_mobile=True, has_touch=True) as page,
    ):
        await log_in_as(page, served.url, "op")
        await page.wait_for_selector("#map.leaflet-container")
        await wait_js(page, "window.fw && window.fw.markerCount() === 40")
        await page.wait_for_timeout(1500)  # the fit to the fleet, the tiles, a feed tick
        # The map is there and has a size on a phone (stacked under the desk).
        box = await page.locator("#map").bounding_box()
        assert box and box["width"] >= 300 and box["height"] >= 200, box
        # Nothing sticks out sideways.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        await page.click('[data-tab="vehicles"]')
        await page.locator("#vehicle-list li.vehicle").first.click()
        await page.wait_for_timeout(800)  # the fly to the vehicle
        await page.screenshot(path=str(ARTIFACTS / "page-monitor-phone.png"))
        assert page.errors == []


async def test_logout_stays_in_a_1400_px_window_with_a_long_name(
    chromium: Any, tmp_path: Path
) -> None:
    users = [
        {
            "username": LONG,
            "password": PASSWORD,
            "org": "yuechi",
            "role": "admin",
            "duties": ["requester", "approver", "dispatcher"],
        }
    ]
    async with serve(tmp_path, n=10, users=users) as served, open_page(chromium) as page:
        await log_in_as(page, served.url, LONG)
        await page.wait_for_selector("#logout")
        for lang in ("zh", "en"):
            box = await page.locator("#logout").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1400, (lang, box)
            assert await page.locator("#logout").is_visible()
            # The bar keeps its height (no second line over the view) and its menu whole.
            bar = await page.locator(".topbar").bounding_box()
            assert bar and bar["height"] <= 52, bar
            assert await page.evaluate("document.documentElement.scrollWidth") <= 1400
            # The name is there, cut short if it must, and whole in its tooltip.
            assert LONG in (await page.locator("#who").get_attribute("title") or "")
            await page.screenshot(path=str(ARTIFACTS / f"page-topbar-1400-{lang}.png"))
            await page.click(".lang-switch")
            await page.wait_for_timeout(200)
        await page.click("#logout")
        await page.wait_for_selector("#login-user")
        assert page.errors == []
