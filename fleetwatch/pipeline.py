"""The pipeline, wired in one place: ingest → rules → live feed → history → ack.

::

    MqttIngest ──q_in──▶ process ──q_store──▶ store ──▶ ack to the broker
                           │  rules engine      │  positions, alarms, dead letters
                           └▶ feed, live state   └▶ metrics

    ticker ──▶ engine.tick(now) (timer rules: offline) ──▶ feed, q_store

Both queues are bounded; a full queue stops the stage before it, and finally
the broker, which stops sending once ``receive_maximum`` messages wait for
their PUBACK. Any stage that raises stops the whole pipeline (TaskGroup): a
failure is loud, never a silently dead stage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetwatch.batch import PositionBatch
from fleetwatch.metrics import Metrics
from ingest.core import Flush
from ingest.deadletter import DeadLetter
from rules.events import AlarmEvent

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


class Engine(Protocol):
    def process(self, batch: PositionBatch) -> list[AlarmEvent]: ...
    def tick(self, now_ms: int) -> list[AlarmEvent]: ...


class History(Protocol):
    async def write_positions(self, batch: PositionBatch) -> None: ...
    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None: ...
    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None: ...


class Feed(Protocol):
    def positions(self, batch: PositionBatch) -> Any: ...
    def alarm(self, event: AlarmEvent) -> Any: ...


class Live(Protocol):
    async def update(self, batch: PositionBatch) -> Any: ...
    async def update_alarms(self, events: Sequence[AlarmEvent]) -> Any: ...


@dataclass(slots=True)
class _StoreItem:
    flush: Flush | None
    events: list[AlarmEvent]


class Pipeline:
    """Owns the stages between the ingest queue and the broker acknowledgement."""

    def __init__(
        self,
        *,
        q_in: asyncio.Queue[Flush | None],
        engine: Engine | None,
        history: History | None,
        feed: Feed | None,
        live: Live | None,
        metrics: Metrics,
        ack: Callable[[Sequence[Any]], int],
        finished: asyncio.Event | None = None,
        store_queue: int = 64,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_events: Callable[[list[AlarmEvent]], Any] | None = None,
    ) -> None:
        self.q_in = q_in
        self.q_store: asyncio.Queue[_StoreItem | None] = asyncio.Queue(store_queue)
        self.engine = engine
        self.history = history
        self.feed = feed
        self.live = live
        self.metrics = metrics
        self.ack = ack
        self.finished = finished or asyncio.Event()
        self.tick_s = tick_s
        self.clock = clock
        self.on_events = on_events
        self.positions_processed = 0
        self.positions_stored = 0

    async def run(self) -> None:
        """Run until the ingest side sends its final ``None`` and everything is written."""
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(self._ticker())
            tg.create_task(self._process())
            await tg.create_task(self._store())
            ticker.cancel()

    def _publish(self, events: list[AlarmEvent]) -> None:
        for ev in events:
            self.metrics.alarms.labels(ev.kind, ev.action).inc()
            if self.feed is not None:
                self.feed.alarm(ev)
        if events and self.on_events is not None:
            self.on_events(events)

    async def _process(self) -> None:
        m = self.metrics
        while True:
            m.queue_depth.labels("ingest").set(self.q_in.qsize())
            flush = await self.q_in.get()
            if flush is None:
                await self.q_store.put(None)
                return
            batch = flush.batch
            for dl in flush.dead_letters:
                m.rejected.labels(dl.reason).inc()
            events: list[AlarmEvent] = []
            if len(batch):
                m.positions_in.inc(len(batch))
                m.batch_rows.observe(len(batch))
                t0 = time.perf_counter()
                if self.engine is not None:
                    events = self.engine.process(batch)
                t1 = time.perf_counter()
                m.stage_seconds.labels("rules").observe(t1 - t0)
                if self.feed is not None:
                    self.feed.positions(batch)
                if self.live is not None:
                    await self.live.update(batch)
                m.stage_seconds.labels("live").observe(time.perf_counter() - t1)
                self.positions_processed += len(batch)
            self._publish(events)
            if events and self.live is not None:
                await self.live.update_alarms(events)
            await self.q_store.put(_StoreItem(flush, events))

    async def _ticker(self) -> None:
        if self.engine is None:
            return
        while True:
            await asyncio.sleep(self.tick_s)
            events = self.engine.tick(int(self.clock() * 1000))
            if events:
                self._publish(events)
                if self.live is not None:
                    await self.live.update_alarms(events)
                await self.q_store.put(_StoreItem(None, events))

    async def _store(self) -> None:
        m = self.metrics
        while True:
            m.queue_depth.labels("store").set(self.q_store.qsize())
            item = await self.q_store.get()
            if item is None:
                self.finished.set()
                return
            t0 = time.perf_counter()
            flush = item.flush
            if self.history is not None:
                if flush is not None and flush.dead_letters:
                    await self.history.write_dead_letters(flush.dead_letters)
                if flush is not None and len(flush.batch):
                    await self.history.write_positions(flush.batch)
                if item.events:
                    await self.history.write_alarm_events(item.events)
            m.stage_seconds.labels("store").observe(time.perf_counter() - t0)
            if flush is not None:
                self.positions_stored += len(flush.batch)
                self.ack(flush.acks)
                m.ingest_latency.observe(max(0.0, self.clock() - flush.first_recv_ms / 1000))
