"""Operator changes that every node's rules engine must hear, over Redis pub/sub.

With several ``fleetwatch serve`` nodes each engine holds the episodes of its
own shard of vehicles, but an operator may use any node's API. The node that
takes the request stores it (:mod:`web.records`), applies it to its own engine,
and publishes a command on ``{prefix}web:commands``; every other node applies
it to its engine too (applying twice is harmless: an order is taken once per
id, an episode closes once, fences are re-read from the database)::

    {"op": "orders", "keys": [[org, order_id]...], "node": ...}   approved: to the engine
    {"op": "close", "id": alarm_id, "at": ms, "by": user, "note": ..., "node": ...}
    {"op": "fences", "node": ...}                        fence changes: re-read them

Pub/sub keeps nothing for a node that is not listening: after an outage the
listener asks for ``{"op": "resync"}`` (orders and fences re-read from the
database; a close missed meanwhile is lost, and the episode stays open there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from store.redisconn import REDIS_DOWN, redis_client

__all__ = ["RedisCommands"]

log = logging.getLogger(__name__)

_REDIS_DOWN = REDIS_DOWN

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class RedisCommands:
    """Publish and hear commands; set as ``AppContext.commands`` (the app listens)."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "fw:",
        *,
        node: str | None = None,
        retry_s: float = 1.0,
        client: aioredis.Redis | None = None,
    ) -> None:
        # plain or Sentinel URL (store.redisconn): after a failover the listener's
        # reconnect reaches the promoted master. No reply time-out, as before: with one,
        # redis-py wraps each write in asyncio.wait_for, which on Python 3.11 can lose a
        # cancel, and this listener loop would then outlive the service's shutdown.
        self.redis = client or redis_client(redis_url, socket_timeout_s=None)
        self.channel = f"{prefix}web:commands"
        self.node = node or uuid.uuid4().hex[:12]
        self.retry_s = retry_s
        self.listening = asyncio.Event()
        self.lost = 0  # commands that could not be published (Redis down)

    async def close(self) -> None:
        await self.redis.aclose()

    async def publish(self, op: str, **fields: Any) -> bool:
        """Best effort: the database holds the change; a node that misses it gets it at
        its next resync or restart. False when Redis is down."""
        msg = orjson.dumps({"op": op, "node": self.node, **fields})
        try:
            await self.redis.publish(self.channel, msg)
        except _REDIS_DOWN as exc:
            self.lost += 1
            log.error("command %s not sent to the other nodes (Redis down): %s", op, exc)
            return False
        return True

    async def listen(self, handle: Handler) -> None:
        """Call ``handle`` with every other node's command until cancelled."""
        outage = False
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                if outage:
                    await self._safely(handle, {"op": "resync", "node": ""})
                outage = False
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    cmd = orjson.loads(msg["data"])
                    if isinstance(cmd, dict) and cmd.get("node") != self.node:
                        await self._safely(handle, cmd)
            except _REDIS_DOWN as exc:
                self.listening.clear()
                if not outage:
                    log.error("command listener lost Redis: %s", exc)
                outage = True
            finally:
                with contextlib.suppress(*_REDIS_DOWN):
                    await pubsub.aclose()
            await asyncio.sleep(self.retry_s)

    @staticmethod
    async def _safely(handle: Handler, cmd: dict[str, Any]) -> None:
        try:
            await handle(cmd)
        except Exception:  # one bad command must not stop the listener
            log.exception("command %r failed", cmd.get("op"))
