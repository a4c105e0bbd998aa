"""Screenshots of every view of the application, for docs/screenshots/ (``make screenshots``).

Starts ``fleetwatch demo`` (2,000 simulated vehicles), logs in as the demo user in headless
Debian chromium and photographs each view; then the English monitor, the session banner (the
login is revoked); then 派车 (two requests made through the API, one approved and dispatched),
报表 at city and county level, 一图可览 and its 大屏, 运行费用 (a month of supplier rows
imported) and the monitor on a phone; last the connection banner (the demo is stopped under
the page).

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
    ("05-vehicles", "/vehicles", "[data-view=vehicles]"),
    ("05b-drivers", "/drivers", "[data-view=drivers]"),
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


# -- 派车, 报表, 一图可览/大屏, 运行费用 (#16-#18): data the demo lacks, made through the API --

PHONE = {"width": 390, "height": 844}


async def _token(client: httpx.AsyncClient, base: str, user: str) -> str:
    r = await client.post(base + "/api/login", json={"username": user, "password": "demo"})
    r.raise_for_status()
    return str(r.json()["token"])


def _csv(rows: list[list[Any]]) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8")


async def _seed(base: str) -> dict[str, Any]:
    """Two requests of 岳池县农业农村局 (keyuan): one approved by 岳池县 (chuzhang) and dispatched
    by the city's dispatcher (demo) with one of the demo's drivers, one left pending; and a month
    of supplier rows (fuel, repair, toll, parking) for twenty vehicles. What came out."""
    import datetime as dt
    import time

    now = int(time.time() * 1000)
    hour = 3_600_000
    got: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as c:
        h = {
            u: {"Authorization": f"Bearer {await _token(c, base, u)}"}
            for u in ("keyuan", "chuzhang", "demo", "admin")
        }
        vehicles = (await c.get(base + "/api/vehicles", headers=h["admin"])).json()["vehicles"]
        orders = []
        for purpose, names, place, start in (
            (
                "到坪滩镇检查春耕备耕和农资供应",
                "张建国、李明、王芳",
                "岳池县坪滩镇人民政府",
                now + hour,
            ),
            ("赴酉溪镇开展高标准农田验收", "刘洋、陈静", "岳池县酉溪镇", now + 26 * hour),
        ):
            r = await c.post(
                base + "/api/orders",
                headers=h["keyuan"],
                json={
                    "purpose": purpose,
                    "passengers": len(names.split("、")),
                    "passenger_names": names,
                    "destination": {"kind": "place", "text": place, "place": place, "city": None},
                    "type": "local",
                    "start": start,
                    "end": start + 4 * hour,
                },
            )
            r.raise_for_status()
            orders.append(r.json())
        first = orders[0]
        org = first["org"]
        r = await c.post(
            f"{base}/api/orders/{first['id']}/approve",
            headers=h["chuzhang"],
            params={"org": org},
            json={},
        )
        r.raise_for_status()
        sug = (
            await c.get(
                base + "/api/orders/suggest",
                headers=h["demo"],
                params={"start": first["start"], "end": first["end"], "org": org},
            )
        ).json()
        free_v = [v for v in sug.get("vehicles", []) if v.get("free")]
        free_d = [d for d in sug.get("drivers", []) if d.get("free")]
        if free_v and free_d:
            r = await c.post(
                f"{base}/api/orders/{first['id']}/dispatch",
                headers=h["demo"],
                params={"org": org},
                json={"vehicle": free_v[0]["id"], "driver": free_d[0]["id"]},
            )
            if r.status_code != 200:
                logging.warning("dispatch: %s %s", r.status_code, r.text[:200])
        else:
            logging.warning(
                "dispatch: no free vehicle or driver (%s, %s)", len(free_v), len(free_d)
            )
        got["order"] = (org, first["id"])
        # 运行费用: this month's rows up to today for twenty vehicles.
        today = dt.date.today()
        days = [today.replace(day=d) for d in range(1, today.day + 1)]
        pick = vehicles[:20]
        fuel: list[list[Any]] = [
            ["车牌号", "加油卡号", "加油站", "交易时间", "加油量(升)", "油品", "金额(元)"]
        ]
        repair: list[list[Any]] = [
            ["车牌号", "维修厂", "维修日期", "维修项目", "材料费(元)", "工时费(元)", "金额(元)"]
        ]
        toll: list[list[Any]] = [["车牌号", "通行时间", "收费站", "金额(元)"]]
        park: list[list[Any]] = [["车牌号", "停车时间", "停车场", "金额(元)"]]
        for i, v in enumerate(pick):
            # a fuel row names a card the vehicle's record holds (costs.validate)
            r = await c.patch(
                f"{base}/api/vehicles/{v['vehicle']}",
                headers=h["admin"],
                json={"fuel_card": f"90001234{i:05d}", "fuel_tank_l": 60},
            )
            if r.status_code != 200:
                logging.warning("fuel card of %s: %s %s", v["plate"], r.status_code, r.text[:200])
            for j, d in enumerate(days[:: max(1, len(days) // 3)]):
                litres = 30 + (i * 7 + j * 3) % 25
                fuel.append(
                    [
                        v["plate"],
                        f"90001234{i:05d}",
                        "中石油广安城南加油站",
                        f"{d} 08:{10 + j:02d}:00",
                        litres,
                        "92#",
                        round(litres * 7.45, 2),
                    ]
                )
            if i % 4 == 0:
                repair.append(
                    [
                        v["plate"],
                        "广安市定点维修中心",
                        str(days[-1]),
                        "更换机油、机滤",
                        380,
                        120,
                        500,
                    ]
                )
            toll.append([v["plate"], f"{days[0]} 10:20:00", "广安东收费站", 35 + i % 3 * 10])
            park.append([v["plate"], f"{days[-1]} 14:00:00", "市政务中心停车场", 10])
        for kind, rows in (("fuel", fuel), ("repair", repair), ("toll", toll), ("parking", park)):
            r = await c.post(
                base + "/api/costs/import",
                headers={**h["demo"], "Content-Type": "text/csv"},
                params={"kind": kind, "supplier": "default", "filename": f"{kind}.csv"},
                content=_csv(rows),
            )
            if r.status_code != 200:
                logging.warning("costs import %s: %s %s", kind, r.status_code, r.text[:300])
            else:
                logging.info("costs import %s: %s", kind, r.text[:300])
    return got


async def _shoot_new(port: int, out: Path) -> list[str]:
    """派车 (the request on a phone, 待审批, 调度台, the order, the printed 派车单), 报表 at the
    city and a county, 一图可览 and its 大屏, 运行费用, and the monitor on a phone."""
    from playwright.async_api import async_playwright

    base = f"http://127.0.0.1:{port}"
    try:
        seeded = await _seed(base)
    except Exception:
        logging.exception("seeding orders and costs failed; their pages show what there is")
        seeded = {}
    shots: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        async def as_user(user: str, viewport: Any = None, **kw: Any) -> Any:
            size: Any = viewport or {"width": 1600, "height": 900}
            page = await browser.new_page(viewport=size, **kw)
            page.on("pageerror", lambda e: logging.warning("page error (%s): %s", user, e))
            await page.goto(base + "/")
            await page.fill("#login-user", user)
            await page.fill("#login-pass", "demo")
            await page.click("#login-submit")
            await page.wait_for_selector("#main")
            return page

        async def view(
            page: Any, name: str, route: str, selector: str, wait_ms: int = 1_000
        ) -> None:
            await page.goto(f"{base}/#{route}")
            try:
                await page.wait_for_selector(selector, timeout=15_000)
            except Exception:
                logging.warning("%s: %s did not appear", route, selector)
            await page.wait_for_timeout(wait_ms)
            path = out / f"{name}.png"
            await page.screenshot(path=str(path))
            shots.append(str(path))

        try:
            phone = await as_user("keyuan", PHONE, is_mobile=True, has_touch=True)
            await view(phone, "13-order-request-phone", "/dispatch/request", "form, .order-request")
            await view(phone, "13b-monitor-phone", "/monitor", "#map.leaflet-container", 2_000)
            await phone.close()
            head = await as_user("chuzhang")
            await view(head, "14-order-inbox", "/dispatch/inbox", "[data-view=orderInbox]")
            await head.close()
            disp = await as_user("demo")
            await view(disp, "15-dispatch-board", "/dispatch/board", ".el-table__row, [data-view]")
            if "order" in seeded:
                org, oid = seeded["order"]
                await view(
                    disp,
                    "16-order-detail",
                    f"/dispatch/order/{org}/{oid}",
                    "[data-view], .order-detail",
                )
                await view(
                    disp,
                    "17-order-print",
                    f"/dispatch/order/{org}/{oid}/print",
                    ".print, [data-view]",
                )
            await disp.close()
            adm = await as_user("admin")
            await view(
                adm,
                "18-reports-city",
                "/reports?report=violations",
                "#reports-table .el-table__row",
                2_000,
            )
            await view(
                adm,
                "19-reports-county",
                "/reports?report=violations&org=ga-ws",
                "#reports-table .el-table__row",
                2_000,
            )
            await view(adm, "20-costs", "/costs", "[data-view=costs]", 2_000)
            await adm.set_viewport_size({"width": 1600, "height": 1400})
            await view(adm, "04b-board-full", "/board", "[data-view=board]", 2_500)
            await adm.close()
            wall = await as_user("admin", {"width": 1920, "height": 1080})
            await view(wall, "04c-board-screen", "/board?screen=1", ".board.screen", 3_000)
            await wall.close()
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
            shots += asyncio.run(_shoot_new(port, out))
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
