"""Live state: the latest state per vehicle, a GEO index, and the open alarms.

::

    LiveState (Protocol)
    ├── MemoryLiveState   one process (the demo)
    └── RedisLiveState    shared by several ingest workers and web nodes

Redis keys (``prefix`` from :class:`~store.config.LiveConfig`)::

    {prefix}veh      hash   vehicle id -> JSON of the stored vehicle item (no state)
    {prefix}geo      geo    vehicle id at its latest position
    {prefix}alarms   hash   episode id -> JSON of the open alarm

The state (``moving | parked | offline | alarm``) depends on the time it is
asked, so it is computed by :meth:`LiveState.snapshot` from ``now_ms``.

Redis down: :class:`RedisLiveState` keeps an in-process mirror of what this
process wrote, serves from it while Redis is unreachable (``degraded``), tries
Redis again every ``retry_interval_s``, and when it answers writes the mirror
back (resync) — including episodes that closed meanwhile. With several ingest
workers each resyncs the vehicles it owns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson
import redis.asyncio as aioredis

from fleet.batch import PositionBatch
from fleet.errors import Misuse
from fleet.events import AlarmEvent
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from store.config import LiveConfig
from store.figures import haversine_m
from store.latest import LatestPositions, vehicle_states
from store.redisconn import REDIS_DOWN, redis_client

__all__ = ["LiveState", "MemoryLiveState", "RedisLiveState", "live_alarm"]

log = logging.getLogger(__name__)

_REDIS_DOWN = REDIS_DOWN


def live_alarm(event: AlarmEvent, registry: Registry) -> dict[str, Any]:
    """An alarm event in the live feed's alarm shape (ARCHITECTURE "Live feed")."""
    known = 0 <= event.vehicle < len(registry)
    return {
        "id": event.id,
        "vehicle": event.vehicle_id,
        "plate": registry.plates[event.vehicle] if known else None,
        "org": registry.org_of(event.vehicle) if known else None,
        "kind": event.kind,
        "state": event.state,
        "started_at": event.started_at,
        "ended_at": event.ended_at,
        "lat": event.lat,
        "lon": event.lon,
        "severity": event.severity,
        "backfill": event.backfill,
        "covered": event.covered,
        "detail": event.detail,
        "ack": None,
    }


@runtime_checkable
class LiveState(Protocol):
    #: True while a shared live state is unreachable and this process serves from memory.
    degraded: bool

    async def open(self, registry: Registry) -> None: ...

    async def close(self) -> None: ...

    async def update(self, batch: PositionBatch) -> list[str]:
        """Take each vehicle's latest row (if newer); returns the ids of the vehicles moved."""

    async def update_alarms(self, events: Sequence[AlarmEvent]) -> None:
        """Open/update/close episodes (back-filled episodes are never live)."""

    async def snapshot(self, now_ms: int) -> dict[str, list[dict[str, Any]]]:
        """``{"vehicles": [...], "alarms": [...]}`` in the live feed's shapes."""

    def items(self, vehicle_ids: Sequence[str], now_ms: int) -> list[dict[str, Any]]:
        """Vehicle items (with state) of vehicles this process updated: a "positions" frame."""

    async def nearby(self, lon: float, lat: float, radius_m: float) -> list[str]:
        """Vehicle ids within ``radius_m`` of a point, nearest first."""


