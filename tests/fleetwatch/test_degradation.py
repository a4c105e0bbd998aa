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

from fleetwatch.config import parse_config
from fleetwatch.service import build_service, run_service
from tests.conftest import free_port
from tests.private_services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.services, pytest.mark.slow]

TOKEN = "degrade-room-token"
T0 = 1_763_949_600_000  # Monday 2025-11-24 10:00 +08:00: working hours


def config(tmp_path: Path, prefix: str, web_port: int, **over: Any) -> Any:
    doc: dict[str, Any] = {
        "mqtt": {
            "client_id": f"fw-dg-{prefix}",
            "json_topic": f"{prefix}/fleet/+/position",
            "jt808_topic": "",
            "persistent_session": False,
        },
        "ingest": {"batch_max_age_ms": 20, "max_past_days": 36500},
        "store": {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")},
        "web": {
            "port": web_port,
            "feed_interval_ms": 100,
            "tokens": [{"token": TOKEN, "org": "c", "role": "operator"}],
        },
        "rules": {"speeding": {"min_duration_s": 10}, "offline": {"enabled": False}},
        "orgs": [{"id": "c", "name": "City"}],
        "vehicles": [
            {"id": f"v{i}", "plate": f"川X2{i:04d}", "terminal": f"1380000{i:04d}", "org": "c"}
            for i in range(3)
        ],
    }
    for k, v in over.items():
        doc[k] = {**doc.get(k, {}), **v}
    return parse_config(doc)


async def publish(prefix: str, port: int, k0: int, n: int, speed: float) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as pub:
        for k in range(k0, k0 + n):
            body = {"ts": T0 + k * 5000, "lat": 30.45, "lon": 106.63 + k * 1e-4, "speed": speed}
            await pub.publish(f"{prefix}/fleet/13800000001/position", orjson.dumps(body), qos=1)


async def frames_until(ws: Any, pred: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
        except TimeoutError:
            break
        if pred(got):
            return got
    raise AssertionError(f"not seen within {timeout}s: {got[-3:]}")


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
    cfg = config(
        tmp_path,
        prefix,
        port,
        store={
            "kind": "postgres",
            "postgres_dsn": private_postgres.dsn,
            "postgres_schema": "fw",
            "spool_dir": str(tmp_path / "spool"),
            "retry_interval_s": 0.3,
            "connect_timeout_s": 1,
        },
    )
    stop, started = asyncio.Event(), asyncio.Event()
    svc = build_service(cfg)
    task = asyncio.create_task(run_service(cfg, stop, started=started, service=svc))
    try:
        await asyncio.wait_for(started.wait(), 20)
        await asyncio.wait_for(svc.ingest.connected.wait(), 10)
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
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_redis_outage_falls_back_to_memory_and_recovers(
    private_redis: PrivateRedis, mosquitto: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    prefix, port = f"dr{unique}", free_port()
    cfg = config(
        tmp_path,
        prefix,
        port,
        live={"kind": "redis", "redis_url": private_redis.url, "retry_interval_s": 0.3},
    )
    stop, started = asyncio.Event(), asyncio.Event()
    svc = build_service(cfg)
    task = asyncio.create_task(run_service(cfg, stop, started=started, service=svc))
    try:
        await asyncio.wait_for(started.wait(), 20)
        await asyncio.wait_for(svc.ingest.connected.wait(), 10)
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
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
