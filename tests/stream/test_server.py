"""The /ws/live endpoint over a real socket: uvicorn + Starlette, websockets client."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fleet.batch import PositionBatch
from fleet.events import AlarmEvent
from fleet.registry import Registry
from stream.feed import FeedCore
from stream.server import FeedServer

T0 = 1_764_034_200_000
TOKENS = {"tok-city": "city", "tok-wusheng": "wusheng", "tok-yuechi": "yuechi"}


async def auth(token: str) -> str | None:
    return TOKENS.get(token)


@pytest.fixture
async def server(registry: Registry) -> AsyncIterator[tuple[str, FeedCore]]:
    core = FeedCore(registry, interval_ms=50)
    core.positions(
        PositionBatch.from_columns(
            vehicle=np.arange(4), ts=np.full(4, T0), lat=np.full(4, 30.4), lon=np.full(4, 106.6)
        )
    )
    feed = FeedServer(core, auth)
    app = Starlette(routes=[WebSocketRoute("/ws/live", feed.endpoint)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning"
        )
    )
    task = asyncio.create_task(srv.serve())
    ticker = asyncio.create_task(feed.run())
    while not srv.started:
        await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/ws/live", core
    ticker.cancel()
    srv.should_exit = True
    await task


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 3))


async def test_token_required(server: tuple[str, FeedCore]) -> None:
    url, _ = server
    async with connect(url) as ws:
        await ws.send(json.dumps({"op": "auth", "token": "wrong"}))
        assert (await recv(ws))["reason"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as exc:
            await ws.recv()
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 4401


async def test_county_token_sees_only_its_county(server: tuple[str, FeedCore]) -> None:
    url, core = server
    async with connect(url + "?token=tok-wusheng") as ws, connect(url) as ws2:
        await ws2.send(json.dumps({"op": "auth", "token": "tok-yuechi"}))
        snap = await recv(ws)
        assert snap["type"] == "snapshot"
        assert {v["vehicle"] for v in snap["vehicles"]} == {"V2", "V3"}
        assert {v["vehicle"] for v in (await recv(ws2))["vehicles"]} == {"V4"}
        core.positions(
            PositionBatch.from_columns(
                vehicle=np.arange(4),
                ts=np.full(4, T0 + 1000),
                lat=np.full(4, 30.5),
                lon=np.full(4, 106.7),
            )
        )
        core.alarm(
            AlarmEvent(
                id="V4:speeding:1",
                vehicle=3,
                vehicle_id="V4",
                kind="speeding",
                action="open",
                started_at=T0,
                ts=T0,
                lat=30.5,
                lon=106.7,
            )
        )
        pos = await recv(ws)
        assert pos["type"] == "positions"
        assert {i["vehicle"] for i in pos["items"]} == {"V2", "V3"}
        got2 = [await recv(ws2), await recv(ws2)]
        assert {f["type"] for f in got2} == {"alarm", "positions"}
        # a subscription cannot widen the token's view
        await ws.send(json.dumps({"op": "subscribe", "orgs": ["yuechi"]}))
        snap = await recv(ws)
        assert snap["vehicles"] == [] and snap["alarms"] == []
        await ws.send("not json")
        assert (await recv(ws))["type"] == "error"


async def test_reconnect_replays_missed_alarms(server: tuple[str, FeedCore]) -> None:
    url, core = server
    async with connect(url + "?token=tok-city") as ws:
        last = (await recv(ws))["seq"]
    for k in range(3):
        core.alarm(
            AlarmEvent(
                id=f"V1:speeding:{k}",
                vehicle=0,
                vehicle_id="V1",
                kind="speeding",
                action="open",
                started_at=T0 + k,
                ts=T0 + k,
                lat=30.4,
                lon=106.6,
            )
        )
    async with connect(f"{url}?token=tok-city&last_seq={last}") as ws:
        frames = [await recv(ws) for _ in range(4)]
    assert [f["type"] for f in frames] == ["snapshot", "alarm", "alarm", "alarm"]
    assert [f["alarm"]["id"] for f in frames[1:]] == [f"V1:speeding:{k}" for k in range(3)]
