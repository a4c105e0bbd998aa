"""``fleetwatch bench feed``: the live feed under a fleet-sized load.

100 websocket clients follow a fleet of 10,000 vehicles that each report once a
second. Measured, for the feed as served (FeedCore + FeedServer behind
Starlette/uvicorn) and, in the same run, for the baseline — the ``websockets``
library's ``broadcast`` of the same conflated frames, built once for everyone:

- ``deliveries_per_s``: vehicle items received by all clients per second;
- ``server_cpu_cores``: CPU seconds of the serving process per wall second;
- ``age_ms_p50`` / ``age_ms_p99``: how old a position is when a client reads it
  (its ``ts`` is the wall clock when it entered the feed), conflation wait included.

The clients run in a separate process so the server's CPU is its own. Every
connection is made without permessage-deflate, as a deployment at this size
should be configured (compressing each frame once per client costs more than
the rest of the feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import re
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from fleet import aio
from fleet.batch import PositionBatch
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from stream.feed import FeedCore

__all__ = ["run"]

_TS = re.compile(rb'"ts":(\d+)')
INTERVAL_MS = 500


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _registry(n: int) -> Registry:
    counties = [f"county{i}" for i in range(6)]
    orgs = [OrgConfig(id="city", name="广安市")] + [
        OrgConfig(id=c, name=c, parent="city") for c in counties
    ]
    vehicles = [
        VehicleConfig(
            id=f"V{i:05d}", plate=f"川X{i:05d}", terminal=f"1{i:010d}", org=counties[i % 6]
        )
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(orgs))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the clients (own process) -------------------------------------------------------------------


def _client_main(url: str, n: int, warmup_s: float, seconds: float, conn: Connection) -> None:
    conn.send(asyncio.run(_clients(url, n, warmup_s, seconds, conn)))


async def _clients(
    url: str, n: int, warmup_s: float, seconds: float, conn: Connection
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    items = 0
    frames = 0
    ages: list[Any] = []
    window: list[float] = [0.0, 0.0]

    async def one(i: int, ready: asyncio.Event) -> None:
        nonlocal items, frames
        async with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
            await ws.recv(decode=False)  # the snapshot
            ready.set()
            k = 0
            while True:
                data = await ws.recv(decode=False)
                now = _now_ms()
                assert isinstance(data, bytes)
                if not data.startswith(b'{"type":"positions"'):
                    continue
                t = time.monotonic()
                if not window[0] <= t < window[1]:
                    continue
                frames += 1
                items += data.count(b'"vehicle":')
                k += 1
                if k % 5 == i % 5:  # sample one frame in five per client for ages
                    ts = np.array(_TS.findall(data), dtype=np.int64)
                    ages.append(now - ts)

    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(one(i, readies[i])) for i in range(n)]
    await aio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    conn.send("ready")
    start = time.monotonic() + warmup_s
    window[0], window[1] = start, start + seconds
    await asyncio.sleep(warmup_s + seconds + 0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    age = np.concatenate(ages) if ages else np.zeros(1)
    return {
        "items": items,
        "frames": frames,
        "age_p50": float(np.percentile(age, 50)),
        "age_p99": float(np.percentile(age, 99)),
        "age_samples": int(age.size),
    }


# -- the server side (this process) --------------------------------------------------------------


async def _drive(core: FeedCore, n: int, stop: asyncio.Event, on_batch: Any = None) -> None:
    """Every vehicle reports once a second, in ten slices of n/10 every 100 ms."""
    rng = np.random.default_rng(3)
    lat = 30.456 + rng.normal(0, 0.1, n)
    lon = 106.633 + rng.normal(0, 0.1, n)
    slices = np.array_split(np.arange(n, dtype=np.int32), 10)
    k = 0
    next_t = time.monotonic()
    while not stop.is_set():
        idx = slices[k % 10]
        lat[idx] += rng.normal(0, 1e-4, idx.size)
        lon[idx] += rng.normal(0, 1e-4, idx.size)
        core.positions(
            PositionBatch.from_columns(
                vehicle=idx,
                ts=np.full(idx.size, _now_ms()),
                lat=lat[idx],
                lon=lon[idx],
                speed=rng.uniform(0, 90, idx.size).astype(np.float32),
            )
        )
        if on_batch is not None:
            on_batch()
        k += 1
        next_t += 0.1
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))


async def _measure(
    serve: Any, url: str, clients: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_client_main, args=(url, clients, warmup_s, seconds, child))
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        msg = await loop.run_in_executor(None, parent.recv)
        assert msg == "ready"
        await asyncio.sleep(warmup_s)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        res: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return {
        "deliveries_per_s": round(res["items"] / seconds),
        "frames_per_s": round(res["frames"] / seconds, 1),
        "server_cpu_cores": round(cpu / wall, 3),
        "age_ms_p50": round(res["age_p50"], 1),
        "age_ms_p99": round(res["age_p99"], 1),
        "age_samples": res["age_samples"],
    }


async def _feed_server(
    vehicles: int, clients: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    from stream.server import FeedServer

    core = FeedCore(_registry(vehicles), interval_ms=INTERVAL_MS, client_buffer=64)

    async def auth(token: str) -> str | None:
        return "city" if token == "bench" else None

    feed = FeedServer(core, auth)
    app = Starlette(routes=[WebSocketRoute("/ws/live", feed.endpoint)])
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_max_size=1 << 20,
            log_level="warning",
            lifespan="off",
        )
    )
    stop = asyncio.Event()
    web = asyncio.create_task(server.serve())
    ticker = asyncio.create_task(feed.run())
    driver = asyncio.create_task(_drive(core, vehicles, stop))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        out = await _measure(
            None, f"ws://127.0.0.1:{port}/ws/live?token=bench", clients, warmup_s, seconds
        )
    finally:
        stop.set()
        await driver
        ticker.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await web
    out["superseded"] = core.stats.superseded
    out["slow_disconnects"] = core.stats.slow_disconnects
    return out


async def _broadcast_baseline(
    vehicles: int, clients: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    core = FeedCore(_registry(vehicles), interval_ms=INTERVAL_MS)
    core.connect(0, "city", _now_ms())
    core.drain(0)
    conns: set[ServerConnection] = set()
    snapshot = '{"type":"snapshot","seq":0,"vehicles":[],"alarms":[]}'

    async def handler(ws: ServerConnection) -> None:
        await ws.send(snapshot)
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def tick(stop: asyncio.Event) -> None:
        while not stop.is_set():
            core.frames_due(_now_ms())
            for frame in core.drain(0):
                broadcast(conns, frame.decode())
            await asyncio.sleep(INTERVAL_MS / 1000)

    port = _free_port()
    stop = asyncio.Event()
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 20):
        ticker = asyncio.create_task(tick(stop))
        driver = asyncio.create_task(_drive(core, vehicles, stop))
        try:
            return await _measure(None, f"ws://127.0.0.1:{port}/", clients, warmup_s, seconds)
        finally:
            stop.set()
            await driver
            await ticker


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the feed and the broadcast baseline; returns one JSON-able dict."""
    vehicles, clients, warmup_s, seconds = (
        (2_000, 20, 2.0, 4.0) if quick else (10_000, 100, 4.0, 15.0)
    )

    async def both() -> dict[str, Any]:
        feed = await _feed_server(vehicles, clients, warmup_s, seconds)
        base = await _broadcast_baseline(vehicles, clients, warmup_s, seconds)
        return {"feed": feed, "baseline_broadcast": base}

    res = asyncio.run(both())
    return {
        "name": "feed",
        "vehicles": vehicles,
        "clients": clients,
        "reports_per_vehicle_per_s": 1,
        "feed_interval_ms": INTERVAL_MS,
        "seconds": seconds,
        **res,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=False), indent=2))
