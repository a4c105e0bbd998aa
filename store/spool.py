"""Degradation for the history store: a bounded local spool while the database is down.

:class:`SpoolingWriter` wraps a :class:`~store.history.HistoryStore` (PostgreSQL
in production). While the store raises
:class:`~fleet.errors.ServiceUnavailable`, writes go to files in
``spool_dir`` — one file per call, numbered, fsynced before returning, so the
caller may acknowledge the broker as if the database had the rows. At most
every ``retry_interval_s`` a write (or :meth:`SpoolingWriter.drain`) tries the
database again; when it answers, the spool is replayed in order, then new
writes go straight through again.

Policy when the spool is full (``spool_max_rows`` positions): refuse — the
write raises ``ServiceUnavailable`` and the caller does not acknowledge, so the
broker keeps the messages (its queue is sized for the outage, see
deploy/mosquitto.conf). Nothing is dropped silently.

Spool files name vehicles by their id string, never by the registry's dense
index, so a spool written before a restart replays correctly after it.

For operators: :attr:`SpoolingWriter.degraded` (raise a system alarm while
True), :attr:`SpoolingWriter.spooled_rows` (a gauge), :meth:`status`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.batch import FIELDS, PositionBatch
from fleet.errors import Misuse, ServiceUnavailable
from fleet.events import AlarmEvent
from fleet.registry import Registry
from store.config import StoreConfig
from store.history import AlarmQuery, DeadLetter, DeadLetterQuery, HistoryStore, StoreHealth

__all__ = ["SpoolingWriter"]

log = logging.getLogger(__name__)


def _fsync_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file atomically and durably: temp file, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolingWriter:
    """A :class:`~store.history.HistoryStore` that spools writes while the inner store is down."""

    def __init__(
        self,
        inner: HistoryStore,
        config: StoreConfig,
        *,
        spool_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.config = config
        self.dir = Path(spool_dir if spool_dir is not None else config.spool_dir)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._registry: Registry | None = None
        self._inner_open = False
        self._files: list[tuple[int, Path, int]] = []  # (seq, path, position rows), in order
        self._next_seq = 0
        self._last_try = -float("inf")
        self.degraded = False
        self.spool_full_refusals = 0
        self.replayed_rows = 0
        self.unknown_vehicle_rows = 0  # spooled rows whose vehicle left the registry meanwhile

    # -- status -----------------------------------------------------------------------------
    @property
    def spooled_rows(self) -> int:
        return sum(rows for _, _, rows in self._files)

    def status(self) -> dict[str, Any]:
        return {
            "degraded": self.degraded,
            "spooled_rows": self.spooled_rows,
            "spooled_files": len(self._files),
            "spool_full_refusals": self.spool_full_refusals,
            "replayed_rows": self.replayed_rows,
        }

    def health(self) -> StoreHealth:
        inner = self.inner.health()
        return StoreHealth(
            degraded=self.degraded,
            spooled_rows=self.spooled_rows,
            refused_rows=inner.refused_rows,
            status=self.status(),
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self, registry: Registry) -> None:
        self._registry = registry
        self.dir.mkdir(parents=True, exist_ok=True)
        self._scan()
        try:
            await self.inner.open(registry)
            self._inner_open = True
        except ServiceUnavailable as exc:
            self._go_degraded(exc)
        if self._files and not self.degraded:
            self.degraded = True  # left over from the last run: replay before new writes
            await self._recover(force=True)

    async def close(self) -> None:
        if self._inner_open:
            await self.inner.close()
            self._inner_open = False

    def _scan(self) -> None:
        self._files = []
        for p in sorted(self.dir.glob("*.tmp")):
            p.unlink()  # never renamed: the write did not return, so it was never acknowledged
        for p in sorted(self.dir.iterdir()):
            seq_s, _, kind = p.name.partition(".")
            if not seq_s.isdigit():
                continue
            rows = 0
            if kind == "pos.npz":
                with np.load(p) as z:
                    rows = int(z["ts"].shape[0])
            self._files.append((int(seq_s), p, rows))
        self._next_seq = self._files[-1][0] + 1 if self._files else 0

    def _go_degraded(self, exc: ServiceUnavailable) -> None:
        if not self.degraded:
            log.error("history store unavailable, spooling to %s: %s", self.dir, exc)
        self.degraded = True
        self._last_try = self._clock()

    # -- recovery ---------------------------------------------------------------------------
    async def drain(self) -> int:
        """Try the database now; replay the spool in order. Returns position rows replayed."""
        async with self._lock:
            return await self._recover(force=True)

    async def _recover(self, *, force: bool = False) -> int:
        if not self.degraded:
            return 0
        if not force and self._clock() - self._last_try < self.config.retry_interval_s:
            return 0
        self._last_try = self._clock()
        replayed = 0
        try:
            if not self._inner_open:
                await self.inner.open(self.registry)
                self._inner_open = True
            while self._files:
                _, path, rows = self._files[0]
                await self._replay(path)
                path.unlink()
                self._files.pop(0)
                replayed += rows
                self.replayed_rows += rows
        except ServiceUnavailable as exc:
            self._go_degraded(exc)
            return replayed
        self.degraded = False
        log.warning("history store back; replayed %d spooled positions", replayed)
        return replayed

    async def _replay(self, path: Path) -> None:
        reg = self.registry
        if path.name.endswith(".pos.npz"):
            with np.load(path) as z:
                cols = {k: z[k] for k in z.files}
            ids = cols.pop("vehicle_ids").tolist()
            dense = np.array(
                [reg.by_id(v) if reg.by_id(v) is not None else -1 for v in ids], dtype=np.int64
            )
            vehicle = dense[cols.pop("vehicle_ref")] if len(ids) else np.empty(0, np.int64)
            known = vehicle >= 0
            if not known.all():
                lost = int((~known).sum())
                self.unknown_vehicle_rows += lost
                log.error("spool %s: %d rows of vehicles no longer registered", path.name, lost)
            batch = PositionBatch(
                vehicle=vehicle[known].astype(np.int32),
                **{k: v[known] for k, v in cols.items()},
            )
            await self.inner.write_positions(batch)
        elif path.name.endswith(".alarms.json"):
            events = []
            for d in json.loads(path.read_bytes()):
                i = reg.by_id(d["vehicle_id"])
                events.append(AlarmEvent(**{**d, "vehicle": -1 if i is None else i}))
            await self.inner.write_alarm_events(events)
        elif path.name.endswith(".dead.json"):
            await self.inner.write_dead_letters(
                [
                    DeadLetter(**{**d, "payload": base64.b64decode(d["payload"])})
                    for d in json.loads(path.read_bytes())
                ]
            )

    # -- spooling ---------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Misuse("SpoolingWriter used before open()")
        return self._registry

    def _path(self, kind: str) -> Path:
        seq = self._next_seq
        self._next_seq += 1
        return self.dir / f"{seq:012d}.{kind}"

    def _spool_positions(self, batch: PositionBatch) -> None:
        if int(batch.vehicle.max()) >= len(self.registry) or int(batch.vehicle.min()) < 0:
            raise Misuse("batch.vehicle holds an index outside the registry given to open()")
        if self.spooled_rows + len(batch) > self.config.spool_max_rows:
            self.spool_full_refusals += 1
            raise ServiceUnavailable(
                "postgresql",
                f"down and the local spool is full ({self.spooled_rows} rows): not acknowledged",
            )
        uniq, ref = np.unique(batch.vehicle, return_inverse=True)
        ids = np.array([self.registry.ids[int(i)] for i in uniq.tolist()], dtype=np.str_)
        cols: dict[str, npt.NDArray[Any]] = {
            name: getattr(batch, name) for name in FIELDS if name != "vehicle"
        }
        cols["vehicle_ids"] = ids
        cols["vehicle_ref"] = ref.astype(np.int32)
        path = self._path("pos.npz")
        _fsync_write(path, lambda fh: np.savez(fh, allow_pickle=False, **cols))
        self._files.append((int(path.name.split(".")[0]), path, len(batch)))

    def _spool_json(self, kind: str, items: list[dict[str, Any]]) -> None:
        path = self._path(kind)
        data = json.dumps(items, ensure_ascii=False).encode()
        _fsync_write(path, lambda fh: fh.write(data))
        self._files.append((int(path.name.split(".")[0]), path, 0))

    async def _write(self, direct: Callable[[], Any], spool: Callable[[], None]) -> Any:
        async with self._lock:
            await self._recover()
            if not self.degraded:
                try:
                    return await direct()
                except ServiceUnavailable as exc:
                    self._go_degraded(exc)
            await asyncio.to_thread(spool)
            return None

    # -- HistoryStore: writes ---------------------------------------------------------------
    async def write_positions(self, batch: PositionBatch) -> int:
        """Rows stored now, or 0 when spooled (they are stored at replay)."""
        if len(batch) == 0:
            return 0
        n = await self._write(
            lambda: self.inner.write_positions(batch), lambda: self._spool_positions(batch)
        )
        return int(n or 0)

    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        await self._write(
            lambda: self.inner.write_alarm_events(events),
            lambda: self._spool_json("alarms.json", [dataclasses.asdict(e) for e in events]),
        )

    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None:
        if not rows:
            return
        await self._write(
            lambda: self.inner.write_dead_letters(rows),
            lambda: self._spool_json(
                "dead.json",
                [
                    {**dataclasses.asdict(r), "payload": base64.b64encode(r.payload).decode()}
                    for r in rows
                ],
            ),
        )

    # -- HistoryStore: everything else goes to the database (ServiceUnavailable if down) ----
    def _inner_or_raise(self) -> HistoryStore:
        if not self._inner_open:
            raise ServiceUnavailable("postgresql", "not connected yet")
        return self.inner

    async def follow_registry(self) -> None:
        await self._inner_or_raise().follow_registry()

    async def track(
        self, vehicle_id: str, from_ms: int, to_ms: int, simplify_m: float | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        return await self._inner_or_raise().track(vehicle_id, from_ms, to_ms, simplify_m)

    async def tracks(
        self, vehicle_ids: Sequence[str], from_ms: int, to_ms: int
    ) -> dict[str, dict[str, npt.NDArray[Any]]]:
        return await self._inner_or_raise().tracks(vehicle_ids, from_ms, to_ms)

    async def alarms(self, query: AlarmQuery | None = None) -> list[dict[str, Any]]:
        return await self._inner_or_raise().alarms(query)

    async def count_alarms(self, query: AlarmQuery | None = None) -> int:
        return await self._inner_or_raise().count_alarms(query)

    async def dead_letters(self, query: DeadLetterQuery) -> list[dict[str, Any]]:
        return await self._inner_or_raise().dead_letters(query)

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        return await self._inner_or_raise().count_dead_letters(query)

    async def ack_alarm(
        self,
        alarm_id: str,
        user: str,
        note: str,
        handled: bool,
        at_ms: int | None = None,
        action: str = "ack",
    ) -> bool:
        inner = self._inner_or_raise()
        return await inner.ack_alarm(alarm_id, user, note, handled, at_ms, action=action)

    async def daily_stats(
        self, day: dt.date, tz: str, orgs: Sequence[str] | None = None
    ) -> dict[str, Any]:
        return await self._inner_or_raise().daily_stats(day, tz, orgs)

    async def save_rule_state(self, name: str, blob: bytes) -> None:
        await self._inner_or_raise().save_rule_state(name, blob)

    async def save_rule_state_fenced(self, name: str, blob: bytes, epoch: int) -> bool:
        inner: Any = self._inner_or_raise()  # the PostgreSQL store (issue 19 fencing)
        return bool(await inner.save_rule_state_fenced(name, blob, epoch))

    async def load_rule_state(self, name: str) -> bytes | None:
        return await self._inner_or_raise().load_rule_state(name)

    async def apply_retention(self, now_ms: int, *, dry_run: bool = False) -> dict[str, int]:
        return await self._inner_or_raise().apply_retention(now_ms, dry_run=dry_run)
