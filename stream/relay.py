"""Several nodes, one live feed: the pipeline's feed output through Redis, and back in.

::

    pipeline ─▶ RelayOut.positions/alarm ─(bounded hand-over)─▶ Fanout.publish_* ─▶ Redis
    Redis pub/sub (positions) + Stream (alarms) ─▶ RelayIn ─▶ FeedCore (every web node) ─▶ page

Each ``fleetwatch serve`` ingests its own shard of vehicles and publishes what
its pipeline finds; every node subscribes and feeds its own :class:`FeedCore`,
so each serves the whole fleet. A node's own positions and alarms reach its
feed by the same round trip, which keeps every node's ``FeedCore`` in the same
order of events.

Policies (each counted in :class:`RelayStats`):

- positions waiting to be published are *conflated* to the latest per vehicle
  when more than ``max_pending_rows`` wait (only the newest position of a
  vehicle matters to a live map); nothing else is dropped;
- alarms and acknowledgements are never dropped: they wait, in order, until
  Redis takes them;
- Redis down: what this node publishes goes straight to its own ``FeedCore``
  (its desks stay live for its own vehicles), positions for the other nodes
  are lost (counted), alarms are kept and published when Redis returns (marked
  as already delivered here, so this node does not show them twice);
- :class:`RelayIn` resubscribes after an outage, reloads vehicles from the live
  state (``store.live``) when it has one, reads the alarm Stream on from the last
  global id it took (exact: nothing missed while the entries are still in the
  Stream; if they were trimmed meanwhile, the open alarms come from the live
  state and the ring's floor moves up, so a page resuming from before says
  ``gap``), and queues a fresh snapshot to every websocket client
  (:meth:`FeedCore.resync`).

Global alarm ids: every alarm message goes through the Stream of
:mod:`store.fanout`; its entry id is the ``gid`` every web node's FeedCore puts on
the alarm frame, so a page that loses its node resumes on another after the last
gid it saw (:meth:`FeedCore.connect`). At start a RelayIn fills its feed's ring with
the Stream's last ``ring_fill`` entries, so a page may move to a node that has just
started.

Master failure (Redis Sentinel). Replication is asynchronous: an alarm the
master took may be gone on the promoted replica. With a fan-out built with
``wait_replicas`` (``WAIT`` after each ``XADD``) :class:`RelayOut` counts an alarm
*replicated* when enough replicas confirmed it; the others stay *at risk*
(``alarms_at_risk``, bounded by ``max_at_risk``). A later confirmed ``WAIT`` on the
same master confirms them too (replication is in order). After an outage (the
master died, Sentinel promoted another) each alarm at risk is looked up on the
new master and published again if it is missing (``alarms_republished``; the
pages may see its frame twice — frames are idempotent by alarm id — but never
zero times). An alarm pushed out of a full at-risk list is counted in
``alarms_untracked``: the one number that says alarms may have been lost.

Message shapes are those of :mod:`store.fanout`: vehicle items, and alarms in
the live feed's alarm shape plus ``action``, ``ts`` and ``node``; an
acknowledgement travels on the alarm channel as ``{"op": "ack", "id", "ack"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet import aio
from fleet.batch import PositionBatch
from fleet.errors import ServiceUnavailable
from fleet.events import Action, AlarmEvent
from fleet.registry import Registry, grown
from store.fanout import AlarmEntry, Published
from store.redisconn import REDIS_DOWN
from stream.feed import FeedCore, gid_key, latest_per_vehicle

__all__ = [
    "RelayCollector",
    "RelayIn",
    "RelayOut",
    "RelayStats",
    "batch_from_items",
    "event_from_alarm",
    "relay_in",
]

log = logging.getLogger(__name__)

_REDIS_DOWN: tuple[type[BaseException], ...] = (*REDIS_DOWN, ServiceUnavailable)
_NO_TS = np.iinfo(np.int64).min


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _cancel_check() -> None:
    """Raise CancelledError if this task was asked to stop and the request got lost.

    On Python 3.11 ``asyncio.wait_for`` returns normally when a cancel arrives just as
    the awaited operation finishes, and redis-py wraps every socket write in it (with a
    ``socket_timeout``): a cancel can vanish inside any Redis call, and a loop around
    Redis calls then never stops. Every loop here checks after each call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class RelayStats:
    """Counters for /metrics (monotonic except ``alarms_waiting`` and ``degraded``)."""

    positions_in: int = 0  # rows handed to RelayOut
    positions_conflated: int = 0  # rows superseded by a newer one of the same vehicle
    items_published: int = 0  # vehicle items published
    items_local_only: int = 0  # items delivered only to this node (Redis down)
    alarms_published: int = 0  # alarm and ack messages published
    alarms_replicated: int = 0  # of those, confirmed by WAIT on enough replicas
    alarms_at_risk: int = 0  # published, not (yet) confirmed by a replica
    alarms_republished: int = 0  # at risk and missing on the new master: published again
    alarms_untracked: int = 0  # pushed out of the full at-risk list: may have been lost
    alarms_waiting: int = 0
    publish_failures: int = 0
    degraded: bool = False
    # RelayIn
    items_received: int = 0
    alarms_received: int = 0
    skipped_unknown: int = 0  # items/alarms of vehicles not in this node's registry
    resubscribes: int = 0
    alarm_gaps: int = 0  # catch-ups that found Stream entries trimmed before they were read


