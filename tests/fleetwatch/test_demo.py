"""``fleetwatch demo`` starts from nothing, serves the page and feeds moving vehicles."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from tests.web.pagekit import wait_js
from web.bench import start_demo as bench_start_demo

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parents[2] / "artifacts"
# vehicle id -> [lat, lon] of every vehicle the map draws, read through the page's own hook.
_POSITIONS_JS = "window.fw.positions()"


def start_demo(tmp_path: Path, vehicles: int = 50) -> tuple[subprocess.Popen[bytes], int]:
    """The demo as a user starts it (the page bench's starter), its output kept for the test."""
    return bench_start_demo(vehicles, str(tmp_path), duration_s=120, startup_s=30, capture=True)


def stop_demo(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return out.decode(errors="replace")


@pytest.mark.browser
async def test_demo_shows_moving_vehicles_in_chromium(tmp_path, chromium) -> None:
    proc, port = start_demo(tmp_path, vehicles=200)
    try:
        page = await chromium.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        started = time.monotonic()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.fill("#login-user", "demo")
        await page.fill("#login-pass", "demo")
        await page.click("#login-submit")
        await page.wait_for_selector("#main:not(.hidden)")
        await wait_js(page, "window.fw.markerCount() >= 100", timeout=30_000)
        first = await page.evaluate(_POSITIONS_JS)
        await wait_js(
            page,
            "(a) => { const b = " + _POSITIONS_JS + "; return Object.keys(b).filter("
            "k => a[k] && (a[k][0] !== b[k][0] || a[k][1] !== b[k][1])).length >= 5; }",
            arg=first,
            timeout=30_000,
        )
        assert time.monotonic() - started < 30
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo-map.png"))
        assert errors == []
    finally:
        out = stop_demo(proc)
    assert proc.returncode == 0, out[-3000:]


def test_demo_serves_page_and_moving_vehicles(tmp_path) -> None:
    proc, port = start_demo(tmp_path)
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and '<div id="app">' in page.text
        # the built application's scripts are served from this server, not a CDN
        scripts = re.findall(r'src="(/static/app/assets/[^"]+\.js)"', page.text)
        assert scripts
        for src in scripts:
            asset = httpx.get(f"http://127.0.0.1:{port}{src}", timeout=5)
            assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]

        async def watch() -> set[str]:
            seen: dict[str, tuple[float, float]] = {}
            moved: set[str] = set()
            url = f"ws://127.0.0.1:{port}/ws/live?token=demo-room-token"
            async with websockets.connect(url) as ws:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(moved) < 5:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                    items = frame.get("vehicles", []) + frame.get("items", [])
                    for it in items:
                        pos = (it["lat"], it["lon"])
                        if it["vehicle"] in seen and seen[it["vehicle"]] != pos:
                            moved.add(it["vehicle"])
                        seen[it["vehicle"]] = pos
            return moved

        moved = asyncio.run(watch())
        assert len(moved) >= 5, "vehicles should move on the live feed within 30 s"
    finally:
        out = stop_demo(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "open http://127.0.0.1" in out


def test_demo_can_dispatch_its_approved_orders(tmp_path) -> None:
    """The demo seeds drivers (with licence numbers) and two approved orders: the
    dispatcher (demo) sees them and /api/orders/suggest lists free drivers for them; a
    second start on the same data adds nothing twice."""
    from simulator.scenario import DEMO_DRIVERS

    for _ in range(2):
        proc, port = start_demo(tmp_path)
        try:
            base = f"http://127.0.0.1:{port}"
            r = httpx.post(
                f"{base}/api/login", json={"username": "demo", "password": "demo"}, timeout=5
            )
            assert r.status_code == 200, r.text
            h = {"Authorization": f"Bearer {r.json()['token']}"}
            orders = httpx.get(f"{base}/api/orders?state=approved", headers=h, timeout=5).json()
            demo = [o for o in orders["orders"] if o["id"].startswith("DEMO-")]
            assert len(demo) == 2, orders
            assert all(o["approved"] and o["vehicle"] is None for o in demo)
            o = next(o for o in demo if o["org"] == "ga")
            r = httpx.get(
                f"{base}/api/orders/suggest",
                params={"start": o["start"], "end": o["end"], "org": o["org"]},
                headers=h,
                timeout=10,
            )
            assert r.status_code == 200, r.text
            sug = r.json()
            free = [d for d in sug["drivers"] if d["free"]]
            assert {d["id"] for d in sug["drivers"]} == {d[0] for d in DEMO_DRIVERS}
            assert len(free) == len(DEMO_DRIVERS) and free[0]["org"] == "ga"
            # The board has an 编制数 from the first minute: every unit's cars, one unit
            # two short (超编) — the same figure as the quota report's.
            board = httpx.get(f"{base}/api/board/summary", headers=h, timeout=30).json()
            assert board["actual"] > 0 and board["quota"] == board["actual"] - 2, board
            quota = httpx.get(f"{base}/api/reports/quota", headers=h, timeout=30).json()
            assert quota["totals"]["authorised"] == board["quota"], quota["totals"]
            assert any(v["free"] for v in sug["vehicles"])
            body = httpx.get(f"{base}/api/drivers", headers=h, timeout=5).json()
            assert body["total"] == len(DEMO_DRIVERS)  # not seeded twice
            want = {d[0]: d[3] for d in DEMO_DRIVERS}
            assert {d["id"]: d["licence_no"] for d in body["drivers"]} == want
        finally:
            out = stop_demo(proc)
        assert proc.returncode == 0, out[-3000:]
