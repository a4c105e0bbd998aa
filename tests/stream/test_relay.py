"""Several nodes, one live feed: RelayOut → Redis → RelayIn → every node's FeedCore."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from fleet.batch import PositionBatch
from fleet.errors import ServiceUnavailable
from fleet.events import AlarmEvent
from fleet.registry import Registry
from store.fanout import Fanout
from stream.feed import FeedCore
from stream.relay import RelayIn, RelayOut, batch_from_items, event_from_alarm

T0 = 1_764_034_200_000


def positions(vehicles: list[int], ts: int, speed: float = 40.0) -> PositionBatch:
    n = len(vehicles)
    return PositionBatch.from_columns(
        vehicle=vehicles,
        ts=np.full(n, ts),
        lat=30.4 + np.arange(n) * 0.01,
        lon=np.full(n, 106.6),
        speed=np.full(n, speed),
        heading=np.full(n, 90),
        acc=np.ones(n, dtype=bool),
    )


def alarm(v: int, vid: str, action: str = "open", ts: int = T0) -> AlarmEvent:
    return AlarmEvent(
        id=f"{vid}:speeding:{T0}",
        vehicle=v,
        vehicle_id=vid,
        kind="speeding",
        action=action,  # type: ignore[arg-type]
        started_at=T0,
        ts=ts,
        lat=30.4,
        lon=106.6,
        ended_at=ts if action == "close" else None,
        detail={"peak_kmh": 99.0, "note": "<b>x</b>"},
    )


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- pure parts, no Redis ----------------------------------------------------------------------


class FakeFanout:
    """Records what is published; ``down`` makes every publish fail as Redis would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.down = False

    async def publish_positions(self, items: list[dict[str, Any]]) -> int:
        return self._pub("positions", items)

    async def publish_alarm(self, payload: dict[str, Any]) -> int:
        return self._pub("alarm", payload)

    def _pub(self, kind: str, payload: Any) -> int:
        if self.down:
            raise ServiceUnavailable("redis", "connection refused")
        self.sent.append((kind, orjson.loads(orjson.dumps(payload))))
        return 1


def test_items_and_alarms_round_trip(registry: Registry) -> None:
    out = RelayOut(FakeFanout(), registry)
    b = positions([2, 0], T0)
    items = out._items(b)
    assert [i["vehicle"] for i in items] == ["V3", "V1"] and items[0]["org"] == "ws-police"
    back = batch_from_items([*items, {"vehicle": "nope", "ts": T0}], registry)
    assert back.vehicle.tolist() == [2, 0] and back.ts.tolist() == [T0, T0]
    assert np.allclose(back.lat, b.lat) and back.heading.tolist() == [90, 90]
    ev = alarm(3, "V4", "close", T0 + 5)
    again = event_from_alarm(orjson.loads(orjson.dumps(out._alarm_payload(ev))), registry)
    assert again == ev
    assert event_from_alarm({**out._alarm_payload(ev), "vehicle": "gone"}, registry) is None


async def test_conflation_is_counted_and_alarms_keep_their_order(registry: Registry) -> None:
    fan = FakeFanout()
    out = RelayOut(fan, registry, max_pending_rows=1)  # raised to one row per vehicle: 4
    for k in range(5):
        out.positions(positions([0, 1], T0 + k * 1000))  # nothing drains: no task yet
    out.alarm(alarm(0, "V1"))
    out.alarm(alarm(0, "V1", "close", T0 + 9))
    out.acknowledge("V1:speeding:1", {"user": "op"})
    assert out.stats.positions_in == 10 and out.stats.positions_conflated > 0
    task = asyncio.create_task(out.run())
    assert await out.drained()
    task.cancel()
    kinds = [k for k, _ in fan.sent]
    assert kinds == ["positions", "alarm", "alarm", "alarm"]
    [items] = [p for k, p in fan.sent if k == "positions"]
    assert sorted((i["vehicle"], i["ts"]) for i in items) == [("V1", T0 + 4000), ("V2", T0 + 4000)]
    assert out.stats.positions_conflated == 8 and out.stats.items_published == 2
    assert [p.get("action", p.get("op")) for k, p in fan.sent[1:]] == ["open", "close", "ack"]


async def test_redis_down_shows_locally_and_publishes_alarms_later(registry: Registry) -> None:
    fan = FakeFanout()
    local = FeedCore(registry, interval_ms=50)
    now = [0.0]
    out = RelayOut(fan, registry, local=local, retry_s=2.0, settle_s=0, clock=lambda: now[0])
    task = asyncio.create_task(out.run())
    try:
        fan.down = True
        out.positions(positions([0], T0))
        out.alarm(alarm(0, "V1"))
        await until(lambda: bool(local.alarm_items()))
        assert out.stats.degraded and local.has[0]
        assert out.stats.items_local_only == 1 and out.stats.alarms_waiting == 1
        fan.down = False
        now[0] = 10.0  # retry due
        out.positions(positions([1], T0 + 1))
        assert await out.drained()
        assert not out.stats.degraded
        # the alarm went out later, marked as shown here already; positions resumed
        assert [k for k, _ in fan.sent] == ["positions", "alarm"]
        assert fan.sent[1][1]["local"] is True
    finally:
        task.cancel()


