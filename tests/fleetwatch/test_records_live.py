"""A vehicle registered through the API is tracked within a second, without a restart.

Real Mosquitto, real SQLite; with two nodes real PostgreSQL (the shared records)
and real Redis (the command channel and the feed relay).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
import psycopg
import pytest
import websockets

from tests.conftest import free_port
from tests.fleetwatch.conftest import WORKDAY_10AM, frames_until, running_service, service_config

pytestmark = pytest.mark.services

TOKEN = "records-admin-token-1"
SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"
NEW_CAR = {
    "id": "n1",
    "plate": "川X55555",
    "org": "c",
    "terminal": "13955555555",
    "vehicle_class": "执法执勤",
    "status": "封存",  # sealed: its first movement is a critical alarm
}


def _cfg(tmp: Path, prefix: str, port: int, **tables: Any) -> Any:
    web = {"tokens": [{"token": TOKEN, "org": "c", "role": "admin"}], **tables.pop("web", {})}
    return service_config(
        tmp,
        prefix,
        port,
        vehicles=[("v1", "13900000001", "川X00001")],
        token=TOKEN,
        web=web,
        rules={"offline": {"enabled": False}, "speeding": {"default_limit_kmh": 80}},
        **tables,
    )


async def _publish(mosquitto: tuple[str, int], topic: str, k0: int = 0, n: int = 3) -> None:
    async with aiomqtt.Client(*mosquitto) as pub:
        for k in range(k0, k0 + n):
            body = {
                "ts": WORKDAY_10AM + k * 5000,
                "lat": 30.45,
                "lon": 106.63,
                "speed": 30.0,
                "acc": True,
            }
            await pub.publish(topic, orjson.dumps(body), qos=1)


def _seen(frames: list[dict[str, Any]]) -> tuple[bool, bool]:
    plates = {i["plate"] for f in frames if f["type"] == "positions" for i in f["items"]}
    alarms = [f["alarm"] for f in frames if f["type"] == "alarm"]
    # severity at the top level once the feed helper's change lands; in detail today
    sealed = any(
        a["kind"] == "sealed_moving"
        and (a.get("severity") or a["detail"].get("severity")) == "critical"
        for a in alarms
    )
    return "川X55555" in plates, sealed


async def test_a_vehicle_created_through_the_api_is_live_within_a_second(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
) -> None:
    port = free_port()
    prefix = f"rec{unique}"
    cfg = _cfg(tmp_path, prefix, port)
    async with running_service(cfg) as svc:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/live?token={TOKEN}") as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                # Before: the terminal is unknown, its positions are dead letters.
                await _publish(mosquitto, f"{prefix}/fleet/13955555555/position", 0, 1)
                # The broker's PUBACK is not the service's receipt: wait for the dead letter, or
                # the create below may land first and the position be accepted.
                rejected = svc.ingest.core.rejected
                deadline = time.monotonic() + 5
                while rejected["unknown_terminal"] < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert rejected["unknown_terminal"] == 1
                auth = {"Authorization": f"Bearer {TOKEN}"}
                r = await c.post("/api/vehicles", json=NEW_CAR, headers=auth)
                assert r.status_code == 201, r.text
                t0 = time.monotonic()
                await _publish(mosquitto, f"{prefix}/fleet/13955555555/position", 1)
                frames = await frames_until(ws, lambda f: all(_seen(f)), timeout=5)
                took = time.monotonic() - t0
                assert all(_seen(frames))
                assert took < 1.0, f"took {took:.2f} s"
                hist = (await c.get("/api/vehicles/n1/history", headers=auth)).json()["history"]
                assert [h["action"] for h in hist] == ["create"]
        assert svc.ingest.core.rejected["unknown_terminal"] == 1
    assert svc.pipeline.positions_stored == 3


async def test_two_nodes_hear_a_new_vehicle_through_redis(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    redis_server: tuple[str, int],
    postgres: tuple[str, int],
    unique: str,
) -> None:
    """Node A takes the API call; only node B ingests; A's feed still shows the car."""
    prefix = f"rec2{unique}"
    schema = f"t_rec2_{unique}"
    live = {
        "kind": "redis",
        "redis_url": f"redis://{redis_server[0]}:{redis_server[1]}/0",
        "key_prefix": f"t{unique}:",
    }
    store = {"kind": "postgres", "postgres_dsn": SHARED_DSN, "postgres_schema": schema}
    pa, pb = free_port(), free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = _cfg(
        tmp_path / "a",
        prefix,
        pa,
        live=live,
        store={**store, "spool_dir": str(tmp_path / "a/spool")},
        mqtt={"client_id": f"fw-a-{unique}", "json_topic": f"{prefix}/none/+/position"},
    )
    cfg_b = _cfg(
        tmp_path / "b",
        prefix,
        pb,
        live=live,
        store={**store, "spool_dir": str(tmp_path / "b/spool")},
        mqtt={"client_id": f"fw-b-{unique}"},
    )
    try:
        async with running_service(cfg_a) as a, running_service(cfg_b) as b:
            await asyncio.wait_for(b.commands.listening.wait(), 5)
            async with websockets.connect(f"ws://127.0.0.1:{pa}/ws/live?token={TOKEN}") as ws:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pa}") as c:
                    r = await c.post(
                        "/api/vehicles", json=NEW_CAR, headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    assert r.status_code == 201, r.text
                t0 = time.monotonic()
                deadline = t0 + 1.0
                while b.registry.by_terminal("13955555555") is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert b.registry.by_terminal("13955555555") is not None, "node B did not hear it"
                await _publish(mosquitto, f"{prefix}/fleet/13955555555/position", 1)
                frames = await frames_until(ws, lambda f: all(_seen(f)), timeout=5)
                assert all(_seen(frames))
                assert time.monotonic() - t0 < 1.5
            assert a.ingest.core.rejected["unknown_terminal"] == 0
    finally:
        with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
