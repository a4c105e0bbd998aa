"""End to end on the real broker: MQTT in, websocket out, one alarm per speeding episode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import websockets

from fleetwatch.replay import replay_history
from rules.replay import episodes
from tests.conftest import free_port
from tests.fleetwatch.conftest import WORKDAY_10AM, frames_until, running_service, service_config

pytestmark = pytest.mark.services

TOKEN = "e2e-room-token-123"


async def test_positions_reach_the_feed_and_speeding_raises_one_episode(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
) -> None:
    web_port = free_port()
    cfg = service_config(
        tmp_path,
        f"e2e{unique}",
        web_port,
        vehicles=[(f"v{i}", f"1390000000{i}", f"川X0000{i}") for i in range(3)],
        token=TOKEN,
        rules={"speeding": {"min_duration_s": 10, "close_after_s": 10, "default_limit_kmh": 80}},
    )
    async with running_service(cfg) as svc:
        async with websockets.connect(f"ws://127.0.0.1:{web_port}/ws/live?token={TOKEN}") as ws:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["type"] == "snapshot"
            t0 = WORKDAY_10AM  # inside working hours: speeding is the only rule that applies
            async with aiomqtt.Client(*mosquitto) as pub:
                topic = f"e2e{unique}/fleet/13900000001/position"
                # 40 s above the limit (one report per 5 s), then 30 s below: one episode.
                for k in range(15):
                    speed = 110.0 if k < 8 else 50.0
                    body = {
                        "ts": t0 + k * 5000,
                        "lat": 30.45 + k * 1e-3,
                        "lon": 106.63,
                        "speed": speed,
                        "acc": True,
                    }
                    await pub.publish(topic, orjson.dumps(body), qos=1)
                await pub.publish(
                    f"e2e{unique}/fleet/13900000002/position", b'{"ts": "garbage"', qos=1
                )

            def done(frames: list[dict[str, Any]]) -> bool:
                alarms = [f["alarm"] for f in frames if f["type"] == "alarm"]
                plates = {
                    i["plate"] for f in frames if f["type"] == "positions" for i in f["items"]
                }
                return "川X00001" in plates and any(a["state"] == "closed" for a in alarms)

            frames = await frames_until(ws, done, timeout=10)
        items = [i for f in frames if f["type"] == "positions" for i in f["items"]]
        assert any(i["plate"] == "川X00001" for i in items)
        alarms = [f["alarm"] for f in frames if f["type"] == "alarm"]
        assert {a["kind"] for a in alarms} == {"speeding"}
        assert len({a["id"] for a in alarms}) == 1, alarms
        assert alarms[-1]["state"] == "closed"
        # The broken payload was counted and kept, its neighbours were not lost.
        assert svc.ingest.core.rejected["invalid_json"] == 1
    assert svc.pipeline.positions_stored == 15
    # Replay over the stored history finds the same episode, with the same id.
    replayed = episodes(await replay_history(cfg, WORKDAY_10AM - 60_000, WORKDAY_10AM + 3_600_000))
    assert [(e.id, e.state) for e in replayed] == [(alarms[-1]["id"], "closed")]
