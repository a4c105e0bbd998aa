"""``fleetwatch bench records``: 100,000 vehicles on file — start-up, memory, one live change.

On a temporary SQLite file (the embedded store; synchronous as configured):

- ``seed_s``: the first import of N vehicles (the configuration's, once);
- ``startup_s``: opening the store and loading every record into the registry
  (:func:`store.records.load_fleet`: validation of each record included), then
  building the rules engine, the live feed and ingest over it;
- ``rss_mb``: the process's resident memory growth over that start-up;
- ``live_change_ms``: one vehicle registered — the record and its history row
  written, the registry changed, then the first batch naming the new vehicle
  through the engine and the feed (which grow their per-vehicle arrays first);
  median of several changes. ``live_change_parts_ms`` splits it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet.batch import PositionBatch
from fleet.model import OrgConfig
from fleet.registry import OrgTree, Registry
from store.config import StoreConfig
from store.records import RecordStore, load_fleet, vehicle_config
from store.records_core import VehicleRecord

__all__ = ["run"]

_CLASSES = ("机要通信", "应急保障", "执法执勤", "特种专业技术", "一般公务")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _orgs() -> list[OrgConfig]:
    out = [OrgConfig(id="city", name="广安市")]
    out += [OrgConfig(id=f"d{k}", name=f"区县{k}", parent="city") for k in range(6)]
    out += [OrgConfig(id=f"u{k}", name=f"单位{k}", parent=f"d{k % 6}") for k in range(60)]
    return out


def _car(i: int) -> VehicleRecord:
    return VehicleRecord(
        id=f"v{i:06d}",
        plate=f"川X{i:05d}" if i < 100_000 else f"川Y{i - 100_000:05d}",
        org=f"u{i % 60}",
        terminal=f"13{i:09d}",
        vehicle_class=_CLASSES[i % len(_CLASSES)],
        brand="红旗",
        model="H5",
        seats=5,
    )


async def _run(n: int, changes: int) -> dict[str, Any]:
    from rules.config import RulesConfig
    from rules.engine import RulesEngine
    from stream.feed import FeedCore

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "records.db")
        seed_store = RecordStore(StoreConfig(), path=path)
        await seed_store.open()
        t = time.perf_counter()
        await seed_store.seed_vehicles((_car(i) for i in range(n)), by="bench", at=1)
        seed_s = time.perf_counter() - t
        await seed_store.close()

        gc.collect()
        rss0 = _rss_mb()
        t = time.perf_counter()
        store = RecordStore(StoreConfig(), path=path)
        await store.open()
        reg = Registry([], OrgTree.from_config(_orgs()))
        got = await load_fleet(store, reg, [], 1)
        load_s = time.perf_counter() - t
        engine = RulesEngine(RulesConfig(), reg)
        feed = FeedCore(reg, interval_ms=500)
        startup_s = time.perf_counter() - t
        gc.collect()
        rss = _rss_mb() - rss0
        assert got["on_file"] == n and len(reg) == n

        t0 = 1_764_034_200_000
        warm = PositionBatch.from_columns(
            vehicle=list(range(0, n, 97)),
            ts=[t0] * len(range(0, n, 97)),
            lat=[30.5] * len(range(0, n, 97)),
            lon=[106.6] * len(range(0, n, 97)),
            speed=[30.0] * len(range(0, n, 97)),
            acc=[True] * len(range(0, n, 97)),
        )
        engine.process(warm)
        feed.positions(warm)
        totals: list[float] = []
        parts: dict[str, list[float]] = {"store": [], "registry": [], "engine": [], "feed": []}
        for k in range(changes):
            rec = _car(n + k)
            a = time.perf_counter()
            await store.put_vehicle(rec, by="bench", at=2 + k, action="create")
            b = time.perf_counter()
            i = reg.upsert(vehicle_config(rec))
            c = time.perf_counter()
            batch = PositionBatch.from_columns(
                vehicle=[i], ts=[t0 + 10_000 + k], lat=[30.5], lon=[106.6], speed=[40.0], acc=[True]
            )
            engine.process(batch)
            d = time.perf_counter()
            feed.positions(batch)
            e = time.perf_counter()
            totals.append(e - a)
            for name, x in zip(parts, (b - a, c - b, d - c, e - d), strict=True):
                parts[name].append(x)
        await store.close()
    return {
        "vehicles": n,
        "seed_s": round(seed_s, 2),
        "load_records_s": round(load_s, 2),
        "startup_s": round(startup_s, 2),
        "rss_mb": round(rss, 1),
        "live_change_ms": round(statistics.median(totals) * 1000, 2),
        "live_change_max_ms": round(max(totals) * 1000, 2),
        "live_change_parts_ms": {
            k: round(statistics.median(v) * 1000, 2) for k, v in parts.items()
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    n, changes = (10_000, 5) if quick else (100_000, 20)
    return asyncio.run(_run(n, changes))
