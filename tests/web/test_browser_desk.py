"""The monitoring desk in Debian's chromium, as the night shift uses it: every alarm kind
acknowledged and closed from the desk, critical alarms on top with their own tone, the reminder
that repeats until acknowledged, the session and connection banners, the base map without
tiles, and clustering at 10,000 vehicles. Real uvicorn, real feed, real SQLite history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from notify.message import KIND_NAMES
from rules.events import KINDS
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.pagekit import (
    ARTIFACTS,
    CENTRES,
    alarm_event,
    has_route,
    log_in,
    require_built_page,
    revoke,
    serve,
    tones,
    wait_js,
)
from web.accounts import Accounts

pytestmark = pytest.mark.browser

# What each kind carries in its detail, as the rules put it (CONTRACTS.md "Alarm objects").
DETAILS: dict[str, tuple[str | None, str, dict[str, Any]]] = {
    "speeding": (None, "warning", {"max_speed_kmh": 103.0, "limit_kmh": 80.0}),
    "off_hours": (None, "warning", {}),
    "out_of_area": (None, "warning", {"fence_name": "广安市界"}),
    "forbidden_zone": (None, "warning", {"fence_name": "某KTV"}),
    "parking_violation": (None, "info", {}),
    "offline": (None, "warning", {}),
    "terminal_alarm": ("sos", "critical", {"bit": 0, "name": "sos"}),
    "fatigue": (None, "warning", {}),
    "sealed_moving": (None, "critical", {"speed_kmh": 12.0, "acc": True}),
    "record_due": (
        None,
        "info",
        {"kind": "insurance", "text": "川X00001 保险将于 2026-12-20 到期"},
    ),
    # 派车 (#16): the rules' order checks
    "no_order": (None, "warning", {}),
    "order_mismatch": (None, "warning", {"reason": "region", "order": "o-1"}),
    "driver_mismatch": (
        None,
        "warning",
        {"driver": "D999", "order_driver": "D001", "order": "o-1"},
    ),
    # 运行费用 (#18): the checks of the supplier rows against the tracks (web/costs_api.py)
    **{
        k: (
            None,
            "warning",
            {
                "name": KIND_NAMES[k],
                "text": f"川X00001 {KIND_NAMES[k]}",
                "cost_kind": "fuel",
                "amount": 318.75,
            },
        )
        for k in KINDS
        if k.startswith("cost_")
    },
}


@pytest.fixture
async def page_of(chromium: Any) -> Any:
    require_built_page()
    pages: list[Any] = []

    async def new(**kw: Any) -> Any:
        p = await chromium.new_page(viewport={"width": 1400, "height": 900}, **kw)
        p.errors = []
        p.on("pageerror", lambda e: p.errors.append(str(e)))
        pages.append(p)
        return p

    yield new
    for p in pages:
        await p.close()


async def audit_of(served: Any) -> list[tuple[str, str, str]]:
    acc = Accounts(served.ctx.config, served.ctx.clock_ms)
    await acc.open()
    try:
        orgs = served.ctx.registry.orgs.subtree("city")
        return [(e["actor"], e["action"], e["target"]) for e in await acc.audit_log(orgs)]
    finally:
        await acc.close()


def card(page: Any, alarm_id: str) -> Any:
    return page.locator(f'#alarm-list li[data-id="{alarm_id}"]')


async def test_every_kind_is_acknowledged_and_closed_from_the_desk(
    page_of: Any, tmp_path: Path
) -> None:
    assert set(DETAILS) == set(KINDS)  # a new kind must be added here, and tested
    async with serve(tmp_path, n=50) as served:
        page = await page_of()
        await log_in(page, served.url)
        assert await page.locator("#alarm-empty").text_content() == "暂无报警"
        events = {}
        for i, kind in enumerate(KINDS):
            sub, sev, detail = DETAILS[kind]
            ev = alarm_event(served, i + 1, kind, sub=sub, severity=sev, detail=detail)
            events[kind] = ev
            await served.record(ev)
        for ev in events.values():
            await card(page, ev.id).wait_for(timeout=5_000)
        assert await page.locator("#alarm-empty").count() == 0

        # the card says what the operator acts on
        speeding = card(page, events["speeding"].id)
        assert (await speeding.locator(".measured").text_content() or "").strip() == (
            "103 / 80 公里/小时"
        )
        assert await card(page, events["forbidden_zone"].id).locator(".fence").text_content() == (
            "某KTV"
        )
        sos = card(page, events["terminal_alarm"].id)
        assert "紧急报警" in (await sos.locator(".kind").text_content() or "")
        assert "紧急报警" in (await sos.locator(".bit").text_content() or "")
        assert "分钟" in (await speeding.locator(".duration").text_content() or "")
        place = (await speeding.locator(".place").text_content() or "").strip()
        lat, lon = CENTRES["wusheng"]
        if await has_route(served, "/api/geo/place"):
            assert place and place != f"{lat:.5f}, {lon:.5f}"
        else:  # no reverse geocoder in this tree: the coordinates, never an empty field
            assert place == f"{lat:.5f}, {lon:.5f}"
        await page.screenshot(path=str(ARTIFACTS / "desk-every-kind.png"))

        for kind, ev in events.items():
            c = card(page, ev.id)
            await c.locator(".ack-btn").click()
            await page.fill("#ack-note", f"已处理 {kind}")
            await page.click("#ack-submit")
            await wait_js(
                page,
                'id => !document.querySelector(`#alarm-list li[data-id="${id}"]`)'
                ".classList.contains('unacked')",
                arg=ev.id,
                timeout=5_000,
            )
            assert f"已处理 {kind}" in (await c.locator(".ack-note").first.text_content() or "")
            await c.locator(".close-btn").click()
            await page.fill("#ack-note", f"结束 {kind}")
            await page.click("#ack-submit")
            # closed and acknowledged: it leaves the desk
            await c.wait_for(state="detached", timeout=5_000)
        assert await page.locator("#alarm-empty").is_visible()

        stored = {a["id"]: a for a in await served.ctx.history.alarms()}
        audit = await audit_of(served)
        for kind, ev in events.items():
            assert stored[ev.id]["state"] == "closed", kind
            assert stored[ev.id]["ack"]["note"] == f"已处理 {kind}"
            assert ("op", "alarm.ack", ev.id) in audit
            assert ("op", "alarm.close", ev.id) in audit
        assert page.errors == []


async def test_critical_alarm_goes_on_top_with_its_own_tone(page_of: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=50) as served:
        page = await page_of()
        await log_in(page, served.url)
        warn = alarm_event(served, 3, "speeding", detail={"max_speed_kmh": 95, "limit_kmh": 80})
        await served.record(warn)
        await card(page, warn.id).wait_for(timeout=5_000)
        await wait_js(page, "window.fw.sound.played.length > 0")
        assert (await tones(page))[-1] == "warning"
        assert await page.title() == "（1）未确认报警 · 公务用车监控"

        later = int(time.time() * 1000) - 5_000
        for name, bit in (("sos", 0), ("collision", 29), ("rollover", 30)):
            sos = alarm_event(
                served,
                5 + bit,
                "terminal_alarm",
                sub=name,
                severity="critical",
                started_at=later - bit * 1000,
                detail={"bit": bit, "name": name},
            )
            await served.record(sos)
        await wait_js(page, "document.querySelectorAll('#alarm-list li').length === 4")
        sevs = await page.eval_on_selector_all(
            "#alarm-list li", "els => els.map(e => e.dataset.severity)"
        )
        assert sevs == ["critical", "critical", "critical", "warning"]
        first = await page.locator("#alarm-list li").first.locator(".kind").text_content()
        assert "紧急报警" in (first or "")  # the newest critical first: SOS
        await wait_js(page, "window.fw.sound.played.at(-1).tone === 'critical'")
        assert await page.title() == "（4）未确认报警 · 公务用车监控"
        # critical vehicles are drawn on top, in their own colour
        await page.wait_for_selector(".alarm-marker.sev-critical")
        await page.screenshot(path=str(ARTIFACTS / "desk-critical.png"))
        assert page.errors == []


async def test_reminder_repeats_until_acknowledged_not_until_closed(
    page_of: Any, tmp_path: Path
) -> None:
    async with serve(tmp_path, n=20) as served:
        page = await page_of()
        await log_in(page, served.url)
        ev = alarm_event(
            served, 2, "terminal_alarm", sub="sos", severity="critical", detail={"name": "sos"}
        )
        await served.record(ev)
        await card(page, ev.id).wait_for(timeout=5_000)
        # the episode ends by itself (a short one): the desk keeps sounding
        closed = alarm_event(
            served,
            2,
            "terminal_alarm",
            sub="sos",
            severity="critical",
            started_at=ev.started_at,
            action="close",
            detail={"name": "sos"},
        )
        await served.record(closed)
        await wait_js(
            page,
            f"document.querySelector('#alarm-list li[data-id=\"{ev.id}\"]').classList"
            ".contains('closed')",
        )
        n0 = (await tones(page)).count("critical")
        await page.wait_for_timeout(7_000)
        n1 = (await tones(page)).count("critical")
        assert n1 - n0 >= 2, "the reminder must repeat while the alarm is unacknowledged"
        await card(page, ev.id).locator(".ack-btn").click()
        await page.fill("#ack-note", "已联系驾驶员")
        await page.click("#ack-submit")
        await card(page, ev.id).wait_for(state="detached", timeout=5_000)
        n2 = (await tones(page)).count("critical")
        await page.wait_for_timeout(7_000)
        assert (await tones(page)).count("critical") == n2, "silent once acknowledged"
        assert await page.title() == "公务用车监控"
        assert page.errors == []


async def test_session_end_shows_the_banner_with_sound_never_the_login_page(
    page_of: Any, tmp_path: Path
) -> None:
    async with serve(tmp_path, n=20) as served:
        page = await page_of()
        await log_in(page, served.url)
        token = await page.evaluate("sessionStorage.getItem('fw.token')")
        # the session is revoked elsewhere (an admin, another tab logging out)
        await revoke(served, token)
        t0 = time.monotonic()
        await page.wait_for_selector("#session-banner", timeout=15_000)
        assert time.monotonic() - t0 < 12
        assert "会话已过期" in (await page.locator("#session-banner h1").text_content() or "")
        assert await page.locator("#login-form").count() == 0  # not a silent reload
        await wait_js(page, "window.fw.sound.played.some(p => p.tone === 'session')")
        await page.screenshot(path=str(ARTIFACTS / "banner-session.png"))
        await page.click("#session-relogin")
        await page.wait_for_selector("#login-form")
        assert page.errors == []


async def test_a_reload_with_an_ended_session_shows_the_banner(
    page_of: Any, tmp_path: Path
) -> None:
    async with serve(tmp_path, n=20) as served:
        page = await page_of()
        await log_in(page, served.url)
        token = await page.evaluate("sessionStorage.getItem('fw.token')")
        await revoke(served, token)
        await page.reload()
        await page.wait_for_selector("#session-banner", timeout=5_000)
        assert await page.locator("#login-form").count() == 0


async def test_connection_lost_banner_within_3_s_and_recovery(page_of: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=100) as served:
        page = await page_of()
        await log_in(page, served.url)
        await wait_js(page, "window.fw.markerCount() === 100")
        seq_before = await page.evaluate("window.fw.live.lastSeq")
        t0 = time.monotonic()
        await served.stop()
        await page.wait_for_selector("#connection-banner", timeout=3_000)
        assert time.monotonic() - t0 < 3.0
        assert "连接中断" in (await page.locator("#connection-banner h1").text_content() or "")
        assert await page.locator("#conn").text_content() == "未连接"
        assert await page.locator(".map-wrap.disconnected").count() == 1  # vehicles grey
        await wait_js(page, "window.fw.sound.played.some(p => p.tone === 'connection')")
        await page.screenshot(path=str(ARTIFACTS / "banner-connection.png"))

        # an alarm raised while the page was cut off reaches it after the reconnect
        missed = alarm_event(served, 4, "speeding", detail={"max_speed_kmh": 99, "limit_kmh": 80})
        await served.record(missed)
        await served.start()
        await page.wait_for_selector("#connection-banner", state="detached", timeout=10_000)
        await card(page, missed.id).wait_for(timeout=5_000)
        assert await page.locator("#conn").text_content() == "已连接"
        assert await page.evaluate("window.fw.live.lastSeq") > seq_before
        assert await page.locator("#session-banner").count() == 0
        assert page.errors == []


async def test_offline_vehicle_shows_its_age(page_of: Any, tmp_path: Path) -> None:
    # every position 12 minutes old: past the default offline time, so all are 离线
    async with serve(tmp_path, n=10, age_s=12 * 60 + 5) as served:
        page = await page_of()
        await log_in(page, served.url)
        await page.evaluate("document.querySelector('[data-tab=vehicles]').click()")
        counts = await page.locator("#state-counts").text_content() or ""
        assert "离线 10" in counts and "未连接" not in counts
        await page.locator("#vehicle-list li.vehicle").first.click()
        age = page.locator("#detail .age")
        await age.wait_for()
        assert (await age.text_content() or "").strip() == "最后更新 12 分钟前"
        assert "stale" in (await age.get_attribute("class") or "")


async def test_clustering_at_10000_vehicles_counts_alarms(page_of: Any, tmp_path: Path) -> None:
    n = 10_000
    async with serve(tmp_path, n=n) as served:
        page = await page_of()
        t0 = time.monotonic()
        await log_in(page, served.url)
        await wait_js(page, f"window.fw.markerCount() === {n}", timeout=20_000)
        await page.evaluate("window.fw.map.fitAll()")
        await wait_js(page, f"window.fw.map.drawn.members === {n}", timeout=10_000)
        drawn = await page.evaluate("window.fw.map.drawn")
        assert 1 <= drawn["clusters"] <= 200, drawn
        shown_in = time.monotonic() - t0
        alarmed = [11, 222, 3333, 4444, 5555, 6666, 7777]
        for v in alarmed:
            await served.record(alarm_event(served, v, "speeding"))
        await wait_js(
            page,
            f"window.fw.map.drawn.alarms === {len(alarmed)}"
            f" && window.fw.map.drawn.alarmsOnTop === {len(alarmed)}",
            timeout=10_000,
        )
        await page.screenshot(path=str(ARTIFACTS / "map-10000.png"))
        # street zoom: single vehicles with plates, no clusters
        lat, lon = CENTRES["yuechi"]
        await page.evaluate(f"window.fw.map.view({lat}, {lon}, 16)")
        await wait_js(
            page,
            "window.fw.map.drawn.clusters === 0 && window.fw.map.drawn.singles > 0"
            " && window.fw.map.drawn.labels > 0",
            timeout=10_000,
        )
        await page.screenshot(path=str(ARTIFACTS / "map-street.png"))
        assert shown_in < 20
        assert page.errors == []


async def test_county_viewer_opens_on_the_county(page_of: Any, tmp_path: Path) -> None:
    async with serve(tmp_path, n=200) as served:
        page = await page_of()
        await log_in(page, served.url, "ws")
        await wait_js(page, "window.fw.markerCount() === 100")
        await wait_js(page, "window.fw.map.fitted")
        lat, lon = await page.evaluate("window.fw.map.center")
        wl, wo = CENTRES["wusheng"]
        yl, yo = CENTRES["yuechi"]
        assert abs(lat - wl) + abs(lon - wo) < abs(lat - yl) + abs(lon - yo)
        assert abs(lat - wl) < 0.1 and abs(lon - wo) < 0.1
        assert await page.locator(".ack-btn").count() == 0  # a viewer cannot handle alarms


async def test_failing_tiles_are_reported_and_no_tiles_is_translated(
    page_of: Any, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{1}/{{z}}/{{x}}/{{y}}.png"  # nothing listens on port 1
    async with serve(tmp_path, n=20, tiles=[{"name": "内网瓦片", "url": dead}]) as served:
        page = await page_of()
        await log_in(page, served.url)
        await page.wait_for_selector("#tiles-failed", timeout=10_000)
        assert await page.locator("#tiles-failed").text_content() == "底图加载失败"
        options = await page.eval_on_selector_all("#tile-select option", "o => o.map(x => x.text)")
        assert options == ["内网瓦片", "无底图"]
        await page.locator("header .lang-switch").click()
        options = await page.eval_on_selector_all("#tile-select option", "o => o.map(x => x.text)")
        assert options == ["内网瓦片", "No base map"]
        assert await page.locator("#tiles-failed").text_content() == "Base map failed to load"
        await page.select_option("#tile-select", "none")
        await page.wait_for_selector("#tiles-failed", state="detached")


async def test_blocked_sound_is_said(tmp_path: Path) -> None:
    require_built_page()
    from playwright.async_api import async_playwright

    async with serve(tmp_path, n=10) as served, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--autoplay-policy=document-user-activation-required"],
        )
        try:
            page = await browser.new_page()
            await log_in(page, served.url)
            # a reload keeps the login but has no user gesture: the browser blocks the sound
            await page.reload()
            await page.wait_for_selector("#sound-off", timeout=5_000)
            assert "声音已关闭" in (await page.locator("#sound-off").text_content() or "")
            await page.click("#sound-off")  # a gesture: the sound comes back
            await page.wait_for_selector("#sound-off", state="detached", timeout=5_000)
        finally:
            await browser.close()


async def test_base_layer_of_boundaries_without_tiles(page_of: Any, tmp_path: Path) -> None:
    """Needs helper "geo"'s /api/geo/boundaries (CONTRACTS.md); runs once it is merged."""
    async with serve(tmp_path, n=20) as served:
        if not await has_route(served, "/api/geo/boundaries"):
            pytest.skip("this tree has no /api/geo/boundaries yet (helper geo, CONTRACTS.md)")
        page = await page_of()
        await log_in(page, served.url)
        await wait_js(page, "window.fw.map.boundaries > 0", timeout=10_000)
        assert await page.eval_on_selector_all("img.leaflet-tile", "e => e.length") == 0
        labels = await page.eval_on_selector_all(
            ".boundary-label", "e => e.map(x => x.textContent)"
        )
        assert "武胜县" in labels and "岳池县" in labels
        await page.screenshot(path=str(ARTIFACTS / "map-boundaries.png"))


async def test_desktop_notification_when_permitted(chromium: Any, tmp_path: Path) -> None:
    require_built_page()
    async with serve(tmp_path, n=20) as served:
        context = await chromium.new_context()
        await context.grant_permissions(["notifications"], origin=served.url)
        page = await context.new_page()
        try:
            await log_in(page, served.url)
            ev = alarm_event(
                served, 2, "terminal_alarm", sub="sos", severity="critical", detail={"name": "sos"}
            )
            await served.record(ev)
            got = await wait_js(page, "window.fw.notified.length > 0 && window.fw.notified")
            assert got[0]["id"] == ev.id
            assert got[0]["title"] == "紧急：川X00002 终端报警"
        finally:
            await context.close()
