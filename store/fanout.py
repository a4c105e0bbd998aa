"""Live-feed fan-out over Redis: positions on pub/sub, alarms on a Stream. Transport only.

Engine nodes publish; every web node reads and forwards to its own websocket
clients, so several web nodes serve one live feed::

    {prefix}live:positions   pub/sub: a JSON array of vehicle items (latest per vehicle)
    {prefix}live:alarms      Stream: one entry per alarm change or acknowledgement,
                             field ``d`` = the JSON (live feed alarm shape, or ``{"op": "ack"}``)

Positions are fire-and-forget: a node that missed some catches up from the live
state, and the next position replaces them anyway. Alarms are not: the Stream's
entry id (``"<ms>-<n>"``, given by the master, increasing) is the alarm's *global
id* (``gid``), the same on every web node, so a page that moves to another node
resumes after the last gid it saw, and a node that lost Redis for a while reads on
from its own last gid. The Stream is trimmed to ``stream_maxlen`` entries at each
``XADD`` (exact ``MAXLEN``): that bounds Redis memory, and is the horizon past
which a resume cannot be exact (the reader says so: :meth:`Fanout.alarm_horizon`).

Master failure (Sentinel): replication is asynchronous, so an entry the master took
may die with it. With ``wait_replicas > 0`` every ``XADD`` is followed, on the same
connection, by ``WAIT wait_replicas wait_ms``; :class:`Published` says how many
replicas had it. The writer (:class:`stream.relay.RelayOut`) counts an alarm as
durable only when enough did, and checks the others again after a failover
(:meth:`Fanout.has_alarm`), publishing again those the new master lacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis

from fleet.errors import Misuse, ServiceUnavailable
from store.redisconn import REDIS_DOWN, redis_client

__all__ = ["AlarmEntry", "AlarmHorizon", "Fanout", "Published", "gid_key"]

_REDIS_DOWN = REDIS_DOWN

Kind = Literal["positions", "alarm"]

#: Alarm entries kept in the Stream. At a city's alarm rate (hundreds an hour) this is
#: days; at a storm's (a few per second) still over half an hour of resumable history.
STREAM_MAXLEN = 10_000
#: Entries read in one XREAD / XRANGE.
READ_COUNT = 500


def gid_key(gid: str) -> tuple[int, int]:
    """A Stream id as a sortable pair; raises ValueError for anything else."""
    ms, _, n = gid.partition("-")
    return int(ms), int(n or 0)


@dataclass(frozen=True, slots=True)
class Published:
    """One alarm taken by the master: its global id, and the replicas that confirmed it
    (``None`` when no ``WAIT`` was asked)."""

    gid: str
    replicas: int | None = None


@dataclass(frozen=True, slots=True)
class AlarmEntry:
    gid: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlarmHorizon:
    """What the Stream holds now: ``first``/``last`` entry ids (None if empty),
    ``deleted`` — the greatest id removed by XDEL ("0-0" if none; MAXLEN trimming does
    not move it) — and ``removed``, how many entries ever added are gone (trimmed or
    deleted)."""

    first: str | None
    last: str | None
    deleted: str
    length: int
    removed: int = 0

    def missing_after(self, gid: str) -> bool:
        """Whether entries after ``gid`` may be gone: the Stream now starts after it with
        older entries removed, or an entry after it was deleted. Errs on the side of yes
        when the first entry held is exactly the one after ``gid``."""
        key = gid_key(gid)
        if self.deleted != "0-0" and gid_key(self.deleted) > key:
            return True
        return self.removed > 0 and self.first is not None and gid_key(self.first) > key


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Fanout:
    """Publish and read live-feed messages through Redis (plain or Sentinel URL)."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "fw:",
        *,
        client: aioredis.Redis | None = None,
        stream_maxlen: int = STREAM_MAXLEN,
        wait_replicas: int = 0,
        wait_ms: int = 200,
    ) -> None:
        if stream_maxlen < 1 or wait_replicas < 0 or wait_ms < 1:
            raise Misuse("Fanout needs stream_maxlen >= 1, wait_replicas >= 0, wait_ms >= 1")
        self.redis = client or redis_client(redis_url)
        self.channels: dict[Kind, str] = {
            "positions": f"{prefix}live:positions",
            "alarm": f"{prefix}live:alarms",
        }
        self.stream = self.channels["alarm"]
        self.stream_maxlen = stream_maxlen
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._kind_of = {v.encode(): k for k, v in self.channels.items()}

    @classmethod
    def from_config(cls, live: Any) -> Fanout:
        """From ``[live]`` (``store.config.LiveConfig``): URL, prefix, Stream limit, WAIT."""
        return cls(
            live.redis_url,
            live.key_prefix,
            stream_maxlen=live.alarm_stream_maxlen,
            wait_replicas=live.alarm_wait_replicas,
            wait_ms=live.alarm_wait_ms,
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def publish_positions(self, items: list[dict[str, Any]]) -> int:
        """Publish vehicle items; returns how many subscribers got them."""
        if not items:
            return 0
        try:
            return int(await self.redis.publish(self.channels["positions"], orjson.dumps(items)))
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc

    async def publish_alarm(self, alarm: dict[str, Any]) -> Published:
        """Append one alarm message to the Stream (then ``WAIT``, if asked)."""
        pipe = self.redis.pipeline(transaction=False)  # one connection: WAIT covers the XADD
        pipe.xadd(
            self.stream, {"d": orjson.dumps(alarm)}, maxlen=self.stream_maxlen, approximate=False
        )
        if self.wait_replicas:
            pipe.wait(self.wait_replicas, self.wait_ms)
        try:
            res = await pipe.execute()
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        return Published(_s(res[0]), int(res[1]) if self.wait_replicas else None)

    async def confirm(self) -> int:
        """``WAIT`` again for what this client wrote; returns the replicas that have it all."""
        try:
            return int(await self.redis.wait(max(1, self.wait_replicas), self.wait_ms))
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc

    async def has_alarm(self, gid: str) -> bool:
        """Whether the (current) master's Stream still holds the entry ``gid``."""
        try:
            return bool(await self.redis.xrange(self.stream, gid, gid, count=1))
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc

    async def read_alarms(
        self, after: str, *, block_ms: int | None = None, count: int = READ_COUNT
    ) -> list[AlarmEntry]:
        """Entries after the id ``after`` ("0-0": from the start), oldest first; with
        ``block_ms``, wait that long for one to arrive. Raises ServiceUnavailable."""
        try:
            res = await self.redis.xread({self.stream: after}, count=count, block=block_ms)
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        streams = res.items() if isinstance(res, dict) else (res or ())  # RESP3 | RESP2
        return [e for _, rows in streams for e in self._entries(rows)]

    async def alarm_tail(self, n: int) -> list[AlarmEntry]:
        """The last ``n`` entries, oldest first."""
        try:
            rows = await self.redis.xrevrange(self.stream, count=n)
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        return list(reversed(self._entries(rows)))

    async def alarm_horizon(self) -> AlarmHorizon:
        try:
            info = await self.redis.xinfo_stream(self.stream)
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        except Exception as exc:  # no such key: nothing was ever published
            if "no such key" in str(exc).lower():
                return AlarmHorizon(None, None, "0-0", 0, 0)
            raise
        first, last = info.get("first-entry"), info.get("last-entry")
        return AlarmHorizon(
            first=_s(first[0]) if first else None,
            last=_s(last[0]) if last else None,
            deleted=_s(info.get("max-deleted-entry-id", "0-0")),
            length=int(info.get("length", 0)),
            removed=int(info.get("entries-added", 0)) - int(info.get("length", 0)),
        )

    @staticmethod
    def _entries(rows: Any) -> list[AlarmEntry]:
        out = []
        for gid, fields in rows or ():
            raw = fields.get(b"d", fields.get("d"))
            payload = orjson.loads(raw) if raw is not None else None
            if isinstance(payload, dict):
                out.append(AlarmEntry(_s(gid), payload))
        return out

    async def subscribe(self) -> AsyncIterator[tuple[Kind, Any]]:
        """Yield ``("positions", [items])`` as published (alarms: :meth:`read_alarms`)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channels["positions"])
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None or msg.get("type") != "message":
                    continue
                yield "positions", orjson.loads(msg["data"])
        except _REDIS_DOWN as exc:
            raise ServiceUnavailable("redis", str(exc)) from exc
        finally:
            with contextlib.suppress(*_REDIS_DOWN):
                await pubsub.aclose()
