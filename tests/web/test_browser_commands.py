"""Reaching the vehicle from the alarm card in Debian's chromium (issue 20): the operator
sends 请减速慢行 from a critical alarm's card, the text travels API → Mosquitto → gateway →
real TCP to a simulated terminal with the emergency flag, and the card shows 终端已应答. Real
uvicorn, real Mosquitto, real gateway, real SQLite history."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleet.registry import Registry
from ingest.jt808.config import CommandsConfig, GatewayConfig
from ingest.jt808.downlink import TEXT_EMERGENCY
from ingest.jt808.messages import Location
from ingest.jt808.registrations import SqliteRegistrations
from ingest.jt808.session import ProvisionedTerminal, Provisioning
from ingest.jt808.tcp import run_gateway
from simulator.tcp import TcpOptions, TerminalClient
from stream.feed import FeedCore
from tests.conftest import free_port, require_service
from tests.web.pagekit import (
    ARTIFACTS,
    Served,
    _start,
    alarm_event,
    log_in,
    page_config,
    require_built_page,
    wait_js,
)
from web.app import create_app
from web.context import AppContext

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.timeout(120)]


@contextlib.asynccontextmanager
async def commanded(
    tmp: Path, n: int = 6, *, enabled: bool = True
) -> AsyncIterator[tuple[Served, tuple[str, int]]]:
    """The built page on uvicorn with commands on, and a gateway on a free port sharing a
    unique topic prefix on the real Mosquitto; yields the page server and the gateway's
    address."""
    from store.sqlite import SQLiteHistory

    host, mqtt_port = require_service("mosquitto")
    port = free_port()
    cfg = page_config(tmp, port, n)
    gw_cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=host,
        mqtt_port=mqtt_port,
        mqtt_client_id=f"t-gw-{secrets.token_hex(3)}",
        topic_prefix=f"fwb{secrets.token_hex(4)}",
        command_reply_timeout_s=2,
    )
    cfg = cfg.model_copy(
        update={
            "gateway": gw_cfg,
            "mqtt": cfg.mqtt.model_copy(update={"host": host, "port": mqtt_port}),
            "commands": CommandsConfig(enabled=enabled, expire_sweep_s=0.5),
        }
    )
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=cfg.web.feed_interval_ms),
        history=history,
    )
    provisioning = Provisioning(
        ProvisionedTerminal(v.terminal, v.id, v.plate) for v in cfg.vehicles
    )
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    gw = asyncio.create_task(
        run_gateway(
            gw_cfg,
            provisioning=provisioning,
            registrations=SqliteRegistrations(":memory:"),
            stop=stop,
            started=started,
        )
    )
    addr = await asyncio.wait_for(started, 10)
    app = create_app(ctx)
    server, task = await _start(app, port)
    served = Served(f"http://127.0.0.1:{port}", ctx, port, server, task, app)
    try:
        for _ in range(200 if enabled else 0):  # the page's command bridge on Mosquitto
            bridge = app.state.api.command_bridge
            if bridge is not None and bridge.connected.is_set():
                break
            await asyncio.sleep(0.05)
        else:
            if enabled:
                raise AssertionError("the command bridge never connected to Mosquitto")
        yield served, addr
    finally:
        if not served.task.done():
            await served.stop()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(gw, 10)
        await history.close()


async def test_emergency_text_from_the_card_reaches_the_terminal(
    chromium: Any, tmp_path: Path
) -> None:
    require_built_page()
    async with commanded(tmp_path) as (served, addr):
        v = 1  # V00001, terminal 10000000001, 武胜县
        term = TerminalClient(
            f"1{v:010d}", TcpOptions(host=addr[0], port=addr[1], latch_alarms=True), plate="x"
        )
        await term.connect()
        await term.login()
        now = int(time.time() * 1000)
        await term.send_location(Location(lat=30.36, lon=106.20, time_ms=now, alarm=1))  # SOS
        await term.drain()

        page = await chromium.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            await log_in(page, served.url)
            ev = alarm_event(
                served,
                v,
                "terminal_alarm",
                sub="sos",
                severity="critical",
                detail={"bit": 0, "name": "sos"},
            )
            await served.record(ev)
            card = page.locator(f'#alarm-list li[data-id="{ev.id}"]')
            await card.wait_for(timeout=10_000)

            await card.locator(".cmd-toggle").click()
            await card.locator(".cmd-none").wait_for(timeout=5_000)  # nothing sent yet
            await card.locator(".cmd-text").click()
            # a critical alarm: the text goes with the emergency flag, and the card says so
            assert "紧急" in (await card.locator(".cmd-emergency").text_content() or "")
            phrases = [
                (s or "").strip() for s in await card.locator(".cmd-phrase").all_text_contents()
            ]
            assert phrases == ["请减速慢行", "请立即返回", "请联系监控室"]
            await card.locator(".cmd-free").fill("超过限长" * 60)  # the field stops at 200
            assert len(await card.locator(".cmd-free").input_value()) == 200
            await card.locator(".cmd-free").fill("请靠边停车")
            await card.screenshot(path=str(ARTIFACTS / "card-commands-compose.png"))
            await card.locator(".cmd-phrase").first.click()

            item = card.locator('.cmd-item[data-kind="text"]')
            await item.wait_for(timeout=5_000)
            await wait_js(
                page,
                "id => document.querySelector("
                '`#alarm-list li[data-id="${id}"] .cmd-item[data-kind=text]`'
                ")?.dataset.state === 'acked'",
                arg=ev.id,
                timeout=20_000,
            )
            assert (await item.locator(".cmd-state").text_content() or "").strip() == "终端已应答"
            assert term.texts, "the terminal received no text"
            assert term.texts[-1].text == "请减速慢行"
            assert term.texts[-1].flags & TEXT_EMERGENCY

            # 立即定位: the answered position shows on the card
            await card.locator(".cmd-locate").click()
            await card.locator(".cmd-located").wait_for(timeout=20_000)
            assert "30.36000, 106.20000" in (
                await card.locator(".cmd-located").text_content() or ""
            )
            # 确认报警 (0x8203): the terminal's latched SOS is cleared in its next report
            await card.locator(".cmd-confirm").click()
            confirm = card.locator('.cmd-item[data-kind="confirm_alarm"]')
            await confirm.wait_for(timeout=5_000)
            await wait_js(
                page,
                "id => document.querySelector("
                '`#alarm-list li[data-id="${id}"] .cmd-item[data-kind=confirm_alarm]`'
                ")?.dataset.state === 'acked'",
                arg=ev.id,
                timeout=20_000,
            )
            await term.send_location(Location(lat=30.36, lon=106.20, time_ms=now + 1000))
            assert term.last_location is not None and term.last_location.alarm == 0

            await card.scroll_into_view_if_needed()
            await card.screenshot(path=str(ARTIFACTS / "card-commands.png"))

            # the command went into the vehicle's list with the alarm's id
            states = await page.evaluate(
                "id => [...document.querySelectorAll("
                '`#alarm-list li[data-id="${id}"] .cmd-item`)].map(e => e.dataset.kind)',
                ev.id,
            )
            assert states == ["confirm_alarm", "locate", "text"]
            assert errors == []
        finally:
            await page.close()
            await term.close()


async def test_viewers_get_no_buttons_and_a_switched_off_feature_says_so(
    chromium: Any, tmp_path: Path
) -> None:
    require_built_page()
    async with commanded(tmp_path, enabled=False) as (served, _):
        ev = alarm_event(served, 1, "speeding", detail={"max_speed_kmh": 103.0, "limit_kmh": 80.0})
        await served.record(ev)
        page = await chromium.new_page(viewport={"width": 1400, "height": 900})
        try:
            await log_in(page, served.url, user="ws")  # a viewer of 武胜县
            card = page.locator(f'#alarm-list li[data-id="{ev.id}"]')
            await card.wait_for(timeout=10_000)
            assert await card.locator(".cmd-toggle").count() == 0
            await page.close()

            page = await chromium.new_page(viewport={"width": 1400, "height": 900})
            await log_in(page, served.url)
            card = page.locator(f'#alarm-list li[data-id="{ev.id}"]')
            await card.wait_for(timeout=10_000)
            await card.locator(".cmd-toggle").click()
            assert await card.locator(".cmd-confirm").count() == 0  # not a terminal alarm
            await card.locator(".cmd-locate").click()
            msg = card.locator(".cmd-disabled")
            await msg.wait_for(timeout=5_000)
            assert (await msg.text_content() or "").strip() == (
                "下发指令功能未启用（配置 [commands] enabled）"
            )
            assert await card.locator(".cmd-locate").is_disabled()
            assert await card.locator(".cmd-item").count() == 0
        finally:
            await page.close()
