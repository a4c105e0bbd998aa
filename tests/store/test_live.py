"""Live state in memory and in Redis, Redis outages, and the pub/sub fan-out."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from fleet.batch import PositionBatch
from fleet.errors import ServiceUnavailable
from fleet.events import Action, AlarmEvent
from fleet.registry import Registry
from store.config import LiveConfig
from store.fanout import Fanout
from store.live import LiveState, MemoryLiveState, RedisLiveState
from tests.private_services import PrivateRedis

NOW = 1_764_034_200_000


def batch(registry: Registry, n: int = 12, t: int = NOW - 1000) -> PositionBatch:
    v = np.arange(n) % len(registry)
    return PositionBatch.from_columns(
        vehicle=v,
        ts=np.full(n, t) + np.arange(n),
        lat=30.45 + v * 0.001,
        lon=106.63 + v * 0.001,
        speed=np.where(v % 2 == 0, 40.0, 0.0),
        acc=v % 2 == 0,
        heading=np.full(n, 90),
    )


def alarm(registry: Registry, v: int, action: Action, **kw: Any) -> AlarmEvent:
    vid = registry.ids[v]
    return AlarmEvent(
        id=f"{vid}:speeding:1",
        vehicle=v,
        vehicle_id=vid,
        kind="speeding",
        action=action,
        started_at=1,
        ts=NOW,
        lat=30.5,
        lon=106.6,
        **kw,
    )


async def check_live_state(live: LiveState, registry: Registry) -> None:
    moved = await live.update(batch(registry))
    assert sorted(moved) == sorted(registry.ids[:12])
    frame = live.items(moved[:2], NOW)
    assert [i["vehicle"] for i in frame] == moved[:2] and frame[0]["state"] in {"moving", "parked"}
    await live.update(batch(registry, t=NOW - 500_000))  # older: nothing moves back
    await live.update_alarms([alarm(registry, 1, "open")])
    await live.update_alarms([alarm(registry, 2, "open", backfill=True)])  # never live
    snap = await live.snapshot(NOW)
    items = {v["vehicle"]: v for v in snap["vehicles"]}
    assert len(items) == 12
    v0 = items[registry.ids[0]]
    assert set(v0) == {
        "vehicle",
        "plate",
        "org",
        "ts",
        "lat",
        "lon",
        "speed",
        "heading",
        "acc",
        "state",
    }
    assert v0["state"] == "moving" and v0["ts"] == NOW - 1000 and v0["plate"] == registry.plates[0]
    assert items[registry.ids[1]]["state"] == "alarm"
    assert items[registry.ids[3]]["state"] == "parked"
    assert [a["id"] for a in snap["alarms"]] == [f"{registry.ids[1]}:speeding:1"]
    later = await live.snapshot(NOW + 3_600_000)
    assert {v["state"] for v in later["vehicles"]} == {"offline", "alarm"}
    await live.update_alarms([alarm(registry, 1, "close", ended_at=NOW)])
    assert (await live.snapshot(NOW))["alarms"] == []
    near = await live.nearby(106.63, 30.45, 200.0)
    assert near[0] == registry.ids[0] and set(near) == {registry.ids[0], registry.ids[1]}


async def test_memory_live_state(registry: Registry) -> None:
    live = MemoryLiveState()
    await live.open(registry)
    assert isinstance(live, LiveState)
    await check_live_state(live, registry)


@pytest.mark.services
async def test_redis_live_state(registry: Registry, redis_live_config: LiveConfig) -> None:
    live = RedisLiveState(redis_live_config)
    await live.open(registry)
    await check_live_state(live, registry)
    assert not live.degraded
    # A second node reading the same Redis sees the same vehicles.
    other = RedisLiveState(redis_live_config)
    await other.open(registry)
    assert len((await other.snapshot(NOW))["vehicles"]) == 12
    await other.close()
    await live.close()


@pytest.mark.services
async def test_redis_outage_falls_back_and_resyncs(
    registry: Registry, private_redis: PrivateRedis
) -> None:
    cfg = LiveConfig(
        kind="redis", redis_url=private_redis.url, key_prefix="t:", retry_interval_s=0.05
    )
    live = RedisLiveState(cfg)
    await live.open(registry)
    await live.update(batch(registry, n=4))
    await live.update_alarms([alarm(registry, 1, "open")])
    private_redis.stop()
    await live.update(batch(registry, n=12, t=NOW))  # Redis gone: kept in process
    assert live.degraded
    await live.update_alarms(
        [alarm(registry, 1, "close", ended_at=NOW), alarm(registry, 5, "open")]
    )
    snap = await live.snapshot(NOW)
    assert len(snap["vehicles"]) == 12 and [a["vehicle"] for a in snap["alarms"]] == ["veh005"]
    assert await live.nearby(106.63, 30.45, 50.0) == [registry.ids[0]]

    private_redis.start()  # an empty Redis (no persistence): everything comes from the resync
    await asyncio.sleep(0.06)
    snap = await live.snapshot(NOW)
    assert not live.degraded and live.resyncs == 1
    assert len(snap["vehicles"]) == 12
    assert [a["vehicle"] for a in snap["alarms"]] == ["veh005"]
    reader = RedisLiveState(cfg)
    await reader.open(registry)
    assert len((await reader.snapshot(NOW))["vehicles"]) == 12
    assert await reader.nearby(106.63, 30.45, 50.0) == [registry.ids[0]]
    await reader.close()
    await live.close()


@pytest.mark.services
async def test_fanout_reaches_every_subscriber(redis_server: tuple[str, int], unique: str) -> None:
    pub = Fanout(prefix=f"t{unique}:")
    subs = [Fanout(prefix=f"t{unique}:") for _ in range(2)]
    got: list[list[tuple[str, Any]]] = [[], []]

    async def listen(i: int) -> None:
        async for kind, payload in subs[i].subscribe():
            got[i].append((kind, payload))
            if len(got[i]) == 1:
                return

    tasks = [asyncio.create_task(listen(i)) for i in range(2)]
    for _ in range(100):  # wait until both subscriptions are active
        if await pub.redis.pubsub_numsub(pub.channels["positions"]) == [
            (pub.channels["positions"].encode(), 2)
        ]:
            break
        await asyncio.sleep(0.02)
    assert await pub.publish_positions([{"vehicle": "veh001", "lat": 30.5}]) == 2
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    for g in got:
        assert g == [("positions", [{"vehicle": "veh001", "lat": 30.5}])]
    # alarms travel on the Stream (tests/stream/test_alarm_stream.py), read by id
    gid = (await pub.publish_alarm({"id": "a1", "kind": "speeding"})).gid
    assert [(e.gid, e.payload) for e in await subs[0].read_alarms("0-0")] == [
        (gid, {"id": "a1", "kind": "speeding"})
    ]
    await pub.redis.delete(pub.stream)
    for f in (pub, *subs):
        await f.close()


@pytest.mark.services
async def test_fanout_down_is_service_unavailable(private_redis: PrivateRedis) -> None:
    f = Fanout(private_redis.url)
    private_redis.stop()
    with pytest.raises(ServiceUnavailable):
        await f.publish_alarm({"id": "x"})
    await f.close()
