"""The pipeline, wired in one place: ingest → rules → live feed → history → ack.

::

    MqttIngest ──q_in──▶ process ──q_store──▶ store ──▶ ack to the broker
                           │  rules engine      │  positions, alarms, dead letters
                           └▶ feed, live state   └▶ metrics

    ticker ──▶ engine.tick(now) (timer rules: offline) ──▶ feed, q_store

Both queues are bounded; a full queue stops the stage before it, and finally
the broker, which stops sending once ``receive_maximum`` messages wait for
their PUBACK. When the history store falls behind, the store stage writes
every flush already waiting with one call per kind of row (group commit), so
a slow commit is paid once per write, not once per flush. Any stage that
raises stops the whole pipeline (TaskGroup): a failure is loud, never a
silently dead stage.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.batch import PositionBatch
from fleet.events import AlarmEvent
from fleet.interfaces import FeedSink, HistoryStore, LiveState, RulesEngine
from fleet.metrics import Metrics
from ingest.core import Flush

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


# The seams the pipeline uses, from the kernel (fleet.interfaces): the engine (process,
# tick), the history store (writes), the feed and the live state.
Engine = RulesEngine[Any]
History = HistoryStore
Live = LiveState


@dataclass(slots=True)
class _StoreItem:
    flush: Flush | None
    events: list[AlarmEvent]
    # a rule state snapshot taken after this item's flush went through the engine: saved
    # only once everything before it is written, so a saved state never covers a position
    # that is not in history (what a takeover replays from; issue 19)
    state: Callable[[], Any] | None = None


def _merge(flushes: list[Flush]) -> Flush:
    """Several flushes as one, in order."""
    return Flush(
        batch=PositionBatch.concat(f.batch for f in flushes),
        dead_letters=[dl for f in flushes for dl in f.dead_letters],
        acks=[a for f in flushes for a in f.acks],
        messages=sum(f.messages for f in flushes),
        first_recv_ms=min(f.first_recv_ms for f in flushes),
        others=[o for f in flushes for o in f.others],
    )


class Pipeline:
    """Owns the stages between the ingest queue and the broker acknowledgement."""

    def __init__(
        self,
        *,
        q_in: asyncio.Queue[Flush | None],
        engine: Engine | None,
        history: History | None,
        feed: FeedSink | None,
        live: Live | None,
        metrics: Metrics,
        ack: Callable[[Sequence[Any]], int],
        finished: asyncio.Event | None = None,
        store_queue: int = 64,
        store_max_rows: int = 50_000,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_events: Callable[[list[AlarmEvent]], Any] | None = None,
        already_seen: Callable[[PositionBatch], PositionBatch] | None = None,
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
        self.store_max_rows = store_max_rows
        self.clock = clock
        self.on_events = on_events
        # Rows the engine took already (a takeover's replay from history): left out of the
        # rules, still written (idempotent by (vehicle, ts)) and acknowledged.
        self.already_seen = already_seen
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
            # Behind? Take every flush already waiting as one batch: the per-batch costs
            # (rules, feed, live state) are then paid once while catching up.
            last: Flush | None = flush
            if not self.q_in.empty():
                waiting = [flush]
                rows = len(flush.batch)
                while rows < self.store_max_rows and not self.q_in.empty():
                    last = self.q_in.get_nowait()
                    if last is None:
                        break
                    waiting.append(last)
                    rows += len(last.batch)
                flush = _merge(waiting)
            batch = flush.batch
            for dl in flush.dead_letters:
                m.rejected.labels(dl.reason).inc()
            events: list[AlarmEvent] = []
            if flush.others and hasattr(self.engine, "driver_cards"):  # 0x0702 driver cards
                self.engine.driver_cards(flush.others)  # type: ignore[union-attr]
            if len(batch):
                m.positions_in.inc(len(batch))
                m.batch_rows.observe(len(batch))
                t0 = time.perf_counter()
                if self.engine is not None:
                    fresh = batch if self.already_seen is None else self.already_seen(batch)
                    events = self.engine.process(fresh)
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
            if last is None:  # the end came while merging
                await self.q_store.put(None)
                return

    async def inject_events(self, events: list[AlarmEvent]) -> None:
        """Alarm events from outside the engine (an order covering after the fact, a close by
        hand on the alarm desk): to the feed, the live state and history, like the engine's own.
        """
        if not events:
            return
        self._publish(events)
        if self.live is not None:
            await self.live.update_alarms(events)
        await self.q_store.put(_StoreItem(None, events))

    async def save_state(self, save: Callable[[bytes], Any]) -> None:
        """Snapshot the engine's state now and ``save`` it (awaited if a coroutine) once
        every flush processed before the snapshot is written: the saved state covers only
        positions in history. Returns when queued (the store stage saves it in order)."""
        if self.engine is None:
            return
        blob = self.engine.state_bytes()
        await self.q_store.put(_StoreItem(None, [], state=lambda: save(blob)))

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
            # Group commit: when writes fall behind, everything already waiting goes out in
            # one write (one commit, one fsync) instead of one per flush. Bounded by
            # ``store_max_rows`` so one write never grows without limit.
            items: list[_StoreItem] = []
            rows = 0
            while item is not None:
                items.append(item)
                if item.flush is not None:
                    rows += len(item.flush.batch)
                if rows >= self.store_max_rows or self.q_store.empty():
                    break
                item = self.q_store.get_nowait()
            if items:
                await self._write(items)
            if item is None:
                self.finished.set()
                return

    async def _write(self, items: list[_StoreItem]) -> None:
        """Write the items' dead letters, positions and alarms, then acknowledge their flushes."""
        m = self.metrics
        flushes = [i.flush for i in items if i.flush is not None]
        t0 = time.perf_counter()
        if self.history is not None:
            dead = [dl for f in flushes for dl in f.dead_letters]
            if dead:
                await self.history.write_dead_letters(dead)
            batch = PositionBatch.concat(f.batch for f in flushes)
            if len(batch):
                await self.history.write_positions(batch)
            events = [ev for i in items for ev in i.events]
            if events:
                await self.history.write_alarm_events(events)
        m.stage_seconds.labels("store").observe(time.perf_counter() - t0)
        now = self.clock()
        for flush in flushes:
            self.positions_stored += len(flush.batch)
            self.ack(flush.acks)
            m.ingest_latency.observe(max(0.0, now - flush.first_recv_ms / 1000))
        for item in items:
            if item.state is not None:
                res = item.state()
                if inspect.isawaitable(res):
                    await res