@dataclass
class _Out:
    payload: dict[str, Any]
    event: AlarmEvent | None  # None: an acknowledgement
    local_done: bool = False


class RelayOut:
    """The pipeline's ``Feed`` for several nodes: hands over to Redis without blocking.

    ``positions`` and ``alarm`` are synchronous and cheap (they queue); :meth:`run`
    — a task for the life of the service — publishes. ``local`` is this node's
    :class:`FeedCore`, fed directly while Redis is down; ``node`` names this node
    in published messages (default: a random id). After an outage, the alarms kept
    meanwhile wait ``settle_s`` more so that the other nodes have resubscribed
    (pub/sub keeps nothing for a node that is not listening).
    """

    def __init__(
        self,
        fanout: Any,
        registry: Registry,
        *,
        local: FeedCore | None = None,
        node: str | None = None,
        max_pending_rows: int = 100_000,
        max_at_risk: int = 10_000,
        retry_s: float = 2.0,
        settle_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fanout = fanout
        self.wait_replicas = int(getattr(fanout, "wait_replicas", 0))
        self.max_at_risk = max_at_risk
        # (gid, message) published but not confirmed by enough replicas, oldest first
        self._at_risk: deque[tuple[str, _Out]] = deque()
        self._recheck = False
        self.registry = registry
        self.local = local
        self.node = node or uuid.uuid4().hex[:12]
        # at least one row per vehicle, so that conflating always frees room
        self.max_pending_rows = max(max_pending_rows, len(registry))
        self.retry_s = retry_s
        self.settle_s = settle_s
        self.clock = clock
        self.stats = RelayStats()
        self._pos: list[PositionBatch] = []
        self._pos_rows = 0
        self._out: deque[_Out] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_try = -float("inf")
        self._hold_until = -float("inf")
        self._floor = np.full(len(registry), _NO_TS, dtype=np.int64)
        self._org_ids = [registry.org_of(i) for i in range(len(registry))]
        self._reg_version = registry.version

    def follow_registry(self) -> None:
        """The registry changed (records issue): grow the floor, re-read organisations."""
        reg = self.registry
        self._floor = grown(self._floor, len(reg), _NO_TS)
        changed = reg.changed_since(self._reg_version)
        if changed is None:
            self._org_ids = [reg.org_of(i) for i in range(len(reg))]
        else:
            self._org_ids += [""] * (len(reg) - len(self._org_ids))
            for i in changed:
                self._org_ids[i] = reg.org_of(i)
        self.max_pending_rows = max(self.max_pending_rows, len(reg))
        self._reg_version = reg.version

    # -- the Feed protocol (synchronous, never blocks) -----------------------------------------

    def positions(self, batch: PositionBatch) -> int:
        """Queue a batch for publishing; returns its rows."""
        n = len(batch)
        if n == 0:
            return 0
        if self._reg_version != self.registry.version:
            self.follow_registry()
        self.stats.positions_in += n
        self._pos.append(batch)
        self._pos_rows += n
        if self._pos_rows > self.max_pending_rows:
            merged = self._conflate()
            self._pos, self._pos_rows = [merged], len(merged)
        self._kick()
        return n

    def alarm(self, event: AlarmEvent) -> None:
        """Queue an alarm change; it is published in order and never dropped."""
        if event.backfill:
            return  # recorded by history, never shown live (as FeedCore does)
        self._out.append(_Out(self._alarm_payload(event), event))
        self.stats.alarms_waiting = len(self._out)
        self._kick()

    def acknowledge(self, alarm_id: str, ack: dict[str, Any]) -> None:
        """An operator's acknowledgement, for every node's desks (see ``AppContext.relay``)."""
        payload = {"op": "ack", "id": alarm_id, "ack": dict(ack), "node": self.node}
        self._out.append(_Out(payload, None))
        self.stats.alarms_waiting = len(self._out)
        self._kick()

    # -- the publishing task -------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until cancelled. Start it once, as a task."""
        while True:
            timeout = None
            if self._out and self.stats.degraded:
                timeout = self.retry_s
            elif self._out and self._out[0].local_done:
                timeout = max(0.01, self._hold_until - self.clock())
            if timeout is not None:
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see FeedServer.run
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake.clear()
            await self._drain()
            _cancel_check()
            if not self._pos and not self._out:
                self._idle.set()

    async def drained(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued (tests, shutdown); False on timeout."""
        try:
            await aio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _drain(self) -> None:
        while self._pos:
            merged = self._conflate()
            self._pos, self._pos_rows = [], 0
            await self._send_positions(merged)
        for _ in range(2):  # a send may end an outage: then the recheck, then its output
            if self._recheck and not self.stats.degraded:
                await self._recheck_at_risk()
            while self._out:
                if self._out[0].local_done and self.clock() < self._hold_until:
                    break  # let the other nodes resubscribe before what they missed goes out
                if not await self._send(self._out[0]):
                    break
                self._out.popleft()
            if not self._recheck:
                break
        self.stats.alarms_waiting = len(self._out)
        if self.stats.degraded:
            self._deliver_locally()

    async def _send_positions(self, batch: PositionBatch) -> None:
        items = self._items(batch)
        if await self._try(lambda: self.fanout.publish_positions(items)):
            self.stats.items_published += len(items)
            return
        self.stats.items_local_only += len(items)
        if self.local is not None:
            self.local.positions(batch)

    async def _send(self, out: _Out) -> bool:
        result: list[Any] = []

        async def publish() -> None:
            result.append(await self.fanout.publish_alarm(out.payload))

        if not await self._try(publish):
            return False
        self.stats.alarms_published += 1
        res = result[0] if result else None
        if self.wait_replicas and isinstance(res, Published) and res.replicas is not None:
            if res.replicas >= self.wait_replicas:
                # in order: what the master took before this is on the replicas too
                self.stats.alarms_replicated += 1 + len(self._at_risk)
                self._at_risk.clear()
            else:
                self._at_risk.append((res.gid, out))
                if len(self._at_risk) > self.max_at_risk:
                    self._at_risk.popleft()
                    self.stats.alarms_untracked += 1
            self.stats.alarms_at_risk = len(self._at_risk)
        return True

    async def _recheck_at_risk(self) -> None:
        """After an outage: publish again the alarms at risk that the master lacks now."""
        missing: list[_Out] = []
        kept: deque[tuple[str, _Out]] = deque()
        try:
            for gid, out in self._at_risk:
                if await self.fanout.has_alarm(gid):
                    kept.append((gid, out))
                else:
                    missing.append(out)
        except ServiceUnavailable:
            return  # still down: try again after the next outage ends
        self._recheck = False
        if missing:
            log.warning(
                "%d alarm(s) lost by the Redis failover: publishing them again", len(missing)
            )
        self.stats.alarms_republished += len(missing)
        self._at_risk = kept
        self.stats.alarms_at_risk = len(kept)
        self._out.extendleft(reversed(missing))

    async def _try(self, publish: Callable[[], Any]) -> bool:
        """Publish unless Redis is known down and not yet due for a retry."""
        if self.stats.degraded and self.clock() - self._last_try < self.retry_s:
            return False
        self._last_try = self.clock()
        try:
            await publish()
        except ServiceUnavailable as exc:
            self.stats.publish_failures += 1
            if not self.stats.degraded:
                log.error("Redis unavailable: live feed served from this node only: %s", exc)
            self.stats.degraded = True
            return False
        if self.stats.degraded:
            log.warning("Redis back: live feed relayed again")
            self.stats.degraded = False
            self._hold_until = self.clock() + self.settle_s
            self._recheck = bool(self._at_risk)
        return True

    def _deliver_locally(self) -> None:
        """Show waiting alarms on this node now; they still go to the others later."""
        for out in self._out:
            if out.local_done:
                continue
            out.local_done = True
            out.payload["local"] = True
            if self.local is None:
                continue
            if out.event is not None:
                self.local.alarm(out.event)
            else:
                self.local.acknowledge(out.payload["id"], out.payload["ack"])

    # -- shapes ---------------------------------------------------------------------------------

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _conflate(self) -> PositionBatch:
        batch = self._pos[0] if len(self._pos) == 1 else PositionBatch.concat(self._pos)
        rows = latest_per_vehicle(batch.vehicle, batch.ts, self._floor)
        self.stats.positions_conflated += len(batch) - int(rows.shape[0])
        return batch.take(rows) if rows.shape[0] != len(batch) else batch

    def _items(self, b: PositionBatch) -> list[dict[str, Any]]:
        reg = self.registry
        with np.errstate(invalid="ignore"):
            speed = np.round(b.speed.astype(np.float64), 1).tolist()
        return [
            {
                "vehicle": reg.ids[v],
                "plate": reg.plates[v],
                "org": self._org_ids[v],
                "ts": ts,
                "lat": lat,
                "lon": lon,
                "speed": sp,
                "heading": hd,
                "acc": acc,
            }
            for v, ts, lat, lon, sp, hd, acc in zip(
                b.vehicle.tolist(),
                b.ts.tolist(),
                b.lat.tolist(),
                b.lon.tolist(),
                speed,
                b.heading.tolist(),
                b.acc.tolist(),
                strict=True,
            )
        ]

    def _alarm_payload(self, event: AlarmEvent) -> dict[str, Any]:
        from store.live import live_alarm

        return {
            **live_alarm(event, self.registry),
            "action": event.action,
            "ts": event.ts,
            "node": self.node,
        }


def batch_from_items(items: Sequence[dict[str, Any]], registry: Registry) -> PositionBatch:
    """Published vehicle items back into a batch (items of unknown vehicles are left out)."""
    idx: list[int] = []
    keep: list[dict[str, Any]] = []
    for it in items:
        v = registry.by_id(str(it.get("vehicle")))
        if v is not None:
            idx.append(v)
            keep.append(it)
    if not keep:
        return PositionBatch.empty()

    def col(name: str, default: Any) -> list[Any]:
        return [default if it.get(name) is None else it[name] for it in keep]

    return PositionBatch.from_columns(
        vehicle=idx,
        ts=col("ts", 0),
        lat=col("lat", np.nan),
        lon=col("lon", np.nan),
        speed=col("speed", np.nan),
        heading=col("heading", 0),
        acc=col("acc", False),
    )


def event_from_alarm(alarm: dict[str, Any], registry: Registry) -> AlarmEvent | None:
    """A published alarm (live feed alarm shape) back into an event; None if unknown vehicle."""
    v = registry.by_id(str(alarm.get("vehicle")))
    if v is None:
        return None
    closed = alarm.get("state") == "closed"
    action: Action = alarm.get("action") or ("close" if closed else "open")
    if action not in ("open", "update", "close"):
        action = "close" if closed else "open"
    return AlarmEvent(
        id=str(alarm["id"]),
        vehicle=v,
        vehicle_id=registry.ids[v],
        kind=str(alarm["kind"]),
        action=action,
        started_at=int(alarm["started_at"]),
        ts=int(alarm.get("ts") or alarm.get("ended_at") or alarm["started_at"]),
        lat=float(alarm["lat"]) if alarm.get("lat") is not None else float("nan"),
        lon=float(alarm["lon"]) if alarm.get("lon") is not None else float("nan"),
        ended_at=alarm.get("ended_at"),
        severity=alarm.get("severity") or "warning",
        backfill=bool(alarm.get("backfill")),
        covered=bool(alarm.get("covered")),
        detail=dict(alarm.get("detail") or {}),
    )


class RelayIn:
    """Reads the fan-out and feeds this node's :class:`FeedCore`.

    ``live`` (optional, a ``store.live`` live state) is read at every (re)subscription
    to catch up on positions, and on alarms older than the Stream holds; ``node`` must
    be the ``RelayOut.node`` of this node (when it has one), so that alarms it already
    showed during an outage are not shown twice — it also names the feed
    (:attr:`FeedCore.node`) unless that has a name. ``ring_fill`` (default: the feed's
    ring size) is how many of the Stream's last entries are read at start;
    ``block_ms`` how long one blocking read of the Stream waits (below the client's
    socket time-out).
    """

    def __init__(
        self,
        fanout: Any,
        feed: FeedCore,
        *,
        live: Any = None,
        node: str = "",
        clock_ms: Callable[[], int] = wall_ms,
        retry_s: float = 1.0,
        stats: RelayStats | None = None,
        ring_fill: int | None = None,
        block_ms: int = 1000,
    ) -> None:
        self.fanout = fanout
        self.feed = feed
        if node and not feed.node:
            feed.node = node
        self.registry = feed.registry
        self.live = live
        self.node = node
        self.clock_ms = clock_ms
        self.retry_s = retry_s
        self.stats = stats or RelayStats()
        self.ring_fill = ring_fill if ring_fill is not None else feed.ring_size
        self.block_ms = block_ms
        self.subscribed = asyncio.Event()
        #: the last Stream entry taken in (None until the first catch-up)
        self.last_gid: str | None = None
        self._kinds = {name.encode(): kind for kind, name in fanout.channels.items()}

    async def run(self) -> None:
        """Until cancelled: subscribe, catch up, apply messages; on an outage start over."""
        outage = False
        while True:
            pubsub = self.fanout.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.fanout.channels["positions"])
                await self.catch_up()
                if outage:
                    log.warning("live feed relay resubscribed; clients sent a fresh snapshot")
                outage = False
                self.subscribed.set()
                await self._pump(pubsub)
            except _REDIS_DOWN as exc:
                self.subscribed.clear()
                if not outage:
                    log.error("live feed relay lost Redis: %s", exc)
                outage = True
                self.stats.resubscribes += 1
            finally:
                with contextlib.suppress(*_REDIS_DOWN):
                    await pubsub.aclose()
            _cancel_check()
            await asyncio.sleep(self.retry_s)

    async def _pump(self, pubsub: Any) -> None:
        """Positions from pub/sub and alarms from the Stream, side by side, until one fails."""

        async def positions() -> None:
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                _cancel_check()
                if msg is not None and msg.get("type") == "message":
                    self._apply(msg["channel"], msg["data"])

        async def alarms() -> None:
            while True:
                after = self.last_gid or "0-0"
                entries = await self.fanout.read_alarms(after, block_ms=self.block_ms)
                _cancel_check()
                for entry in entries:
                    self.apply_alarm(entry)

        tasks = [asyncio.create_task(positions()), asyncio.create_task(alarms())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # raises what stopped it
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _cancel_check()

    async def catch_up(self) -> None:
        """Reload positions from the live state, read the alarms missed from the Stream (the
        live state's open alarms when entries were trimmed, or at start), then send every
        client a fresh snapshot."""
        now = self.clock_ms()
        if self.live is not None:
            snap = await self.live.snapshot(now)
            self.feed.positions(batch_from_items(snap.get("vehicles", []), self.registry))
        gap, seen = await self._catch_up_alarms()
        if self.live is not None and gap:
            shown = {a["id"]: a for a in self.feed.alarm_items() if a["state"] == "open"}
            held = {a["id"]: a for a in snap.get("alarms", [])}
            for aid, a in held.items():
                if aid not in shown and aid not in seen:
                    ev = event_from_alarm({**a, "state": "open", "action": "open"}, self.registry)
                    if ev is not None:
                        self.feed.alarm(ev)
            for aid, a in shown.items():
                if aid not in held and aid not in seen:
                    # closed while this node was away, its close trimmed from the Stream
                    ev = event_from_alarm(
                        {**a, "state": "closed", "action": "close", "ts": now}, self.registry
                    )
                    if ev is not None:
                        self.feed.alarm(ev)
        self.feed.resync(now)

    async def _catch_up_alarms(self) -> tuple[bool, set[str]]:
        """Take in the Stream entries this node has not seen. Returns whether some may be
        missing (the live state must fill in) and the alarm ids the entries named."""
        fan = self.fanout
        horizon = await fan.alarm_horizon()
        seen: set[str] = set()
        if self.last_gid is None:
            # First start: the last ring_fill entries fill the ring; older alarms that are
            # still open come from the live state.
            entries = await fan.alarm_tail(self.ring_fill + 1) if self.ring_fill else []
            if not self.ring_fill:
                floor = horizon.last or "0-0"
            elif len(entries) > self.ring_fill:
                floor, entries = entries[0].gid, entries[1:]
            elif horizon.removed and entries:
                floor = entries[0].gid  # all it holds; what was before it is gone
            else:
                floor = "0-0"  # the whole history of the Stream
            self.feed.start_history(floor)
            self.last_gid = floor
            for e in entries:
                seen.add(str(e.payload.get("id")))
                self.apply_alarm(e)
            return True, seen
        gap = horizon.missing_after(self.last_gid)
        if gap:
            self.stats.alarm_gaps += 1
            log.warning(
                "alarm Stream trimmed past %s (now from %s) while this node was away: open"
                " alarms reloaded from the live state",
                self.last_gid,
                horizon.first,
            )
            self.feed.start_history(horizon.first or horizon.deleted)
        if horizon.last is None or gid_key(horizon.last) < gid_key(self.last_gid):
            # The Stream went back (a failover lost its newest entries, or it was reset):
            # read on from what it holds, or the next entries might be skipped.
            self.last_gid = horizon.last or "0-0"
        while True:
            entries = await fan.read_alarms(self.last_gid)
            if not entries:
                return gap, seen
            for e in entries:
                seen.add(str(e.payload.get("id")))
                self.apply_alarm(e)

    def apply_alarm(self, entry: AlarmEntry) -> None:
        """One Stream entry (alarm change or acknowledgement) into the feed, with its gid."""
        self.last_gid = entry.gid
        payload = entry.payload
        self.stats.alarms_received += 1
        ack = payload.get("op") == "ack"
        if payload.get("local") and payload.get("node") == self.node:
            # shown here already while Redis was down: only the ring learns its gid
            ev = None if ack else event_from_alarm(payload, self.registry)
            if ev is not None:
                self.feed.remember(ev, entry.gid)
            else:
                self.feed.note_gid(entry.gid)
            return
        if ack:
            self.feed.acknowledge(str(payload["id"]), dict(payload.get("ack") or {}), entry.gid)
            return
        ev = event_from_alarm(payload, self.registry)
        if ev is None:
            self.stats.skipped_unknown += 1
            self.feed.note_gid(entry.gid)
            return
        self.feed.alarm(ev, entry.gid)

    def _apply(self, channel: Any, data: Any) -> None:
        key = channel if isinstance(channel, bytes) else str(channel).encode()
        if self._kinds.get(key) != "positions":
            return
        payload = orjson.loads(data)
        batch = batch_from_items(payload, self.registry)
        self.stats.items_received += len(payload)
        self.stats.skipped_unknown += len(payload) - len(batch)
        self.feed.positions(batch)


async def relay_in(fanout: Any, feed: FeedCore, **kw: Any) -> None:
    """Run a :class:`RelayIn` until cancelled (keyword arguments as for it)."""
    await RelayIn(fanout, feed, **kw).run()


class RelayCollector(Collector):
    """The relay's counters for Prometheus."""

    def __init__(self, stats: RelayStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        for name, doc, value in (
            ("positions_in", "Position rows handed to the relay", s.positions_in),
            (
                "positions_conflated",
                "Position rows superseded by a newer one before publishing",
                s.positions_conflated,
            ),
            ("items_published", "Vehicle items published to Redis", s.items_published),
            (
                "items_local_only",
                "Vehicle items shown on this node only (Redis down)",
                s.items_local_only,
            ),
            ("alarms_published", "Alarm and ack messages published", s.alarms_published),
            ("publish_failures", "Failed publishes (Redis down)", s.publish_failures),
            ("items_received", "Vehicle items received from Redis", s.items_received),
            ("alarms_received", "Alarm and ack messages received", s.alarms_received),
            ("skipped_unknown", "Relayed items of vehicles not registered here", s.skipped_unknown),
            ("resubscribes", "Relay subscriptions lost and restarted", s.resubscribes),
            (
                "alarms_replicated",
                "Alarm messages confirmed by WAIT on enough Redis replicas",
                s.alarms_replicated,
            ),
            (
                "alarms_republished",
                "Alarms at risk found missing after a Redis failover and published again",
                s.alarms_republished,
            ),
            (
                "alarms_untracked",
                "Alarms pushed out of the full at-risk list (may be lost in a failover)",
                s.alarms_untracked,
            ),
            (
                "alarm_gaps",
                "Catch-ups that found alarm Stream entries trimmed before they were read",
                s.alarm_gaps,
            ),
        ):
            yield CounterMetricFamily(f"fleetwatch_relay_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "fleetwatch_relay_alarms_waiting", "Alarm messages waiting for Redis", s.alarms_waiting
        )
        yield GaugeMetricFamily(
            "fleetwatch_relay_alarms_at_risk",
            "Alarms published but not yet confirmed by a Redis replica",
            s.alarms_at_risk,
        )
        yield GaugeMetricFamily(
            "fleetwatch_relay_degraded", "1 while Redis is unreachable", int(s.degraded)
        )
