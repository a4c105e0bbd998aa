"""Commands end to end: the API, the real Mosquitto, the gateway over real TCP and the
simulator's terminals answering; plus who may send what."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
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
from tests.conftest import require_service
from tests.web.conftest import login, web_config
from web.app import create_app
from web.context import AppContext

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]


@contextlib.asynccontextmanager
async def stack(
    tmp: Path, *, gateway_when: asyncio.Event | None = None, **commands: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """The web app (real clock) and a gateway on a free port, sharing a unique topic prefix.
    With ``gateway_when`` the gateway starts once that is set (``addr`` is then a future of
    its address)."""
    host, port = require_service("mosquitto")
    prefix = f"fwt{secrets.token_hex(4)}"
    cfg = web_config(tmp)
    gw_cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=host,
        mqtt_port=port,
        mqtt_client_id=f"t-gw-{secrets.token_hex(3)}",
        topic_prefix=prefix,
        command_reply_timeout_s=2,
    )
    cfg = cfg.model_copy(
        update={
            "gateway": gw_cfg,
            "mqtt": cfg.mqtt.model_copy(update={"host": host, "port": port}),
            "commands": CommandsConfig(expire_sweep_s=0.5, **commands),
        }
    )
    reg = Registry.from_config(cfg)
    ctx = AppContext(config=cfg, registry=reg, feed=FeedCore(reg, interval_ms=100))
    app = create_app(ctx)
    provisioning = Provisioning(
        ProvisionedTerminal(v.terminal, v.id, v.plate) for v in cfg.vehicles
    )
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def serve() -> None:
        if gateway_when is not None:
            await gateway_when.wait()
        await run_gateway(
            gw_cfg,
            provisioning=provisioning,
            registrations=SqliteRegistrations(":memory:"),
            stop=stop,
            started=started,
        )

    gw = asyncio.create_task(serve())
    addr: Any = started if gateway_when else await asyncio.wait_for(started, 10)
    try:
        async with app.router.lifespan_context(app):
            bridge = None
            for _ in range(100):
                bridge = app.state.api.command_bridge
                if bridge is not None and bridge.connected.is_set():
                    break
                await asyncio.sleep(0.05)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
                yield c, addr, app
    finally:
        stop.set()
        if not started.done():
            gw.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(gw, 10)


async def terminal(addr: tuple[str, int], phone: str) -> TerminalClient:
    t = TerminalClient(phone, TcpOptions(host=addr[0], port=addr[1], latch_alarms=True), plate="x")
    await t.connect()
    await t.login()
    return t


async def until(c: httpx.AsyncClient, h: dict[str, str], cid: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await c.get(f"/api/commands/{cid}", headers=h)
        assert r.status_code == 200, r.text
        got = r.json()
        if got["state"] == state:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} never {state}: {got}")


async def test_commands_reach_the_terminal_and_show_acked(tmp_path: Path) -> None:
    async with stack(tmp_path) as (c, addr, _):
        h = await login(c, "ws-op")
        t = await terminal(addr, "10002")  # V2, org wusheng
        now = time.time_ns() // 1_000_000 // 1000 * 1000
        await t.send_location(Location(lat=30.45, lon=106.63, time_ms=now, alarm=1))  # SOS
        await t.drain()

        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "text", "text": "请减速慢行", "emergency": True, "tts": True},
            headers=h,
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["state"] == "queued" and body["id"].startswith("cmd-")
        done = await until(c, h, body["id"], "acked")
        assert [s["state"] for s in done["history"]] == ["queued", "sent", "acked"]
        assert t.texts[-1].text == "请减速慢行" and t.texts[-1].flags & TEXT_EMERGENCY

        r = await c.post("/api/vehicles/V2/commands", json={"kind": "locate"}, headers=h)
        loc = await until(c, h, r.json()["id"], "acked")
        assert loc["reply"]["lat"] == pytest.approx(30.45)

        # 0x8203 from the alarm's id clears the latched SOS in the next report
        alarm_id = f"V2:terminal_alarm.sos:{now}"
        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "confirm_alarm", "alarm_id": alarm_id},
            headers=h,
        )
        assert r.json()["command"]["alarm_types"] == 1 and r.json()["alarm_id"] == alarm_id
        await until(c, h, r.json()["id"], "acked")
        await t.send_location(Location(lat=30.45, lon=106.63, time_ms=now + 1000))
        assert t.last_location is not None and t.last_location.alarm == 0

        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "track", "interval_s": 1, "duration_s": 2},
            headers=h,
        )
        await until(c, h, r.json()["id"], "acked")
        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "params_set", "params": {"speed_limit_kmh": 60, "0x0056": 15}},
            headers=h,
        )
        await until(c, h, r.json()["id"], "acked")
        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "params_get", "params": ["speed_limit_kmh", "overspeed_duration_s"]},
            headers=h,
        )
        got = await until(c, h, r.json()["id"], "acked")
        assert got["reply"]["params"] == {"speed_limit_kmh": 60, "overspeed_duration_s": 15}
        r = await c.post(
            "/api/vehicles/V2/commands", json={"kind": "control", "action": "reset"}, headers=h
        )
        await until(c, h, r.json()["id"], "acked")

        listing = (await c.get("/api/vehicles/V2/commands", headers=h)).json()["commands"]
        assert [x["kind"] for x in listing][:2] == ["control", "params_get"]
        assert all(x["state"] == "acked" for x in listing)
        audit = (await c.get("/api/audit", headers=await login(c, "admin"))).json()["entries"]
        actions = {e["action"] for e in audit}
        assert {"command.create", "command.acked"} <= actions
        await t.close()


async def test_offline_terminal_gets_it_on_connect_or_it_expires(tmp_path: Path) -> None:
    async with stack(tmp_path) as (c, addr, _):
        h = await login(c, "ws-op")
        r = await c.post(
            "/api/vehicles/V3/commands", json={"kind": "text", "text": "请立即返回"}, headers=h
        )
        waiting = r.json()["id"]
        r = await c.post(
            "/api/vehicles/V2/commands",
            json={"kind": "locate", "expires_in_s": 2},
            headers=h,
        )
        lapsing = r.json()["id"]
        await asyncio.sleep(0.5)
        assert (await c.get(f"/api/commands/{waiting}", headers=h)).json()["state"] == "queued"
        t = await terminal(addr, "10003")
        await until(c, h, waiting, "acked")
        assert [x.text for x in t.texts] == ["请立即返回"]
        gone = await until(c, h, lapsing, "expired")
        assert gone["history"][-1]["state"] == "expired"
        await t.close()


async def test_who_may_send_what(tmp_path: Path) -> None:
    async with stack(tmp_path, allow_cut=True) as (c, addr, _):
        op, admin = await login(c, "ws-op"), await login(c, "admin")
        viewer, other = await login(c, "viewer"), await login(c, "yc-op")
        text = {"kind": "text", "text": "请联系监控室"}
        assert (
            await c.post("/api/vehicles/V2/commands", json=text, headers=viewer)
        ).status_code == 403
        assert (
            await c.post("/api/vehicles/V2/commands", json=text, headers=other)
        ).status_code == 404
        r = await c.post("/api/vehicles/V2/commands", json=text, headers=op)
        cid = r.json()["id"]
        assert (await c.get(f"/api/commands/{cid}", headers=other)).status_code == 404
        bad = [
            {"kind": "text", "text": ""},
            {"kind": "nope"},
            {"kind": "params_set", "params": {"no_such": 1}},
            {"kind": "params_set", "params": {"plate_color": 300}},
            {"kind": "confirm_alarm", "alarms": ["overspeed"]},  # not confirmable by hand
            {"kind": "track", "interval_s": 0},
        ]
        for b in bad:
            r = await c.post("/api/vehicles/V2/commands", json=b, headers=op)
            assert r.status_code == 400, (b, r.text)
        cut = await c.post(
            "/api/vehicles/V2/commands", json={"kind": "control", "action": "cut"}, headers=op
        )
        assert cut.status_code == 202 and cut.json()["state"] == "awaiting_confirmation"
        cut_id = cut.json()["id"]
        same = await c.post(f"/api/commands/{cut_id}/confirm", headers=op)
        assert same.status_code == 403
        t = await terminal(addr, "10002")
        ok = await c.post(f"/api/commands/{cut_id}/confirm", headers=admin)
        assert ok.status_code == 200 and ok.json()["confirmed_by"] == "admin"
        done = await until(c, op, cut_id, "acked")
        assert done["command"]["command"] == 0x64
        assert t.commands[-1].command == 0x64  # type: ignore[union-attr]
        await t.close()


async def test_cut_is_refused_unless_enabled(tmp_path: Path) -> None:
    async with stack(tmp_path) as (c, _, _app):
        op = await login(c, "ws-op")
        r = await c.post(
            "/api/vehicles/V2/commands", json={"kind": "control", "action": "cut"}, headers=op
        )
        assert r.status_code == 403 and "allow_cut" in r.json()["error"]


async def test_confirm_on_ack_sends_0x8203_for_a_terminal_alarm(tmp_path: Path) -> None:
    from web.auth import Principal
    from web.commands_api import confirm_on_ack

    op = Principal(name="ws-op", org="wusheng", role="operator", username="ws-op")
    async with stack(tmp_path, confirm_on_ack=True) as (c, addr, app):
        st = app.state.api
        h = await login(c, "ws-op")
        t = await terminal(addr, "10002")
        now = time.time_ns() // 1_000_000 // 1000 * 1000
        await t.send_location(Location(lat=30.45, lon=106.63, time_ms=now, alarm=1))
        assert await confirm_on_ack(st, op, f"V2:speeding:{now}", "V2") is None
        cmd = await confirm_on_ack(st, op, f"V2:terminal_alarm.sos:{now}", "V2")
        assert cmd is not None and cmd["command"]["alarm_types"] == 1
        await until(c, h, cmd["id"], "acked")
        await t.send_location(Location(lat=30.45, lon=106.63, time_ms=now + 1000))
        assert t.last_location is not None and t.last_location.alarm == 0
        await t.close()
    (tmp_path / "off").mkdir()
    async with stack(tmp_path / "off") as (c, addr, app):
        assert await confirm_on_ack(app.state.api, op, f"V2:terminal_alarm.sos:{now}", "V2") is None


async def test_a_command_published_while_no_gateway_listened_is_published_again(
    tmp_path: Path,
) -> None:
    go = asyncio.Event()
    async with stack(tmp_path, gateway_when=go, republish_s=1.0) as (c, started, app):
        h = await login(c, "ws-op")
        r = await c.post("/api/vehicles/V2/commands", json={"kind": "locate"}, headers=h)
        cid = r.json()["id"]
        bridge = app.state.api.command_bridge
        for _ in range(100):  # published once, with no gateway listening
            if bridge.published:
                break
            await asyncio.sleep(0.05)
        assert bridge.published == 1
        go.set()
        addr = await asyncio.wait_for(started, 10)
        t = await terminal(addr, "10002")
        await until(c, h, cid, "acked")
        await asyncio.sleep(2.5)  # more republish rounds pass: acked stays acked, sent once
        assert [type(x).__name__ for x in t.commands] == ["LocateQuery"]
        assert bridge.published >= 2  # published again, carried out once
        await t.close()
