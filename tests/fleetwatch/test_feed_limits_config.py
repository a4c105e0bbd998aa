"""The live feed's limits come from ``[web] feed_*`` and reach both the feed core and
uvicorn: the whole service, a real websocket client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import websockets

from tests.conftest import free_port
from tests.fleetwatch.conftest import running_service, service_config

pytestmark = pytest.mark.services

TOKEN = "feed-limits-token"


async def test_feed_limits_from_config_reach_core_and_server(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
) -> None:
    port = free_port()
    cfg = service_config(
        tmp_path,
        f"fl{unique}",
        port,
        vehicles=[("V1", "13800000001", "川X00001")],
        token=TOKEN,
        web={"feed_max_message_bytes": 4096, "feed_max_vehicles": 3, "feed_max_orgs": 2},
    )
    async with running_service(cfg) as svc:
        lim = svc.feed.limits
        assert (lim.max_message_bytes, lim.max_vehicles, lim.max_orgs) == (4096, 3, 2)
        url = f"ws://127.0.0.1:{port}/ws/live?token={TOKEN}"
        async with websockets.connect(url) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
            await ws.send(orjson.dumps({"op": "subscribe", "vehicles": ["a", "b", "c", "d"]}))
            while (frame := orjson.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "error":
                pass
            assert frame["reason"] == "subscription_too_large"
            await ws.send(orjson.dumps({"op": "ping", "pad": "x" * 4096}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
