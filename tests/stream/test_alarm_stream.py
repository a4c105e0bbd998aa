"""Alarms through the Redis Stream: a page moves from web node A to web node B (real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from fleet.events import AlarmEvent
from fleet.registry import Registry
from store.fanout import Fanout
from stream.feed import FeedCore
from stream.relay import RelayIn, RelayOut

pytestmark = pytest.mark.services

URL = "redis://127.0.0.1:6379/0"
T0 = 1_764_034_200_000


def ev(v: int, vid: str, n: int, action: str = "open") -> AlarmEvent:
    return AlarmEvent(
        id=f"{vid}:speeding:{T0 + n}",
        vehicle=v,
        vehicle_id=vid,
        kind="speeding",
        action=action,  # type: ignore[arg-type]
        started_at=T0 + n,
        ts=T0 + n + (60_000 if action == "close" else 0),
        lat=30.4,
        lon=106.6,
        ended_at=T0 + n + 60_000 if action == "close" else None,
    )


async def until(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@dataclass
class WebNode:
    feed: FeedCore
    relay: RelayIn
    fanout: Fanout
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def web_node(
    registry: Registry, prefix: str, name: str, relay: RelayIn | None = None, **fan: Any
) -> AsyncIterator[WebNode]:
    """A stateless web node: its own FeedCore fed by a RelayIn (no ingest of its own)."""
    fanout = Fanout(URL, prefix, **fan)
    if relay is None:
        feed = FeedCore(registry, interval_ms=50, node=name, alarm_ring=64)
        relay = RelayIn(fanout, feed, retry_s=0.1, block_ms=200)
    else:
        relay.fanout, feed = fanout, relay.feed
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.subscribed.wait(), 5)
        yield WebNode(feed, relay, fanout, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        relay.subscribed.clear()
        await fanout.close()


@contextlib.asynccontextmanager
async def engine(registry: Registry, prefix: str, **fan: Any) -> AsyncIterator[RelayOut]:
    fanout = Fanout(URL, prefix, **fan)
    out = RelayOut(fanout, registry, node="engine-1", retry_s=0.2)
    task = asyncio.create_task(out.run())
    try:
        yield out
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fanout.redis.delete(fanout.stream)
        await fanout.close()


def frames(feed: FeedCore, client: int) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in feed.drain(client)]


async def test_a_page_moves_from_node_a_to_node_b_and_gets_exactly_what_it_missed(
    registry: Registry, redis_server: tuple[str, int], unique: str
) -> None:
    prefix = f"t{unique}:"
    async with engine(registry, prefix) as out, web_node(registry, prefix, "B") as b:
        async with web_node(registry, prefix, "A") as a:
            a.feed.connect(1, "city", T0)
            out.alarm(ev(0, "V1", 1))
            out.alarm(ev(1, "V2", 2))
            await until(lambda: len(a.feed.alarm_items()) == 2 and len(b.feed.alarm_items()) == 2)
            seen = frames(a.feed, 1)
            page_node = seen[0]["node"]
            last = [f for f in seen if f["type"] == "alarm"][-1]
            assert page_node == "A" and last["gid"] == a.relay.last_gid
        # node A is gone (its task cancelled, as kill -9 would stop it); alarms go on
        out.alarm(ev(2, "V3", 3))
        out.alarm(ev(0, "V1", 1, "close"))
        out.acknowledge(f"V2:speeding:{T0 + 2}", {"user": "op", "note": "seen", "at": T0})
        assert await out.drained()
        raw: Any = await b.fanout.redis.xrange(b.fanout.stream, f"({last['gid']}", "+")
        missed = [gid.decode() for gid, _ in raw]  # read straight from Redis
        await until(lambda: b.relay.last_gid == missed[-1])
        # the page reconnects through the load balancer, which picks node B
        assert b.feed.connect(7, "city", T0, last["seq"], last_gid=last["gid"], from_node="A") == (
            "gid"
        )
        got = frames(b.feed, 7)
        assert got[0]["type"] == "snapshot" and got[0]["gap"] is False
        assert got[0]["node"] == "B" and got[0]["gid"] == missed[-1]
        assert [f["gid"] for f in got[1:]] == missed
        assert [(f["alarm"]["id"], f["alarm"]["state"]) for f in got[1:]] == [
            (f"V3:speeding:{T0 + 3}", "open"),
            (f"V1:speeding:{T0 + 1}", "closed"),
            (f"V2:speeding:{T0 + 2}", "open"),
        ]
        assert got[-1]["alarm"]["ack"]["user"] == "op"
        # a web node started only now fills its ring from the Stream: the same resume works
        async with web_node(registry, prefix, "C") as c:
            assert c.feed.connect(1, "city", T0, None, last_gid=last["gid"], from_node="A") == (
                "gid"
            )
            late = frames(c.feed, 1)
            assert [f["gid"] for f in late[1:]] == [f["gid"] for f in got[1:]]
            assert {x["id"] for x in late[0]["alarms"]} == {x["id"] for x in got[0]["alarms"]}


async def test_a_node_away_past_the_stream_limit_says_gap(
    registry: Registry, redis_server: tuple[str, int], unique: str
) -> None:
    prefix = f"t{unique}:"
    async with engine(registry, prefix, stream_maxlen=3) as out:
        async with web_node(registry, prefix, "B") as b:
            b.feed.connect(1, "city", T0)
            out.alarm(ev(0, "V1", 1))
            await until(lambda: len(b.feed.alarm_items()) == 1)
            page = [f for f in frames(b.feed, 1) if f.get("type") == "alarm"][-1]
            relay = b.relay
        # B is away while five alarm changes go by: the Stream keeps only three
        for n in range(2, 7):
            out.alarm(ev(n % 4, f"V{n % 4 + 1}", n))
        assert await out.drained()
        async with web_node(registry, prefix, "B", relay=relay) as b2:
            assert relay.stats.alarm_gaps == 1
            # no live state here to fill in: two of the five changes are gone for this node
            await until(lambda: len(b2.feed.alarm_items()) == 4)
            b2.feed.disconnect(1)
            assert b2.feed.connect(2, "city", T0, None, last_gid=page["gid"], from_node="A") == (
                "gap"
            )
            assert frames(b2.feed, 2)[0]["gap"] is True
