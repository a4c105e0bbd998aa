"""Screenshots of every view of the application, for docs/screenshots/ (``make screenshots``).

Starts ``fleetwatch demo`` (2,000 simulated vehicles), logs in as the demo user in headless
Debian chromium and photographs each view; then the English monitor, the connection banner
(the demo is stopped under the page) and the session banner (the login is revoked).

    python -m web.screenshots docs/screenshots
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from web.bench import CHROMIUM, CHROMIUM_ARGS, _wait_feed_full, start_demo, wait_js

__all__ = ["main"]

VEHICLES = 2_000
# (file name, route, what to wait for)
VIEWS: list[tuple[str, str, str]] = [
    ("02-alarm-history", "/alarms", "[data-view=alarms], .alarm-history"),
    ("03-playback", "/playback", "[data-view=playback], .playback"),
    ("04-board", "/board", "[data-view=board], .board-view"),
    ("05-vehicles-slot", "/vehicles", "[data-slot=vehicles]"),
    ("06-system-users", "/system/users", "[data-view=users], .system-users"),
    ("07-system-fences", "/system/fences", "[data-view=fences], .system-fences"),
    ("08-system-dead-letters", "/system/dead-letters", "[data-view=deadLetters], .system-dead"),
    ("09-system-audit", "/system/audit", "[data-view=audit], .system-audit"),
]


async def _can_log_in(base: str, user: str) -> bool:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            base + "/api/login", json={"username": user, "password": "demo"}, timeout=10
        )
    return r.status_code == 200


async def _shoot(port: int, out: Path) -> list[str]:
    from playwright.async_api import async_playwright

    shots: list[str] = []
    base = f"http://127.0.0.1:{port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})

            async def shot(name: str) -> None:
                await page.wait_for_timeout(800)
                path = out / f"{name}.png"
                await page.screenshot(path=str(path))
                shots.append(str(path))

            await page.goto(base + "/")
            await page.wait_for_selector("#login-form")
            await shot("00-login")
            # an administrator sees every view; the demo has one when it ships one
            user = "admin" if await _can_log_in(base, "admin") else "demo"
            await page.fill("#login-user", user)
            await page.fill("#login-pass", "demo")
            await page.click("#login-submit")
            await wait_js(page, "window.fw && window.fw.map.indexed > 0")
            await page.wait_for_selector("#alarm-list li", timeout=60_000)
            vehicle = await page.evaluate("window.fw.alarmIds()[0].split(':')[0]")
            await shot("01-monitor")
            # street zoom over the first alarm: plates, headings, the pulsing alarm marker
            await page.locator("#alarm-list li .locate-btn").first.click()
            await page.wait_for_selector("#detail")
            await page.wait_for_timeout(1_200)
            await shot("01b-monitor-street")
            for name, route, selector in VIEWS:
                if route == "/playback":
                    route = f"/playback?vehicle={vehicle}"
                await page.goto(f"{base}/#{route}")
                await page.wait_for_timeout(300)
                if not await page.evaluate("r => location.hash.startsWith('#' + r)", route):
                    # the router sent this role elsewhere: no picture of a view it cannot open
                    logging.warning("%s: not open to %s, skipped", route, user)
                    (out / f"{name}.png").unlink(missing_ok=True)
                    continue
                try:
                    await page.wait_for_selector(selector, timeout=10_000)
                except Exception:  # a missing view is photographed as it is
                    logging.warning("%s: %s did not appear", route, selector)
                if route.startswith("/playback"):
                    query = page.get_by_role("button", name="查询轨迹")
                    if await query.count():
                        await query.first.click()
                        await page.wait_for_timeout(2_000)
                await shot(name)
            await page.goto(f"{base}/#/monitor")
            await page.wait_for_selector("#map")
            await page.locator("header .lang-switch").click()
            await shot("10-monitor-english")
            await page.locator("header .lang-switch").click()
            token = await page.evaluate("sessionStorage.getItem('fw.token')")
            async with httpx.AsyncClient() as client:
                await client.post(
                    base + "/api/logout", headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
            await page.wait_for_selector("#session-banner", timeout=20_000)
            await shot("11-session-expired")
        finally:
            await browser.close()
    return shots


async def _connection_banner(port: int, out: Path, stop_demo: Any) -> str:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.fill("#login-user", "demo")
            await page.fill("#login-pass", "demo")
            await page.click("#login-submit")
            await wait_js(page, "window.fw && window.fw.map.indexed > 0")
            await page.wait_for_timeout(1_000)
            stop_demo()
            await page.wait_for_selector("#connection-banner", timeout=10_000)
            await page.wait_for_timeout(1_500)
            path = out / "12-connection-lost.png"
            await page.screenshot(path=str(path))
        finally:
            await browser.close()
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="fw-shots-") as tmp:
        proc, port = start_demo(VEHICLES, tmp)
        try:
            _wait_feed_full(port, VEHICLES, 120)
            shots = asyncio.run(_shoot(port, out))
            shots.append(asyncio.run(_connection_banner(port, out, proc.terminate)))
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
    for s in shots:
        print(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
