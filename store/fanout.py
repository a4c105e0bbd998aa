"""Live-feed fan-out over Redis pub/sub: the transport only.

Ingest workers publish; every web node subscribes and forwards to its own
websocket clients, so several web nodes serve one live feed. Two channels::

    {prefix}live:positions   a JSON array of vehicle items (latest per vehicle)
    {prefix}live:alarms      one JSON alarm (live feed alarm shape)

Pub/sub is fire-and-forget: a web node that was disconnected misses what was
published meanwhile. :meth:`Fanout.subscribe` raises
:class:`~fleet.errors.ServiceUnavailable` when the connection drops; the
web node then resubscribes and sends its clients a fresh snapshot from the
live state, which is what makes "alarms are never dropped" hold across a
Redis outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from fleet.errors import ServiceUnavailable

__all__ = ["Fanout"]

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

Kind = Literal["positions", "alarm"]


class Fanout:
    """Publish and subscribe live-feed frames through Redis."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "fw:",
        *,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.redis = client or aioredis.Redis.from_url(redis_url, socket_connect_timeout=1.0)
        self.channels: dict[Kind, str] = {
            "positions": f"{prefix}live:positions",
            "alarm": f"{prefix}live:alarms",
        }
        self._kind_of = {v.encode(): k for k, v in self.channels.items()}

    async def close(self) -> None:
        await self.redis.aclose()

    async def _publish(self, kind: Kind, payload: Any) -> int:
        try:
            return int(await self.redis.publish(self.channels[kind], orjson.dumps(payload)))
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc

    async def publish_positions(self, items: list[dict[str, Any]]) -> int:
        """Publish vehicle items; returns how many subscribers got them."""
        if not items:
            return 0
        return await self._publish("positions", items)

    async def publish_alarm(self, alarm: dict[str, Any]) -> int:
        return await self._publish("alarm", alarm)

    async def subscribe(self) -> AsyncIterator[tuple[Kind, Any]]:
        """Yield ``("positions", [items])`` and ``("alarm", {alarm})`` as they are published."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*self.channels.values())
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None or msg.get("type") != "message":
                    continue
                channel = msg["channel"]
                key = channel if isinstance(channel, bytes) else str(channel).encode()
                yield self._kind_of[key], orjson.loads(msg["data"])
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        finally:
            with contextlib.suppress(*_REDIS_DOWN):
                await pubsub.aclose()
