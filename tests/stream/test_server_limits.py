"""One abusive feed client over a real socket: memory stays bounded, neighbours keep going."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from fleet.batch import PositionBatch
from fleet.registry import Registry
from stream.feed import FeedCore
from stream.server import CLOSE_TOO_SLOW, FeedServer

T0 = 1_764_034_200_000
TOKENS = {"tok-city": "city"}
MiB = 1024 * 1024


async def auth(token: str) -> str | None:
    return TOKENS.get(token)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fleet_batch(ts: int) -> PositionBatch:
    return PositionBatch.from_columns(
        vehicle=np.arange(4), ts=np.full(4, ts), lat=np.full(4, 30.4), lon=np.full(4, 106.6)
    )


@pytest.fixture
async def server(registry: Registry) -> AsyncIterator[tuple[str, FeedCore]]:
    core = FeedCore(registry, interval_ms=50)
    core.positions(fleet_batch(T0))
    feed = FeedServer(core, auth)
    app = Starlette(routes=[WebSocketRoute("/ws/live", feed.endpoint)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            ws_ping_interval=None,  # the outbox bound must cut the client off, not keepalive
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(srv.serve())
    ticker = asyncio.create_task(feed.run())
    while not srv.started:
        await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/ws/live?token=tok-city", core
    ticker.cancel()
    srv.should_exit = True
    await task


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


class RawClient:
    """A websocket client on a bare socket with a small receive buffer (sans-I/O
    ``websockets`` protocol), so that "never reads" fills up quickly and pre-built
    frames can be written in bulk."""

    def __init__(self, url: str) -> None:
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> None:
        uri = self.uri
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.protocol.send_request(self.protocol.connect())
        await self.flush()
        while self.protocol.handshake_exc is None and not self.protocol.events_received():
            self.protocol.receive_data(await self.reader.read(65536))
            if self.protocol.state.name == "OPEN":
                break
        assert self.protocol.state.name == "OPEN"

    async def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            self.writer.write(chunk)
        await self.writer.drain()

    def frames(self, text: str, n: int) -> bytes:
        for _ in range(n):
            self.protocol.send_text(text.encode())
        return b"".join(self.protocol.data_to_send())

    async def read_until_closed(self, timeout: float) -> int | None:
        """Read everything the server sent; the close code it ended with (None: none)."""
        while True:
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            self.protocol.events_received()
            for chunk in self.protocol.data_to_send():  # the close reply, not awaited:
                self.writer.write(chunk)  # reading and writing are independent
            if self.protocol.close_rcvd is not None:
                return self.protocol.close_rcvd.code
            if not data:
                return None


async def test_pings_without_reading_are_cut_off_with_bounded_memory(
    server: tuple[str, FeedCore],
) -> None:
    url, core = server
    client = RawClient(url)
    await client.open()
    try:
        chunk_n = 10_000
        chunk = client.frames(json.dumps({"op": "ping"}), chunk_n)
        before = rss()
        peak = 0
        sent = 0
        # Write pings and never read until the server cuts the client off (the server runs
        # in this process: its counters say when) or 1.5 M pings are out.
        while sent < 1_500_000 and core.stats.slow_disconnects == 0:
            client.writer.write(chunk)
            sent += chunk_n
            while core.stats.slow_disconnects == 0:
                try:
                    await asyncio.wait_for(client.writer.drain(), 1.0)
                    break
                except TimeoutError:
                    pass  # a busy server reads slowly; one that cut us off stops reading
                finally:
                    peak = max(peak, rss() - before)
                    assert peak < 256 * MiB, f"server memory grew {peak / MiB:.0f} MiB"
        assert core.stats.slow_disconnects == 1, "1.5 M pings sent and the client is still served"
        code = await client.read_until_closed(10)
        assert code == CLOSE_TOO_SLOW
        assert core.clients == []
    finally:
        client.writer.close()
    print(f"cut off after <= {sent} pings; RSS grew at most {peak / MiB:.1f} MiB")


async def test_a_huge_subscribe_is_refused_without_stalling_the_others(
    server: tuple[str, FeedCore],
) -> None:
    url, core = server
    loop = asyncio.get_running_loop()
    # 1.2 M vehicle ids, all known (repeats of the four): ~7 MB of JSON
    huge = json.dumps({"op": "subscribe", "vehicles": ["V1", "V2", "V3", "V4"] * 300_000})
    stalls: list[float] = []
    stop = asyncio.Event()

    async def watch_loop() -> None:
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.005)
            stalls.append(loop.time() - t - 0.005)

    async def feed_positions() -> None:
        ts = T0
        while not stop.is_set():
            ts += 1000
            core.positions(fleet_batch(ts))
            await asyncio.sleep(0.02)

    async with connect(url) as other, connect(url, max_size=None) as abuser:
        await recv(other)
        await recv(abuser)
        tasks = [asyncio.create_task(watch_loop()), asyncio.create_task(feed_positions())]
        await asyncio.sleep(0.1)
        got_before = 0
        await abuser.send(huge)
        while True:
            f = await recv(abuser)
            if f["type"] == "error":
                break
        assert f["reason"] == "message_too_large"
        # the neighbour kept receiving positions meanwhile and after
        while got_before < 3:
            if (await recv(other))["type"] == "positions":
                got_before += 1
        # the abuser is still served, with the filter it had
        await abuser.send(json.dumps({"op": "subscribe", "vehicles": ["V2"] * 5000}))
        while (f := await recv(abuser))["type"] != "snapshot":
            pass
        assert [v["vehicle"] for v in f["vehicles"]] == ["V2"]
        stop.set()
        await asyncio.gather(*tasks)
        worst = max(stalls)
        assert core.cached_filters == 2
    print(f"worst event-loop stall around a 1.2 M-id subscribe: {worst * 1000:.0f} ms")
    assert worst < 0.25
    await asyncio.sleep(0.2)
    assert core.cached_filters == 0 and core.clients == []
