"""End to end over JT/T 808: real TCP terminals → gateway → Mosquitto → service → /ws/live.

Three terminals register, authenticate and report through the gateway (in this
process, on a free port, publishing under a unique topic prefix) to the real
broker, where the service subscribes to that prefix: one speeds for 40 s, one
presses SOS, one comes out of a blind area with a 0x0704 back-fill that both
speeds and carries SOS. The live feed must show the positions, one speeding and
one terminal_alarm episode and nothing from the back-fill; the back-filled
points must be in the stored history.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from fleetwatch.config import Config
from ingest.jt808.config import GatewayConfig
from ingest.jt808.messages import Location
from ingest.jt808.registrations import SqliteRegistrations
from ingest.jt808.session import Provisioning
from ingest.jt808.tcp import GatewayStats, run_gateway
from simulator.tcp import TcpOptions, TerminalClient, TerminalStats
from tests.conftest import free_port
from tests.fleetwatch.conftest import WORKDAY_10AM, running_service, service_config

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

TOKEN = "jt808-e2e-room-token"
SOS = 1 << 0  # JT/T 808 table 24, bit 0: emergency alarm
ACC_FIXED = 0b11  # JT/T 808 table 25, bit 0 ACC on, bit 1 positioned
PLATES = {1: "川X00001", 2: "川X00002", 3: "川X00003"}


def config(tmp_path: Path, prefix: str, web_port: int) -> Config:
    return service_config(
        tmp_path,
        prefix,
        web_port,
        vehicles=[(f"v{i}", f"1390000000{i}", p) for i, p in PLATES.items()],
        token=TOKEN,
        rules={
            "speeding": {"min_duration_s": 10, "close_after_s": 10, "default_limit_kmh": 80},
            "terminal_alarm": {"close_after_s": 10},
        },
    )


def at(k: int, *, speed: float, alarm: int = 0, step_s: int = 5, lat0: float = 30.45) -> Location:
    return Location(
        lat=lat0 + k * 1e-3,
        lon=106.63,
        time_ms=WORKDAY_10AM + k * step_s * 1000,
        speed_kmh=speed,
        heading=0,
        alt_m=300,
        alarm=alarm,
        status=ACC_FIXED,
        mileage_km=1000.0 + k * 0.1,
    )


@contextlib.asynccontextmanager
async def gateway(
    broker: tuple[str, int], prefix: str, fleet: Config
) -> AsyncIterator[tuple[str, int]]:
    cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=broker[0],
        mqtt_port=broker[1],
        mqtt_client_id=f"test-e2e808-gw-{secrets.token_hex(4)}",
        topic_prefix=f"{prefix}/jt808",
    )
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway(
            cfg,
            provisioning=Provisioning.from_vehicles(fleet.vehicles),  # the registry's terminals
            registrations=SqliteRegistrations(":memory:"),
            stop=stop,
            started=started,
            stats=GatewayStats(),
        )
    )
    try:
        yield await asyncio.wait_for(started, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def drive_terminals(addr: tuple[str, int]) -> TerminalStats:
    """The three terminals, concurrently, each on its own connection."""
    stats = TerminalStats()
    opts = TcpOptions(host=addr[0], port=addr[1], heartbeat_s=5.0)

    async def terminal(i: int) -> TerminalClient:
        c = TerminalClient(f"1390000000{i}", opts, stats, plate=PLATES[i])
        await c.connect()
        await c.register()
        await c.authenticate()
        await c.heartbeat()
        return c

    async def speeder() -> None:
        # 40 s above the limit (one report per 5 s), then 30 s below: one episode.
        c = await terminal(1)
        for k in range(15):
            await c.send_location(at(k, speed=110.0 if k < 8 else 50.0))
        await c.close()

    async def sos() -> None:
        # SOS held for 20 s, then cleared for 40 s: one terminal_alarm episode, closed.
        c = await terminal(2)
        for k in range(13):
            await c.send_location(at(k, speed=30.0, alarm=SOS if 2 <= k < 6 else 0))
        await c.close()

    async def blind_area() -> None:
        # Live at 0 and 10 s; no signal from 20 to 110 s, where it sped and raised SOS;
        # the network comes back: a new connection, the blind area as 0x0704 type 1,
        # then live reports again, calm.
        c = await terminal(3)
        for k in (0, 1):
            await c.send_location(at(k, speed=40.0, step_s=10, lat0=30.5))
        await c.drain()
        await c.reconnect()
        await c.send_batch(
            [at(k, speed=120.0, alarm=SOS, step_s=10, lat0=30.5) for k in range(2, 12)],
            backfill=True,
        )
        for k in (12, 13, 14):
            await c.send_location(at(k, speed=40.0, step_s=10, lat0=30.5))
        await c.close()

    await asyncio.gather(speeder(), sos(), blind_area())
    return stats


async def recv_until(ws: Any, pred: Any, timeout: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        except TimeoutError:
            break
        got.append(orjson.loads(raw))
        if pred(got):
            return got
    raise AssertionError(f"condition not met within {timeout}s; got {got[-5:]}")


async def test_terminals_over_tcp_reach_the_feed_and_backfill_stays_quiet(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
) -> None:
    prefix = f"e2e808{unique}"
    web_port = free_port()
    cfg = config(tmp_path, prefix, web_port)
    async with running_service(cfg) as svc:
        url = f"ws://127.0.0.1:{web_port}/ws/live?token={TOKEN}"
        async with websockets.connect(url) as ws, gateway(mosquitto, prefix, cfg) as addr:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["type"] == "snapshot"
            stats = await drive_terminals(addr)

            def done(frames: list[dict[str, Any]]) -> bool:
                alarms = [f["alarm"] for f in frames if f["type"] == "alarm"]
                closed = {a["kind"] for a in alarms if a["state"] == "closed"}
                plates = {
                    i["plate"] for f in frames if f["type"] == "positions" for i in f["items"]
                }
                return plates == set(PLATES.values()) and {"speeding", "terminal_alarm"} <= closed

            frames = await recv_until(ws, done, timeout=15)
            # Everything is stored before we look for anything the back-fill might raise.
            deadline = time.monotonic() + 10
            while svc.pipeline.positions_stored < 15 + 13 + 15 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            with contextlib.suppress(AssertionError):
                frames += await recv_until(ws, lambda _: False, timeout=0.5)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as http:
                window = {"from": WORKDAY_10AM - 60_000, "to": WORKDAY_10AM + 3_600_000}
                r = await http.get("/api/vehicles/v3/track", params=window)
                r.raise_for_status()
                track = r.json()
                r = await http.get("/api/alarms", params={"limit": 100})
                r.raise_for_status()
                stored_alarms = r.json()["alarms"]

    # Every frame over TCP was acknowledged by the gateway (after the broker took it).
    s = stats.summary()
    assert s["frames"] == s["acked"] and s["refused"] == s["unacknowledged"] == s["late"] == 0, s
    assert s["positions"] == 15 + 13 + 15 and s["backfill_positions"] == 10
    assert svc.pipeline.positions_stored == 15 + 13 + 15
    assert not svc.ingest.core.rejected, svc.ingest.core.rejected

    # The live feed: positions of all three, one speeding and one SOS episode, nothing else.
    items = [i for f in frames if f["type"] == "positions" for i in f["items"]]
    assert {i["plate"] for i in items} == set(PLATES.values())
    alarms = [f["alarm"] for f in frames if f["type"] == "alarm"]
    assert {a["vehicle"] for a in alarms} == {"v1", "v2"}, alarms
    by_kind: dict[str, set[str]] = {}
    for a in alarms:
        by_kind.setdefault(a["kind"], set()).add(a["id"])
    assert {k: len(ids) for k, ids in by_kind.items()} == {"speeding": 1, "terminal_alarm": 1}
    sos = next(a for a in alarms if a["kind"] == "terminal_alarm")
    assert sos["vehicle"] == "v2" and sos["started_at"] == WORKDAY_10AM + 10_000
    assert "sos" in orjson.dumps(sos["detail"]).decode()

    # The back-fill is in the history, in time order, and raised no live alarm: what it
    # found is recorded only as closed back-fill episodes.
    want_ts = [WORKDAY_10AM + k * 10_000 for k in range(15)]
    assert track["points"]["ts"] == want_ts
    assert track["points"]["speed"][2:12] == [120.0] * 10
    v3 = [a for a in stored_alarms if a["vehicle"] == "v3"]
    assert v3 and all(a["backfill"] and a["state"] == "closed" for a in v3), v3
    assert {a["kind"] for a in v3} <= {"speeding", "terminal_alarm"}
    live = [a for a in stored_alarms if not a["backfill"]]
    assert sorted((a["vehicle"], a["kind"]) for a in live) == [
        ("v1", "speeding"),
        ("v2", "terminal_alarm"),
    ]
