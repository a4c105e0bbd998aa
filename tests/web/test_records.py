"""Orders and fence changes made through the API survive a restart; manual close reaches the
rules engine; events the web causes go out through ``ctx.on_events``."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest
from shapely.geometry import box

from fleetwatch.batch import PositionBatch
from fleetwatch.config import Config
from fleetwatch.registry import Registry
from rules.engine import RulesEngine
from rules.events import AlarmEvent
from stream.feed import FeedCore
from tests.conftest import require_service
from tests.web.conftest import Clock, login, web_config
from web.app import create_app
from web.context import AppContext
from web.records import apply_fence_changes

SH = ZoneInfo("Asia/Shanghai")
SAT_10 = int(dt.datetime(2026, 11, 21, 10, 0, tzinfo=SH).timestamp() * 1000)  # a Saturday


def base_fences() -> Any:
    from geofence.fence import Fence
    from geofence.index import LiveFences

    return LiveFences(
        [
            Fence.polygon("cfg-a", "配置A", "city", "forbidden", box(106.0, 30.0, 106.01, 30.01)),
            Fence.polygon("cfg-b", "配置B", "city", "forbidden", box(106.2, 30.2, 106.21, 30.21)),
        ]
    )


class Node:
    """One web app over a fresh engine, feed and fences — as after a process restart."""

    def __init__(self, cfg: Config, *, capture: bool, commands: Any = None) -> None:
        from store.sqlite import SQLiteHistory

        self.cfg = cfg
        self.reg = Registry.from_config(cfg)
        self.fences = base_fences()
        self.engine = RulesEngine(
            cfg.rules, self.reg, fences=lambda: self.fences.index, timezone="Asia/Shanghai"
        )
        self.history = SQLiteHistory(cfg.store)
        self.events: list[AlarmEvent] = []
        self.clock = Clock(SAT_10 + 3_600_000)
        self.ctx = AppContext(
            config=cfg,
            registry=self.reg,
            feed=FeedCore(self.reg, interval_ms=100),
            history=self.history,
            rules=self.engine,
            fences=self.fences,
            clock_ms=self.clock,
            on_events=self.events.extend if capture else None,
            commands=commands,
        )
        self.app = create_app(self.ctx)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.history.open(self.reg)
        self._life = self.app.router.lifespan_context(self.app)
        await self._life.__aenter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://fw"
        )
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._life.__aexit__(None, None, None)
        await self.history.close()


def saturday_trip(vehicle: int, minutes: int, start: int = SAT_10) -> PositionBatch:
    n = minutes * 2 + 1
    return PositionBatch.from_columns(
        vehicle=np.full(n, vehicle, dtype=np.int32),
        ts=start + np.arange(n, dtype=np.int64) * 30_000,
        lat=np.full(n, 30.45),
        lon=106.63 + np.arange(n) * 1e-4,
        speed=np.full(n, 40.0),
        acc=np.ones(n, dtype=bool),
    )


def feature(fid: str, name: str, x: float) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": fid, "name": name, "use": "forbidden", "org": "wusheng"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x, 30.4], [x + 0.1, 30.4], [x + 0.1, 30.5], [x, 30.4]]],
        },
    }


async def test_orders_and_fence_changes_come_back_after_a_restart(tmp_path: Path) -> None:
    cfg = web_config(tmp_path)
    node = Node(cfg, capture=True)
    async with node as client:
        op = await login(client, "ws-op")
        admin = await login(client, "admin")
        body = {"id": "O-1", "vehicle": "V2", "type": "holiday", "start": SAT_10 - 3_600_000}
        r = await client.post("/api/orders", headers=op, json={**body, "end": SAT_10 + 7_200_000})
        assert r.status_code == 200, r.text
        r = await client.post(
            "/api/orders", headers=op, json={**body, "id": "O-2", "end": SAT_10 + 60_000}
        )
        assert r.status_code == 200  # stays pending
        assert (
            (await client.post("/api/orders", headers=op, json={**body, "end": SAT_10}))
            .json()["error"]
            .startswith("order 'O-1' exists")
        )
        r = await client.post("/api/orders/O-1/approve", headers=op)
        assert r.json()["approved_by"] == "ws-op"
        csv = (
            "id,vehicle,type,start,end,approved\nC-1,V3,local,2026-11-20T08:00,2026-11-20T20:00,1\n"
        )
        assert (await client.post("/api/orders/import", headers=op, content=csv)).status_code == 200

        assert (
            await client.post("/api/fences", headers=admin, json=feature("new", "新", 106.6))
        ).status_code == 200
        r = await client.put(
            "/api/fences/cfg-a", headers=admin, json=feature("cfg-a", "改A", 106.7)
        )
        assert r.status_code == 200
        assert (await client.delete("/api/fences/cfg-b", headers=admin)).status_code == 200
        assert (
            await client.post("/api/fences", headers=admin, json=feature("gone", "删", 106.8))
        ).status_code == 200
        assert (await client.delete("/api/fences/gone", headers=admin)).status_code == 200
        before = [(f.id, f.name) for f in node.fences.index.fences]
        assert before == [("cfg-a", "改A"), ("new", "新")]

    again = Node(cfg, capture=True)
    async with again as client:
        assert [(f.id, f.name) for f in again.fences.index.fences] == before
        assert again.fences.index.fences[0].org == "wusheng"
        op = await login(client, "ws-op")
        orders = {
            o["id"]: o for o in (await client.get("/api/orders", headers=op)).json()["orders"]
        }
        assert set(orders) == {"O-1", "O-2", "C-1"}
        assert orders["O-1"]["approved"] and orders["O-1"]["approved_by"] == "ws-op"
        assert orders["O-1"]["approved_at"] == node.clock.now
        assert not orders["O-2"]["approved"] and orders["O-2"]["approved_by"] is None
        assert orders["C-1"]["approved"]
        # the engine has the approved orders back: V2's Saturday trip is excused, V1's is not
        events = again.engine.process(
            PositionBatch.concat([saturday_trip(1, 10), saturday_trip(0, 10)])
        )
        assert [(e.vehicle_id, e.kind, e.action) for e in events] == [("V1", "off_hours", "open")]
        assert len(again.engine.orders) == 2
        # an order approved now (after the restart) is taken once
        r = await client.post("/api/orders/O-2/approve", headers=op)
        assert r.json()["approved"] and len(again.engine.orders) == 3


async def test_an_order_approved_after_the_fact_covers_and_reaches_on_events(
    tmp_path: Path,
) -> None:
    node = Node(web_config(tmp_path), capture=True)
    async with node as client:
        opened = node.engine.process(saturday_trip(1, 10))
        assert [e.action for e in opened] == ["open"]
        op = await login(client, "ws-op")
        r = await client.post(
            "/api/orders",
            headers=op,
            json={
                "id": "late",
                "vehicle": "V2",
                "type": "holiday",
                "start": SAT_10 - 1,
                "end": SAT_10 + 3_600_000,
            },
        )
        assert r.status_code == 200
        assert node.events == []
        await client.post("/api/orders/late/approve", headers=op)
        [ev] = node.events
        assert ev.id == opened[0].id and ev.action == "update" and ev.covered


async def test_without_on_events_the_web_writes_feed_and_history_itself(tmp_path: Path) -> None:
    node = Node(web_config(tmp_path), capture=False)
    async with node as client:
        opened = node.engine.process(saturday_trip(1, 10))
        node.ctx.feed.alarm(opened[0])
        await node.history.write_alarm_events(opened)
        op = await login(client, "ws-op")
        csv = (
            "id,vehicle,type,start,end,approved\nL,V2,holiday,2026-11-21T09:00,2026-11-21T12:00,1\n"
        )
        assert (await client.post("/api/orders/import", headers=op, content=csv)).status_code == 200
        [item] = node.ctx.feed.alarm_items()
        assert item["detail"]["covered"] is True
        [a] = (await client.get("/api/alarms", headers=op)).json()["alarms"]
        assert a["covered"] is True


async def test_manual_close_closes_the_engine_episode(tmp_path: Path) -> None:
    node = Node(web_config(tmp_path), capture=True)
    async with node as client:
        opened = node.engine.process(saturday_trip(1, 10))
        node.ctx.feed.alarm(opened[0])
        op = await login(client, "ws-op")
        r = await client.post(
            f"/api/alarms/{opened[0].id}/close", headers=op, json={"note": "已处理"}
        )
        assert r.status_code == 200, r.text
        assert node.engine.open_episodes() == []
        [ev] = node.events
        assert ev.action == "close" and ev.ended_at == node.clock.now
        assert ev.detail["closed_by"] == "ws-op" and ev.detail["closed_by_hand"] is True
        # the trip goes on: no second close; a new episode only after the debounce
        more = node.engine.process(saturday_trip(1, 5, SAT_10 + 11 * 60_000))
        assert [(e.action, e.started_at) for e in more] == [("open", SAT_10 + 11 * 60_000)]


def test_fence_changes_are_laid_over_the_base_in_order() -> None:
    class F:
        def __init__(self, id: str, v: int = 0) -> None:
            self.id, self.v = id, v

    base = [F("a"), F("b"), F("c")]
    out = apply_fence_changes(
        base, [("b", F("b", 1)), ("a", None), ("d", F("d")), ("a", F("a", 2))]
    )
    assert [(f.id, f.v) for f in out] == [("b", 1), ("c", 0), ("d", 0), ("a", 2)]


@pytest.fixture
async def pg_schema(unique: str) -> AsyncIterator[str]:
    require_service("postgres")
    import psycopg

    schema = f"fw_web_{unique}"
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{dsn}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.services
async def test_orders_and_fences_persist_in_postgresql(tmp_path: Path, pg_schema: str) -> None:
    # the store's own schema too (the orders live beside the records, store.orders)
    schema = pg_schema.rsplit("%3D", 1)[1]
    store = {"kind": "postgres", "postgres_dsn": pg_schema, "postgres_schema": schema}
    cfg = web_config(tmp_path, store=store)
    for run in range(2):
        node = Node(cfg, capture=True)
        node.history = _NoHistory()  # type: ignore[assignment]
        node.ctx.history = None
        async with node as client:
            op = await login(client, "ws-op")
            admin = await login(client, "admin")
            if run == 0:
                body = {"id": "P-1", "vehicle": "V2", "type": "holiday", "start": 1, "end": 2}
                assert (await client.post("/api/orders", headers=op, json=body)).status_code == 200
                await client.post("/api/orders/P-1/approve", headers=op)
                await client.delete("/api/fences/cfg-a", headers=admin)
            else:
                [o] = (await client.get("/api/orders", headers=op)).json()["orders"]
                assert o["approved"] and o["approved_by"] == "ws-op"
                assert [f.id for f in node.fences.index.fences] == ["cfg-b"]
                assert len(node.engine.orders) == 1


class _NoHistory:
    async def open(self, registry: Registry) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.mark.services
async def test_commands_reach_the_engine_of_the_node_that_owns_the_vehicle(
    tmp_path: Path, redis_server: tuple[str, int], unique: str
) -> None:
    from web.commands import RedisCommands

    cfg = web_config(tmp_path)
    url, prefix = "redis://127.0.0.1:6379/0", f"t{unique}:"
    ca, cb = RedisCommands(url, prefix, retry_s=0.1), RedisCommands(url, prefix, retry_s=0.1)
    a = Node(cfg, capture=True, commands=ca)
    b = Node(cfg, capture=True, commands=cb)  # b ingests V2
    try:
        async with a as client, b:
            await ca.listening.wait()
            await cb.listening.wait()
            opened = b.engine.process(saturday_trip(1, 10))
            op = await login(client, "ws-op")
            admin = await login(client, "admin")
            body = {"id": "X", "vehicle": "V2", "type": "local", "start": 0, "end": 1}
            await client.post("/api/orders", headers=op, json=body)
            await client.post("/api/orders/X/approve", headers=op)
            await until(lambda: len(b.engine.orders) == 1)
            a.ctx.feed.alarm(opened[0])
            r = await client.post(f"/api/alarms/{opened[0].id}/close", headers=op, json={})
            assert r.status_code == 200
            await until(lambda: b.engine.open_episodes() == [])
            [ev] = b.events
            assert ev.action == "close" and ev.detail["closed_by"] == "ws-op"
            [synthetic] = a.events  # a does not hold the episode: it closes the record anyway
            assert synthetic.id == ev.id and synthetic.action == "close"
            await client.delete("/api/fences/cfg-a", headers=admin)
            await until(lambda: [f.id for f in b.fences.index.fences] == ["cfg-b"])
    finally:
        await ca.close()
        await cb.close()


async def until(cond: Any, timeout: float = 5.0) -> None:
    import asyncio

    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