class MemoryLiveState:
    """In-process live state (also the mirror behind :class:`RedisLiveState`)."""

    def __init__(
        self, config: LiveConfig | None = None, vehicle_state: VehicleStateConfig | None = None
    ) -> None:
        self.config = config or LiveConfig()
        self.vehicle_state = vehicle_state or VehicleStateConfig()
        self.degraded = False  # in process: never
        self._latest: LatestPositions | None = None
        self.open_alarms: dict[str, dict[str, Any]] = {}
        self._alarm_vehicle: dict[str, int] = {}

    @property
    def latest(self) -> LatestPositions:
        if self._latest is None:
            raise Misuse("live state used before open()")
        return self._latest

    async def open(self, registry: Registry) -> None:
        self._latest = LatestPositions(registry, vehicle_state=self.vehicle_state)

    async def close(self) -> None:
        pass

    def apply(self, batch: PositionBatch) -> np.ndarray[Any, Any]:
        """Synchronous update; returns the dense indices of the vehicles that moved."""
        return self.latest.apply(batch)

    def apply_alarms(self, events: Sequence[AlarmEvent]) -> list[tuple[str, dict[str, Any] | None]]:
        """Synchronous alarm update; returns (id, alarm or None when it closed)."""
        reg = self.latest.registry
        self.latest.follow_registry()  # a vehicle registered live (records issue)
        changes: list[tuple[str, dict[str, Any] | None]] = []
        for e in events:
            if e.backfill:
                continue
            was_open = e.id in self.open_alarms
            if e.state == "open":
                self.open_alarms[e.id] = live_alarm(e, reg)
                if not was_open and 0 <= e.vehicle < len(reg):
                    self._alarm_vehicle[e.id] = e.vehicle
                    self.latest.open_alarms[e.vehicle] += 1
                changes.append((e.id, self.open_alarms[e.id]))
            else:
                self.open_alarms.pop(e.id, None)
                v = self._alarm_vehicle.pop(e.id, None)
                if v is not None:
                    self.latest.open_alarms[v] -= 1
                changes.append((e.id, None))
        return changes

    async def update(self, batch: PositionBatch) -> list[str]:
        ids = self.latest.registry.ids
        return [ids[i] for i in self.apply(batch).tolist()]

    def items(self, vehicle_ids: Sequence[str], now_ms: int) -> list[dict[str, Any]]:
        reg = self.latest.registry
        dense = [i for i in (reg.by_id(v) for v in vehicle_ids) if i is not None]
        return self.latest.items(dense, now_ms)

    async def update_alarms(self, events: Sequence[AlarmEvent]) -> None:
        self.apply_alarms(events)

    async def snapshot(self, now_ms: int) -> dict[str, list[dict[str, Any]]]:
        return {
            "vehicles": self.latest.items(self.latest.seen(), now_ms),
            "alarms": sorted(self.open_alarms.values(), key=lambda a: -int(a["started_at"])),
        }

    async def nearby(self, lon: float, lat: float, radius_m: float) -> list[str]:
        seen = self.latest.seen()
        d = haversine_m(
            np.full(seen.shape, lat),
            np.full(seen.shape, lon),
            self.latest.lat[seen],
            self.latest.lon[seen],
        )
        inside = d <= radius_m
        order = np.argsort(d[inside], kind="stable")
        ids = self.latest.registry.ids
        return [ids[i] for i in seen[inside][order].tolist()]