# -- two nodes through the real Redis -----------------------------------------------------------


@dataclass
class Node:
    feed: FeedCore
    out: RelayOut
    relay: RelayIn
    fanout: Fanout
    tasks: list[asyncio.Task[None]]


@contextlib.asynccontextmanager
async def node(registry: Registry, url: str, prefix: str, live: Any = None) -> AsyncIterator[Node]:
    fan = Fanout(url, prefix)
    feed = FeedCore(registry, interval_ms=50)
    out = RelayOut(fan, registry, local=feed, retry_s=0.2, settle_s=0.5)
    relay = RelayIn(fan, feed, node=out.node, live=live, retry_s=0.1, stats=out.stats)
    tasks = [asyncio.create_task(out.run()), asyncio.create_task(relay.run())]
    try:
        await asyncio.wait_for(relay.subscribed.wait(), 5)
        yield Node(feed, out, relay, fan, tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fan.close()


def frames(feed: FeedCore, client: int) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in feed.drain(client)]


@pytest.mark.services
async def test_two_nodes_serve_the_same_feed(
    registry: Registry, redis_server: tuple[str, int], unique: str
) -> None:
    url, prefix = "redis://127.0.0.1:6379/0", f"t{unique}:"
    async with node(registry, url, prefix) as a, node(registry, url, prefix) as b:
        a.feed.connect(1, "city", T0)
        b.feed.connect(1, "wusheng", T0)
        frames(a.feed, 1), frames(b.feed, 1)
        # node a ingests V1 and V2, node b ingests V4 (another county)
        a.out.positions(positions([0, 1], T0 + 1000))
        b.out.positions(positions([3], T0 + 1000, speed=90))
        await until(lambda: bool(a.feed.has.sum() == 3 and b.feed.has.sum() == 3))
        for f in (a.feed, b.feed):
            assert f.ts[[0, 1, 3]].tolist() == [T0 + 1000] * 3 and not f.has[2]
            assert float(f.speed[3]) == 90.0
        a.out.alarm(alarm(1, "V2"))
        await until(lambda: len(b.feed.alarm_items()) == 1 and len(a.feed.alarm_items()) == 1)
        [(fa,)] = [[x for x in frames(b.feed, 1) if x["type"] == "alarm"]]
        assert fa["alarm"]["id"] == "V2:speeding:" + str(T0) and fa["alarm"]["plate"] == "川X10002"
        assert fa["alarm"]["detail"]["note"] == "<b>x</b>"
        # an ack on node b reaches node a's desk
        b.out.acknowledge(fa["alarm"]["id"], {"user": "ws-op", "note": "ok"})
        await until(lambda: a.feed.alarm_items()[0]["ack"] is not None)
        assert b.feed.alarm_items()[0]["ack"]["user"] == "ws-op"
        a.out.alarm(alarm(1, "V2", "close", T0 + 60_000))
        await until(lambda: b.feed.alarm_items() == [])  # acked and closed: off the desk
        # the county client of node b saw V2 but never V4's county neighbours
        b.feed.frames_due(T0 + 10_000)
        seen = {
            i["vehicle"] for x in frames(b.feed, 1) if x["type"] == "positions" for i in x["items"]
        }
        assert seen <= {"V2", "V3"}


@pytest.mark.services
async def test_resubscribe_after_a_redis_outage(registry: Registry, private_redis: Any) -> None:
    from store.config import LiveConfig
    from store.live import RedisLiveState

    url = private_redis.url
    live = RedisLiveState(
        LiveConfig(kind="redis", redis_url=url, key_prefix="o:", retry_interval_s=0.1)
    )
    await live.open(registry)
    try:
        async with (
            node(registry, url, "o:", live=live) as a,
            node(registry, url, "o:", live=live) as b,
        ):
            b.feed.connect(7, "city", T0)
            frames(b.feed, 7)
            private_redis.stop()
            # node a keeps showing its own alarm; node b cannot hear it yet
            a.out.alarm(alarm(0, "V1"))
            a.out.positions(positions([0], T0 + 5))
            await live.update(positions([0], T0 + 5))
            await until(lambda: len(a.feed.alarm_items()) == 1)
            assert a.out.stats.degraded and b.feed.alarm_items() == []
            private_redis.start()
            await until(lambda: b.relay.subscribed.is_set() and b.out.stats.resubscribes >= 1)
            # the alarm kept by node a arrives at b; a does not show it twice
            await until(lambda: len(b.feed.alarm_items()) == 1, timeout=10)
            assert len(a.feed.alarm_items()) == 1
            # b's client got a fresh snapshot after the outage
            await until(lambda: any(x["type"] == "snapshot" for x in frames(b.feed, 7)))
    finally:
        await live.close()
