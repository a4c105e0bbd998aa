"""``fleetwatch bench store``: history write throughput and track playback.

In one run, on the same generated rows (1,000 vehicles reporting every 10 s):

- PostgreSQL through the project's writer (:class:`~store.postgres.PostgresHistory`,
  batches as ingest hands them over) and, as the baseline, raw psycopg binary COPY
  (``write_row`` of ready-made tuples, same table, same batches, one transaction each);
- SQLite through :class:`~store.sqlite.SQLiteHistory` and raw ``executemany``;
- track playback: one vehicle-day (8,640 points) read back from PostgreSQL.

Writer and baseline alternate, ``repeats`` times each; medians are reported. Uses a
private schema in the configured database and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from fleet.batch import PositionBatch
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from store import pgcopy
from store.config import StoreConfig
from store.history import DAY_MS
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory

__all__ = ["run"]

TARGET_ROWS_S = 300_000
TARGET_RATIO = 0.7
TARGET_TRACK_MS = 50.0
VEHICLES = 1000


def _registry(n: int) -> Registry:
    orgs = [OrgConfig(id="city", name="city")]
    vehicles = [
        VehicleConfig(id=f"b{i:05d}", plate=f"B{i:05d}", terminal=f"1{i:010d}", org="city")
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(orgs))


def _rows(n: int, start_ms: int, seed: int = 7) -> PositionBatch:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return PositionBatch.from_columns(
        vehicle=i % VEHICLES,
        ts=start_ms + (i // VEHICLES) * 10_000,
        lat=30.4 + rng.random(n) * 0.2,
        lon=106.5 + rng.random(n) * 0.2,
        speed=rng.random(n) * 80,
        heading=rng.integers(0, 360, n),
        alt=rng.integers(200, 400, n),
        acc=rng.random(n) < 0.8,
        mileage=rng.random(n) * 1e5,
        recv_ts=start_ms + (i // VEHICLES) * 10_000 + 300,
    )


def _split(b: PositionBatch, size: int) -> list[PositionBatch]:
    return [b.take(np.arange(s, min(s + size, len(b)))) for s in range(0, len(b), size)]


async def _pg(cfg: StoreConfig, n: int, batch_rows: int, repeats: int) -> dict[str, Any]:
    reg = _registry(VEHICLES)
    day0 = (time.time_ns() // 1_000_000 // DAY_MS - 2) * DAY_MS
    rows = _rows(n, day0)
    batches = _split(rows, batch_rows)
    store = PostgresHistory(cfg)
    await store.open(reg)
    keys = store._keys  # the same persistent keys for the baseline
    table = sql.Identifier(cfg.postgres_schema, "positions")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in pgcopy.POSITION_COLUMNS)
    types = [
        "int4",
        "timestamptz",
        "float8",
        "float8",
        "float4",
        "int2",
        "int2",
        "bool",
        "int8",
        "int8",
        "float4",
        "bool",
        "timestamptz",
    ]
    import datetime as dt

    def tuples(b: PositionBatch) -> list[tuple[Any, ...]]:
        utc = dt.UTC
        return list(
            zip(
                keys[b.vehicle].tolist(),
                [dt.datetime.fromtimestamp(t / 1000, utc) for t in b.ts.tolist()],
                b.lat.tolist(),
                b.lon.tolist(),
                b.speed.tolist(),
                b.heading.tolist(),
                b.alt.tolist(),
                b.acc.tolist(),
                b.alarm_bits.tolist(),
                b.status_bits.tolist(),
                b.mileage.tolist(),
                b.backfill.tolist(),
                [dt.datetime.fromtimestamp(t / 1000, utc) for t in b.recv_ts.tolist()],
                strict=True,
            )
        )

    prepared = [tuples(b) for b in batches]  # not timed: the baseline gets ready-made rows
    conn = await psycopg.AsyncConnection.connect(cfg.postgres_dsn, autocommit=True)

    async def truncate() -> None:
        await conn.execute(sql.SQL("TRUNCATE {}").format(table))
        await conn.execute("CHECKPOINT")

    writer_runs, copy_runs = [], []
    for _ in range(repeats):
        await truncate()
        t = time.perf_counter()
        for b in batches:
            await store.write_positions(b)
        writer_runs.append(n / (time.perf_counter() - t))
        await truncate()
        t = time.perf_counter()
        for part in prepared:
            async with (
                conn.transaction(),
                conn.cursor().copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, cols)
                ) as copy,
            ):
                copy.set_types(types)
                for r in part:
                    await copy.write_row(r)
        copy_runs.append(n / (time.perf_counter() - t))
    # Redelivery of everything: the idempotent staging path.
    t = time.perf_counter()
    for b in batches:
        await store.write_positions(b)
    redelivery = n / (time.perf_counter() - t)

    # Track playback: one vehicle-day at 10 s (8,640 points).
    day = day0 + DAY_MS
    i = np.arange(8640)
    await store.write_positions(
        PositionBatch.from_columns(
            vehicle=np.zeros(8640),
            ts=day + i * 10_000,
            lat=30.4 + i * 1e-5,
            lon=106.6 + i * 1e-5,
            speed=np.full(8640, 40.0),
            acc=np.ones(8640, bool),
        )
    )
    times, simplified = [], []
    for _ in range(30):
        t = time.perf_counter()
        tr = await store.track(reg.ids[0], day, day + DAY_MS)
        times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await store.track(reg.ids[0], day, day + DAY_MS, simplify_m=10.0)
        simplified.append((time.perf_counter() - t) * 1000)
    assert tr["ts"].size == 8640
    await conn.close()
    await store.close()
    w, c = statistics.median(writer_runs), statistics.median(copy_runs)
    return {
        "rows": n,
        "batch_rows": batch_rows,
        "writer_rows_per_s": round(w),
        "copy_rows_per_s": round(c),
        "ratio": round(w / c, 3),
        "writer_runs": [round(x) for x in writer_runs],
        "copy_runs": [round(x) for x in copy_runs],
        "redelivery_rows_per_s": round(redelivery),
        "track_points": 8640,
        "track_ms_median": round(statistics.median(times), 2),
        "track_ms_p90": round(sorted(times)[int(len(times) * 0.9)], 2),
        "track_simplified_ms_median": round(statistics.median(simplified), 2),
    }


async def _sqlite(n: int, batch_rows: int, repeats: int) -> dict[str, Any]:
    reg = _registry(VEHICLES)
    rows = _rows(n, 1_700_000_000_000)
    batches = _split(rows, batch_rows)
    writer_runs, raw_runs = [], []
    with tempfile.TemporaryDirectory() as d:
        for k in range(repeats):
            path = Path(d) / f"w{k}.db"
            store = SQLiteHistory(StoreConfig(), path=str(path))
            await store.open(reg)
            t = time.perf_counter()
            for b in batches:
                await store.write_positions(b)
            writer_runs.append(n / (time.perf_counter() - t))
            keys = store._keys
            await store.close()
            # Baseline: the same table, plain executemany of ready-made tuples, same batches.
            raw_path = Path(d) / f"r{k}.db"
            boot = SQLiteHistory(StoreConfig(), path=str(raw_path))
            await boot.open(reg)
            await boot.close()
            db = sqlite3.connect(raw_path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            prepared = [
                list(
                    zip(
                        keys[b.vehicle].tolist(),
                        b.ts.tolist(),
                        b.lat.tolist(),
                        b.lon.tolist(),
                        b.speed.tolist(),
                        b.heading.tolist(),
                        b.alt.tolist(),
                        b.acc.tolist(),
                        b.alarm_bits.tolist(),
                        b.status_bits.tolist(),
                        b.mileage.tolist(),
                        b.backfill.tolist(),
                        b.recv_ts.tolist(),
                        strict=True,
                    )
                )
                for b in batches
            ]
            t = time.perf_counter()
            for part in prepared:
                db.execute("BEGIN")
                db.executemany("INSERT INTO positions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", part)
                db.execute("COMMIT")
            raw_runs.append(n / (time.perf_counter() - t))
            db.close()
    w, r = statistics.median(writer_runs), statistics.median(raw_runs)
    return {
        "rows": n,
        "batch_rows": batch_rows,
        "writer_rows_per_s": round(w),
        "executemany_rows_per_s": round(r),
        "ratio": round(w / r, 3),
        "writer_runs": [round(x) for x in writer_runs],
        "executemany_runs": [round(x) for x in raw_runs],
    }


async def _run(quick: bool, dsn: str | None) -> dict[str, Any]:
    repeats = 2 if quick else 3
    cfg = StoreConfig(
        kind="postgres",
        postgres_dsn=dsn or os.environ.get("FLEETWATCH_BENCH_DSN", StoreConfig().postgres_dsn),
        postgres_schema=f"bench_store_{os.getpid()}",
    )
    try:
        pg = await _pg(cfg, 100_000 if quick else 1_000_000, 20_000, repeats)
        pg_small = await _pg(cfg, 50_000 if quick else 200_000, 5_000, repeats)
    finally:
        with psycopg.connect(cfg.postgres_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(cfg.postgres_schema)
                )
            )
    lite = await _sqlite(50_000 if quick else 300_000, 20_000, repeats)
    return {
        "postgres": pg,
        "postgres_ingest_batches": pg_small,
        "sqlite": lite,
        "targets": {
            "postgres_rows_per_s": TARGET_ROWS_S,
            "ratio_to_copy": TARGET_RATIO,
            "track_ms": TARGET_TRACK_MS,
        },
        "met": {
            "postgres_rows_per_s": pg["writer_rows_per_s"] >= TARGET_ROWS_S,
            "ratio_to_copy": pg["ratio"] >= TARGET_RATIO,
            "track_ms": pg["track_ms_median"] < TARGET_TRACK_MS,
        },
    }


def run(quick: bool = False, dsn: str | None = None) -> dict[str, Any]:
    """Run the store benchmark; returns one JSON-able dict (see the module docstring)."""
    return asyncio.run(_run(quick, dsn))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