class RedisLiveState:
    """Live state in Redis, with an in-process mirror to fall back on and resync from."""

    def __init__(
        self,
        config: LiveConfig,
        *,
        vehicle_state: VehicleStateConfig | None = None,
        client: aioredis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # plain or Sentinel URL (store.redisconn); a reply slower than 2 s is an outage
        self.redis = client or redis_client(config.redis_url, socket_timeout_s=2.0)
        self.vehicle_state = vehicle_state or VehicleStateConfig()
        self.mirror = MemoryLiveState(config, self.vehicle_state)
        p = config.key_prefix
        self.k_veh, self.k_geo, self.k_alarms = f"{p}veh", f"{p}geo", f"{p}alarms"
        self._clock = clock
        self._last_try = -float("inf")
        self._closed_while_down: set[str] = set()
        self.degraded = False
        self.resyncs = 0

    async def open(self, registry: Registry) -> None:
        await self.mirror.open(registry)
        try:
            await self.redis.ping()
        except _REDIS_DOWN as exc:
            self._go_degraded(exc)

    async def close(self) -> None:
        await self.redis.aclose()

    def _go_degraded(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("Redis unavailable, live state kept in process: %s", exc)
        self.degraded = True
        self._last_try = self._clock()

    async def _healthy(self) -> bool:
        """True when Redis can be used now; resyncs after an outage (at most every retry)."""
        if not self.degraded:
            return True
        if self._clock() - self._last_try < self.config.retry_interval_s:
            return False
        self._last_try = self._clock()
        try:
            await self.resync()
        except _REDIS_DOWN:
            return False
        self.degraded = False
        log.warning("Redis back; live state resynced")
        return True

    async def resync(self) -> None:
        """Write everything this process holds back to Redis."""
        latest = self.mirror.latest
        pipe = self.redis.pipeline(transaction=False)
        self._queue_vehicles(pipe, latest.seen())
        if self._closed_while_down:
            pipe.hdel(self.k_alarms, *self._closed_while_down)
        if self.mirror.open_alarms:
            pipe.hset(
                self.k_alarms,
                mapping={k: orjson.dumps(a) for k, a in self.mirror.open_alarms.items()},
            )
        await pipe.execute()
        self._closed_while_down.clear()
        self.resyncs += 1

    def _queue_vehicles(self, pipe: Any, vehicles: np.ndarray[Any, Any]) -> None:
        if vehicles.size == 0:
            return
        latest = self.mirror.latest
        items = latest.positions(vehicles)
        pipe.hset(self.k_veh, mapping={it["vehicle"]: orjson.dumps(it) for it in items})
        # Redis GEO covers latitudes within ±85.05112878 (Web Mercator).
        ok = (np.abs(latest.lat[vehicles]) <= 85.05) & (np.abs(latest.lon[vehicles]) <= 180)
        geo: list[Any] = []
        for it, good in zip(items, ok.tolist(), strict=True):
            if good:
                geo += [it["lon"], it["lat"], it["vehicle"]]
        if geo:
            pipe.geoadd(self.k_geo, geo)

    async def update(self, batch: PositionBatch) -> list[str]:
        moved = self.mirror.apply(batch)
        if moved.size and await self._healthy():
            pipe = self.redis.pipeline(transaction=False)
            self._queue_vehicles(pipe, moved)
            try:
                await pipe.execute()
            except _REDIS_DOWN as exc:
                self._go_degraded(exc)
        ids = self.mirror.latest.registry.ids
        return [ids[i] for i in moved.tolist()]

    def items(self, vehicle_ids: Sequence[str], now_ms: int) -> list[dict[str, Any]]:
        return self.mirror.items(vehicle_ids, now_ms)

    async def update_alarms(self, events: Sequence[AlarmEvent]) -> None:
        changes = self.mirror.apply_alarms(events)
        if not changes:
            return
        if not await self._healthy():
            self._closed_while_down.update(i for i, a in changes if a is None)
            return
        pipe = self.redis.pipeline(transaction=False)
        opened = {i: orjson.dumps(a) for i, a in changes if a is not None}
        closed = [i for i, a in changes if a is None]
        if opened:
            pipe.hset(self.k_alarms, mapping=opened)  # type: ignore[arg-type]
        if closed:
            pipe.hdel(self.k_alarms, *closed)
        try:
            await pipe.execute()
        except _REDIS_DOWN as exc:
            self._closed_while_down.update(closed)
            self._go_degraded(exc)

    async def snapshot(self, now_ms: int) -> dict[str, list[dict[str, Any]]]:
        if await self._healthy():
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.hgetall(self.k_veh)
                pipe.hgetall(self.k_alarms)
                veh_raw, alarms_raw = await pipe.execute()
            except _REDIS_DOWN as exc:
                self._go_degraded(exc)
            else:
                return self._shape(veh_raw, alarms_raw, now_ms)
        return await self.mirror.snapshot(now_ms)

    def _shape(
        self, veh_raw: dict[bytes, bytes], alarms_raw: dict[bytes, bytes], now_ms: int
    ) -> dict[str, list[dict[str, Any]]]:
        vehicles = [orjson.loads(v) for v in veh_raw.values()]
        alarms = [orjson.loads(a) for a in alarms_raw.values()]
        per_vehicle: dict[str, int] = {}
        for a in alarms:
            per_vehicle[a["vehicle"]] = per_vehicle.get(a["vehicle"], 0) + 1
        if vehicles:
            states = vehicle_states(
                np.array([v["ts"] for v in vehicles], dtype=np.int64),
                np.array([v["speed"] for v in vehicles]),
                np.array([v["acc"] for v in vehicles], dtype=bool),
                np.array([per_vehicle.get(v["vehicle"], 0) for v in vehicles]),
                now_ms,
                self.vehicle_state,
            )
            for v, s in zip(vehicles, states, strict=True):
                v["state"] = s
        vehicles.sort(key=lambda v: str(v["vehicle"]))
        alarms.sort(key=lambda a: -int(a["started_at"]))
        return {"vehicles": vehicles, "alarms": alarms}

    async def nearby(self, lon: float, lat: float, radius_m: float) -> list[str]:
        if await self._healthy():
            try:
                found = await self.redis.geosearch(
                    self.k_geo,
                    longitude=lon,
                    latitude=lat,
                    radius=radius_m,
                    unit="m",
                    sort="ASC",
                )
            except _REDIS_DOWN as exc:
                self._go_degraded(exc)
            else:
                return [m.decode() if isinstance(m, bytes) else str(m) for m in found]
        return await self.mirror.nearby(lon, lat, radius_m)
