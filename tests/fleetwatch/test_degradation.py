"""Outages of PostgreSQL and Redis, for real: the live feed and alarms keep working.

Each test runs the whole service against its own throwaway PostgreSQL or Redis server
(tests/private_services.py), stops that server in the middle, and starts it again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psycopg
import pytest
import websockets

from tests.conftest import free_port
from tests.fleetwatch.conftest import WORKDAY_10AM, frames_until, running_service, service_config
from tests.private_services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.services, pytest.mark.slow]

TOKEN = "degrade-room-token"
T0 = WORKDAY_10AM
VEHICLES = [(f"v{i}", f"1380000{i:04d}", f"川X2{i:04d}") for i in range(3)]


async def publish(prefix: str, port: int, k0: int, n: int, speed: float) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as pub:
        for k in range(k0, k0 + n):
            body = {"ts": T0 + k * 5000, "lat": 30.45, "lon": 106.63 + k * 1e-4, "speed": speed}
            await pub.publish(f"{prefix}/fleet/13800000001/position", orjson.dumps(body), qos=1)


def _count(dsn: str, schema: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            row = c.execute(f"SELECT count(*) FROM {schema}.positions").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


async def test_postgres_outage_spools_positions_and_keeps_alarms_live(
    private_postgres: PrivatePostgres, mosquitto: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    prefix, port = f"dg{unique}", free_port()
    cfg = service_config(
        tmp_path,
        prefix,
        port,
        vehicles=VEHICLES,
        token=TOKEN,
        store={
            "kind": "postgres",
            "postgres_dsn": private_postgres.dsn,
            "postgres_schema": "fw",
            "spool_dir": str(tmp_path / "spool"),
            "retry_interval_s": 0.3,
            "connect_timeout_s": 1,
        },
    )
    async with running_service(cfg) as svc:
        await publish(prefix, mosquitto[1], 0, 3, 40.0)
        deadline = time.monotonic() + 10
        while _count(private_postgres.dsn, "fw") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _count(private_postgres.dsn, "fw") == 3

        private_postgres.stop()  # the database goes away
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/live?token={TOKEN}") as ws:
            await publish(prefix, mosquitto[1], 3, 6, 120.0)  # 25 s over the limit: an alarm

            def alarm_open(frames: list[dict[str, Any]]) -> bool:
                return any(f["type"] == "alarm" for f in frames)

            frames = await frames_until(ws, alarm_open)
        assert [f["alarm"]["kind"] for f in frames if f["type"] == "alarm"] == ["speeding"]
        deadline = time.monotonic() + 10  # the feed is ahead of the (spooled) write
        while svc.history.spooled_rows < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert svc.history.spooled_rows >= 6
        health = svc.health()
        assert health["ok"] is False
        assert any("history degraded" in p for p in health["problems"])
        scraped = svc.metrics.registry.get_sample_value(
            "fleetwatch_degraded", {"service": "history"}
        )
        assert scraped == 1.0

        private_postgres.start()  # it comes back: the spool is written in order
        deadline = time.monotonic() + 20
        while _count(private_postgres.dsn, "fw") < 9 and time.monotonic() < deadline:
            await publish(prefix, mosquitto[1], 9, 1, 40.0)  # writes trigger the retry
            await asyncio.sleep(0.3)
        assert _count(private_postgres.dsn, "fw") >= 9
        assert svc.health()["ok"] is True
        alarms = await svc.history.alarms()
        assert [a["kind"] for a in alarms] == ["speeding"]


async def test_redis_outage_falls_back_to_memory_and_recovers(
    private_redis: PrivateRedis, mosquitto: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    prefix, port = f"dr{unique}", free_port()
    cfg = service_config(
        tmp_path,
        prefix,
        port,
        vehicles=VEHICLES,
        token=TOKEN,
        live={"kind": "redis", "redis_url": private_redis.url, "retry_interval_s": 0.3},
    )
    async with running_service(cfg) as svc:
        await publish(prefix, mosquitto[1], 0, 2, 40.0)
        await asyncio.sleep(0.5)
        private_redis.stop()
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/live?token={TOKEN}") as ws:
            await publish(prefix, mosquitto[1], 2, 2, 40.0)

            def latest(frames: list[dict[str, Any]]) -> bool:
                return any(
                    i["ts"] == T0 + 3 * 5000
                    for f in frames
                    if f["type"] in ("positions", "snapshot")
                    for i in f.get("items", f.get("vehicles", []))
                )

            await frames_until(ws, latest)
        assert any("live state degraded" in p for p in svc.health()["problems"])
        snap = await svc.live.snapshot(T0 + 20_000)
        assert any(v["ts"] == T0 + 3 * 5000 for v in snap["vehicles"])

        private_redis.start()
        deadline = time.monotonic() + 10
        while svc.live.degraded and time.monotonic() < deadline:
            await publish(prefix, mosquitto[1], 4, 1, 40.0)
            await asyncio.sleep(0.3)
        assert not svc.live.degraded
        assert svc.health()["ok"] is True
