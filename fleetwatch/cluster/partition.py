"""One owned partition: its own MQTT session, rules engine, pipeline and rule state.

On start (a claim won, epoch ``e``):

1. the rule state ``rules-engine/p{k}`` is loaded and restored (empty: a fresh engine);
2. **replay**: for each vehicle of the partition, the positions history holds after the
   state's last point for it (at most ``REPLAY_MAX_S`` back; read in bulk,
   :meth:`HistoryStore.tracks`) run through the engine, in time order — what the
   previous owner processed and wrote after its last save. An episode it had open
   continues with the same id; one it opened after the save opens again with the same id
   (the id is vehicle, kind and start time), so history upserts it, it is never a second
   episode;
3. the MQTT client ``{mqtt.client_id}-p{k}`` connects with a persistent session to the
   partition's topics: the broker delivers what the previous owner left unacknowledged
   (and what queued meanwhile). Rows at or before the replayed point of their vehicle
   were in history already: they are written again (idempotent) and acknowledged, but
   not shown to the engine a second time (else a duplicate would run as back-fill and
   open a ``:backfill`` twin).

State saves go through the pipeline's store stage (:meth:`Pipeline.save_state`), after
the writes they cover, with the epoch: a save refused for a higher epoch means another
node owns the partition — this one stops at once.

Stop, clean (release, SIGTERM): the ingest flushes, the pipeline writes and acks, the
state is saved. Stop, fenced: the ingest is cancelled with nothing more acknowledged;
the broker keeps the unacknowledged messages for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fleet import aio
from fleet.batch import PositionBatch
from fleet.cluster import partition_of, partition_topic
from fleet.errors import ServiceUnavailable
from fleet.events import AlarmEvent
from fleet.interfaces import FeedSink, LiveState
from fleet.metrics import Metrics
from fleet.registry import Registry
from fleetwatch.config import Config
from fleetwatch.pipeline import Pipeline
from ingest.core import Flush, IngestCore
from ingest.json_codec import JsonLimits
from ingest.mqtt import MqttIngestBase, make_ingest
from rules.engine import RulesEngine
from store.history import HistoryStore

__all__ = ["REPLAY_MAX_S", "SAVE_EVERY_S", "Partition", "state_key"]

log = logging.getLogger(__name__)

REPLAY_MAX_S = 6 * 3600  # a takeover replays at most this far back per vehicle
SAVE_EVERY_S = 10.0  # rule state saved this often by an owner (and on a clean stop)
_INT_MIN = np.iinfo(np.int64).min


def state_key(k: int) -> str:
    return f"rules-engine/p{k}"


class FencedStore(Protocol):
    async def save_rule_state_fenced(self, name: str, blob: bytes, epoch: int) -> bool: ...


class Fenced(Exception):
    """A save was refused: a later owner holds the partition."""


@dataclass
class Replayed:
    positions: int = 0
    episodes_open: int = 0
    seconds: float = 0.0
    until: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def partition_vehicles(registry: Registry, k: int, partitions: int) -> list[int]:
    return [v for v, t in enumerate(registry.terminals) if partition_of(t, partitions) == k and t]


class Partition:
    """One partition owned by this node at ``epoch``. :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        k: int,
        epoch: int,
        *,
        cfg: Config,
        registry: Registry,
        history: HistoryStore,
        live: LiveState,
        feed: FeedSink,
        metrics: Metrics,
        make_engine: Callable[[], RulesEngine],
        on_fenced: Callable[[int, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.k = k
        self.epoch = epoch
        self.cfg = cfg
        self.registry = registry
        self.history = history
        self.live = live
        self.feed = feed
        self.metrics = metrics
        self.engine = make_engine()
        self.on_fenced = on_fenced
        self.clock = clock
        P = cfg.cluster.partitions
        mc = cfg.mqtt
        self.mqtt = mc.model_copy(
            update={
                "client_id": f"{mc.client_id}-p{k}",
                "json_topic": partition_topic(mc.json_topic, k, P) if mc.json_topic else "",
                "jt808_topic": partition_topic(mc.jt808_topic, k, P) if mc.jt808_topic else "",
            }
        )
        ic = cfg.ingest
        self.core = IngestCore(
            registry,
            limits=JsonLimits(
                max_payload_bytes=ic.max_payload_bytes,
                max_positions=ic.max_positions_per_payload,
                max_future_ms=ic.max_future_s * 1000,
                max_past_ms=ic.max_past_days * 86_400_000,
            ),
            max_rows=ic.batch_max_rows,
            max_age_ms=ic.batch_max_age_ms,
            jt808_decoder=_jt808_decoder(cfg),
        )
        self.q_in: asyncio.Queue[Flush | None] = asyncio.Queue(ic.queue_batches)
        self.ingest: MqttIngestBase = make_ingest(self.mqtt, self.core, self.q_in, metrics)
        self._acking = True
        self.pipeline = Pipeline(
            q_in=self.q_in,
            engine=self.engine,
            history=history,
            feed=feed,
            live=live,
            metrics=metrics,
            ack=self._ack,
            finished=self.ingest.finished,
            store_queue=ic.queue_batches,
            already_seen=self._already_seen,
        )
        self.replayed = Replayed()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.saves_refused = 0
        self.stopping = False  # stop() was called: the task's end is expected

    # -- the seams given to the pipeline ----------------------------------------------------

    def _ack(self, tokens: Any) -> int:
        return self.ingest.ack(tokens) if self._acking else 0

    def _already_seen(self, batch: PositionBatch) -> PositionBatch:
        until = self.replayed.until
        if until.size == 0 or len(batch) == 0:
            return batch
        v = batch.vehicle
        lim = np.full(len(batch), _INT_MIN, dtype=np.int64)
        inside = v < until.size
        lim[inside] = until[v[inside]]
        keep = batch.backfill | (batch.ts > lim)
        return batch if bool(keep.all()) else batch.take(np.flatnonzero(keep))

    # -- life -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"partition-{self.k}")
        return self._task

    async def _restore(self) -> None:
        blob = await self.history.load_rule_state(state_key(self.k))
        if blob:
            self.engine.restore(blob)
        t0 = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        vehicles = partition_vehicles(self.registry, self.k, self.cfg.cluster.partitions)
        last = self.engine.state.last_ts
        until = np.full(len(self.registry), _INT_MIN, dtype=np.int64)
        parts: list[PositionBatch] = []
        to_ms = now_ms + self.cfg.ingest.max_future_s * 1000
        oldest = now_ms - REPLAY_MAX_S * 1000
        since = {v: max(int(last[v]) + 1 if last[v] != _INT_MIN else 0, oldest) for v in vehicles}
        # Two bulk reads, not one per vehicle (a partition of 500 took 11 s one by one under
        # load): the vehicles the state knows, from the earliest of their last points; the
        # others (new since the save, or no state), the whole replay window.
        known = [v for v in vehicles if since[v] > oldest]
        for group in (known, [v for v in vehicles if since[v] <= oldest]):
            if not group:
                continue
            ids = [self.registry.ids[v] for v in group]
            got = await self.history.tracks(ids, min(since[v] for v in group), to_ms)
            for v, vid in zip(group, ids, strict=True):
                cols = got.get(vid)
                if cols is None:
                    continue
                keep = cols["ts"] >= since[v]
                n = int(keep.sum())
                if n:
                    cols = {k: c[keep] for k, c in cols.items()}
                    parts.append(PositionBatch.from_columns(vehicle=np.full(n, v), **cols))
                    until[v] = int(cols["ts"].max())
        events: list[AlarmEvent] = []
        rows = 0
        if parts:
            batch = PositionBatch.concat(parts)
            rows = len(batch)
            events = self.engine.process(batch)
            self.feed.positions(batch)
            await self.live.update(batch)
        if events:
            await self.history.write_alarm_events(events)
            await self.live.update_alarms(events)
            for ev in events:
                self.feed.alarm(ev)
        self.replayed = Replayed(
            positions=rows,
            episodes_open=len(self.engine.open_episodes()),
            seconds=time.perf_counter() - t0,
            until=until,
        )
        log.info(
            "partition %d (epoch %d): state %s, replayed %d positions of %d vehicles in %.2f s;"
            " %d episodes open",
            self.k,
            self.epoch,
            f"{len(blob)} bytes" if blob else "none",
            rows,
            len(vehicles),
            self.replayed.seconds,
            self.replayed.episodes_open,
        )

    async def _save(self, blob: bytes) -> None:
        store: Any = self.history
        try:
            ok = await store.save_rule_state_fenced(state_key(self.k), blob, self.epoch)
        except ServiceUnavailable as exc:
            log.warning("partition %d: rule state not saved (%s)", self.k, exc)
            return
        if not ok:
            self.saves_refused += 1
            log.error("partition %d: state save refused, a later owner holds it", self.k)
            self.on_fenced(self.k, "state save refused (higher epoch on file)")

    async def _saver(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._stop.wait(), SAVE_EVERY_S)
            if not self._stop.is_set():
                await self.pipeline.save_state(self._save)

    async def _restore_retrying(self) -> None:
        """The database may be failing over: retry the restore (0.5 s doubling to 5 s);
        the partition does not consume before it is restored."""
        delay = 0.5
        while True:
            try:
                await self._restore()
                return
            except ServiceUnavailable as exc:
                log.warning(
                    "partition %d: restore failed (%s); again in %.1f s", self.k, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _run(self) -> None:
        await self._restore_retrying()
        # The first save marks the takeover: a lower epoch's save is refused from now on.
        await self._save(self.engine.state_bytes())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.ingest.run(self._stop))
            pipe = tg.create_task(self.pipeline.run())
            saver = tg.create_task(self._saver())
            ticker = tg.create_task(self._when_connected())
            await pipe
            saver.cancel()
            ticker.cancel()
        await self._save(self.engine.state_bytes())  # after the last write (clean stop)

    async def _when_connected(self) -> None:
        await self.ingest.connected.wait()
        self.ready.set()

    async def stop(self, *, clean: bool, timeout_s: float = 15.0) -> None:
        """Clean: flush, write, ack, save. Not clean (fenced): stop now, ack nothing more."""
        task = self._task
        if task is None:
            return
        self.stopping = True
        if not clean:
            self._acking = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return
        self._stop.set()
        try:
            await aio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            log.error("partition %d: clean stop took over %.0f s; cancelled", self.k, timeout_s)
            self._acking = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception as exc:  # the partition had failed already (logged by its node)
            log.debug("partition %d ended with %r", self.k, exc)

    @property
    def positions_processed(self) -> int:
        return self.pipeline.positions_processed


def _jt808_decoder(cfg: Config) -> Any:
    from ingest.jt808.position import decode_position_payloads

    lenient = cfg.gateway.is_lenient

    def decode(payloads: list[bytes]) -> Any:
        return decode_position_payloads(payloads, lenient=lenient)

    return decode
