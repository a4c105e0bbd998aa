"""The page in Debian's chromium (Playwright), against a real uvicorn server on 127.0.0.1.

The app is built from real in-memory parts: FeedCore, SQLite history, LiveFences.
Screenshots go to artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from fleet.batch import PositionBatch
from fleet.events import AlarmEvent
from fleet.registry import Registry
from fleetwatch.config import parse_config
from stream.feed import FeedCore
from tests.web.pagekit import wait_js
from web.app import create_app
from web.context import AppContext

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
N = 2000
PASSWORD = "browser test pw"
XSS = "<img src=x onerror=window.__pwned=1>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp: Path, port: int) -> Any:
    orgs = [
        {"id": "city", "name": "广安市"},
        {"id": "wusheng", "name": "武胜县", "parent": "city"},
        {"id": "yuechi", "name": "岳池县", "parent": "city"},
    ]
    vehicles = [
        {
            "id": f"V{i:05d}",
            "plate": f"川X{i:05d}",
            "terminal": f"1{i:010d}",
            "org": "wusheng" if i % 2 else "yuechi",
        }
        for i in range(N)
    ]
    vehicles[1]["plate"] = XSS[:16]
    return parse_config(
        {
            "store": {"kind": "sqlite", "sqlite_path": str(tmp / "h.db")},
            "orgs": orgs,
            "vehicles": vehicles,
            "web": {
                "port": port,
                "feed_interval_ms": 200,
                "tiles": [{"name": "none", "url": ""}],
                "establishment": {"wusheng": 1000, "yuechi": 1000},
                "users": [
                    {"username": "op", "password": PASSWORD, "org": "city", "role": "operator"},
                    {"username": "ws", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
                ],
            },
        },
        source=str(tmp / "fw.toml"),
    )


@contextlib.asynccontextmanager
async def serve(tmp: Path) -> AsyncIterator[tuple[str, AppContext]]:
    from shapely.geometry import box

    from geofence.fence import Fence
    from geofence.index import LiveFences
    from store.sqlite import SQLiteHistory

    port = free_port()
    cfg = config(tmp, port)
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    fences = LiveFences(
        [
            Fence.polygon(
                id="f1",
                name=XSS,
                org="wusheng",
                use="forbidden",
                geometry=box(106.60, 30.43, 106.66, 30.48),
            )
        ]
    )
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=cfg.web.feed_interval_ms),
        history=history,
        fences=fences,
    )
    now = int(time.time() * 1000)
    rng = np.random.default_rng(1)
    ctx.feed.positions(
        PositionBatch.from_columns(
            vehicle=np.arange(N),
            ts=np.full(N, now),
            lat=30.456 + rng.normal(0, 0.05, N),
            lon=106.633 + rng.normal(0, 0.05, N),
            speed=rng.uniform(0, 80, N).astype(np.float32),
            acc=np.ones(N, dtype=bool),
        )
    )
    # a route for playback: vehicle 0 earlier today
    k = 120
    await history.write_positions(
        PositionBatch.from_columns(
            vehicle=np.zeros(k, dtype=np.int32),
            ts=now - 3_600_000 + np.arange(k) * 20_000,
            lat=30.40 + np.linspace(0, 0.05, k),
            lon=106.60 + np.sin(np.linspace(0, 3, k)) * 0.02,
            speed=(40 + 30 * np.sin(np.linspace(0, 6, k))).astype(np.float32),
            acc=np.ones(k, dtype=bool),
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx),
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", ctx
    finally:
        server.should_exit = True
        await task
        await history.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    if not (ROOT / "web/static/app/index.html").exists():
        pytest.fail("the page is not built: make assets")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        await b.close()


async def log_in(page: Any, url: str, user: str) -> None:
    await page.goto(url + "/")
    await page.fill("#login-user", user)
    await page.fill("#login-pass", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#main:not(.hidden)")


async def test_monitoring_room(browser: Any, tmp_path: Path) -> None:
    async with serve(tmp_path) as (url, ctx):
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await log_in(page, url, "op")
        # markers appear: every vehicle of the snapshot is on the map
        await wait_js(page, f"window.fw.markerCount() === {N}", timeout=10_000)
        await wait_js(page, "document.querySelector('#conn').classList.contains('up')")
        await page.screenshot(path=str(ARTIFACTS / "web-map.png"))

        # an alarm pushed into the feed reaches the desk within 3 s
        v = 2
        ev = AlarmEvent(
            id=f"V{v:05d}:speeding:1",
            vehicle=v,
            vehicle_id=f"V{v:05d}",
            kind="speeding",
            action="open",
            started_at=int(time.time() * 1000),
            ts=int(time.time() * 1000),
            lat=30.45,
            lon=106.63,
            detail={"speed": 97.0},
        )
        await ctx.history.write_alarm_events([ev])
        t0 = time.monotonic()
        ctx.feed.alarm(ev)
        item = page.locator(f'#alarm-list li[data-id="{ev.id}"]')
        await item.wait_for(timeout=3_000)
        assert time.monotonic() - t0 < 3.0
        assert "blink" in (await item.get_attribute("class") or "")
        await page.screenshot(path=str(ARTIFACTS / "web-alarm.png"))

        # acknowledge with a note containing markup: shown as text, audited
        await item.locator(".ack-btn").click()
        await page.fill("#ack-note", "<b>已联系</b> driver")
        await page.check("#ack-handled")
        await page.click("#ack-submit")
        await wait_js(
            page,
            f"!document.querySelector('#alarm-list li[data-id=\"{ev.id}\"]').classList"
            ".contains('blink')",
            timeout=3_000,
        )
        note = await item.locator(".ack-note").text_content()
        assert note is not None and "<b>已联系</b> driver" in note
        entries = await ctx_audit(ctx)
        assert ("op", "alarm.handle", ev.id) in entries

        # markup in plates and fence names renders as text
        assert await page.evaluate("window.__pwned === undefined")
        assert await page.locator("#alarm-list b").count() >= 1

        # vehicle detail, and from it the playback view of that vehicle (the playback view's
        # own tests drive the route and the speed chart)
        await page.evaluate("document.querySelector('[data-tab=vehicles]').click()")
        await page.fill("#plate-search", "川X00000")
        await page.locator("#vehicle-list li.vehicle").first.click()
        await page.wait_for_selector("#detail")
        assert await page.locator("#detail-plate").text_content() == "川X00000"
        await page.click("#playback-open")
        await wait_js(page, "location.hash.startsWith('#/playback?vehicle=V00000')")
        await page.evaluate("document.querySelector('[data-nav=monitor]').click()")
        await page.wait_for_selector("#alarm-list", state="attached")

        # English switch
        await page.locator("header .lang-switch").click()
        assert await page.locator("[data-tab=vehicles]").text_content() == "Vehicles"
        assert errors == []
        await page.close()


async def ctx_audit(ctx: AppContext) -> list[tuple[str, str, str]]:
    from web.accounts import Accounts

    acc = Accounts(ctx.config, ctx.clock_ms)
    await acc.open()
    try:
        orgs = ctx.registry.orgs.subtree("city")
        return [(e["actor"], e["action"], e["target"]) for e in await acc.audit_log(orgs)]
    finally:
        await acc.close()


async def test_county_viewer_page_sees_only_its_county(browser: Any, tmp_path: Path) -> None:
    async with serve(tmp_path) as (url, _ctx):
        page = await browser.new_page()
        await log_in(page, url, "ws")
        await wait_js(page, f"window.fw.markerCount() === {N // 2}", timeout=10_000)
        orgs = await page.evaluate("window.fw.vehicleOrgs()")
        assert set(orgs) == {"wusheng"}
        assert await page.locator(".ack-btn").count() == 0
        await page.close()
