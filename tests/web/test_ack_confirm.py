"""Acknowledging a terminal alarm queues its 0x8203 (JT/T 808-2019 §8.61) when
``commands.confirm_on_ack`` is on, and nothing when it is off; checked in the command store,
no gateway needed."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest

from fleet.events import AlarmEvent, episode_id
from fleet.registry import Registry
from geofence.index import LiveFences
from ingest.jt808.config import CommandsConfig, GatewayConfig
from store.sqlite import SQLiteHistory
from stream.feed import FeedCore
from tests.conftest import require_service
from tests.web.conftest import login, web_config
from web.app import create_app
from web.context import AppContext

pytestmark = pytest.mark.services


@pytest.mark.parametrize("on", [True, False])
async def test_ack_of_a_terminal_alarm_confirms_it_only_when_configured(
    tmp_path: Path, on: bool
) -> None:
    host, port = require_service("mosquitto")
    cfg = web_config(tmp_path)
    cfg = cfg.model_copy(
        update={
            "gateway": GatewayConfig(topic_prefix=f"fwa{secrets.token_hex(4)}"),
            "mqtt": cfg.mqtt.model_copy(update={"host": host, "port": port}),
            "commands": CommandsConfig(confirm_on_ack=on),
        }
    )
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    now = time.time_ns() // 1_000_000 // 1000 * 1000
    events = [
        AlarmEvent(
            id=episode_id("V2", kind, now, sub=sub),
            vehicle=1,
            vehicle_id="V2",
            kind=kind,
            action="open",
            started_at=now,
            ts=now,
            lat=30.45,
            lon=106.63,
            severity="critical",
            detail={},
        )
        for kind, sub in (("terminal_alarm", "sos"), ("speeding", None))
    ]
    await history.write_alarm_events(events)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        fences=LiveFences(),
    )
    app = create_app(ctx)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
                h = await login(c, "ws-op")
                for e in events:
                    r = await c.post(f"/api/alarms/{e.id}/ack", json={"note": "已处置"}, headers=h)
                    assert r.status_code == 200, r.text
                r = await c.get("/api/vehicles/V2/commands", headers=h)
                assert r.status_code == 200, r.text
                cmds = r.json()["commands"]
    finally:
        await history.close()
    if on:
        assert [(x["kind"], x["alarm_id"]) for x in cmds] == [("confirm_alarm", events[0].id)]
        assert cmds[0]["command"]["alarm_types"] == 1  # the SOS bit, table 24 bit 0
    else:
        assert cmds == []
