"""Switching views fast: 监控 ↔ 轨迹回放 ↔ 大屏 many times, also while the playback view's
boundaries and track are still loading. A continuation that finishes after its view's map was
removed (map.remove() on unmount) used to add the district boundaries to the dead map —
Leaflet then throws ``Cannot read properties of undefined (reading 'appendChild')`` — and the
track's continuation rewrote the query of whatever view was open by then.

The boundaries and track responses are held back for a moment (Playwright's request routing,
the server is the real one) so that the switch lands while they are in flight, as it does on a
loaded machine."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.web.pagekit import serve, wait_js
from tests.web.viewkit import log_in_as, open_page

pytestmark = pytest.mark.browser

ROUNDS = 10
HOLD_S = 0.6  # how long a boundaries/track response is held back


async def _held(route: Any) -> None:
    await asyncio.sleep(HOLD_S)
    with contextlib.suppress(Exception):  # the page went away meanwhile: nothing to continue
        await route.continue_()


async def _nav(page: Any, name: str, path: str) -> None:
    await page.locator(f"[data-nav={name}]").first.click()
    await wait_js(page, f"location.hash.startsWith('#{path}')", timeout=5_000)


async def test_switching_views_while_loading_raises_nothing(chromium: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=20) as served, open_page(chromium) as page:
        console_errors: list[str] = []
        page.on(
            "console",
            lambda m: console_errors.append(m.text) if m.type == "error" else None,
        )
        await page.route("**/api/geo/boundaries", _held)
        await page.route("**/api/vehicles/*/track*", _held)
        await log_in_as(page, served.url, "op")
        await wait_js(page, "document.querySelector('#conn').classList.contains('up')")

        for i in range(ROUNDS):
            # from the vehicle's detail to its playback, and straight back while it loads
            await _nav(page, "monitor", "/monitor")
            await page.evaluate("document.querySelector('[data-tab=vehicles]').click()")
            await page.locator("#vehicle-list li.vehicle").first.click()
            await page.wait_for_selector("#playback-open")
            await page.click("#playback-open")
            await wait_js(page, "location.hash.startsWith('#/playback?vehicle=')", timeout=5_000)
            await _nav(page, "monitor", "/monitor")
            await page.locator(".lang-switch").click()
            # the held track arrives while 监控 is open: it must not touch 监控's address
            await asyncio.sleep(HOLD_S + 0.2)
            assert page.errors == [], i
            assert "vehicle=" not in await page.evaluate("location.hash"), i
            # playback via the menu, then 大屏 before its loads are back, then 监控
            await _nav(page, "playback", "/playback")
            await _nav(page, "board", "/board")
            await _nav(page, "monitor", "/monitor")
            await page.locator(".lang-switch").click()

        await asyncio.sleep(HOLD_S + 0.2)  # the last held responses arrive
        assert page.errors == []
        assert [e for e in console_errors if "appendChild" in e or "Uncaught" in e] == []
