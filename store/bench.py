"""``fleetwatch bench store``: history write throughput and track playback.

In one run, on the same generated rows (1,000 vehicles reporting every 10 s):

- PostgreSQL through the project's writer (:class:`~store.postgres.PostgresHistory`,
  batches as ingest hands them over) and, as the baseline, raw psycopg binary COPY
  (``write_row`` of ready-made tuples, same table, same batches, one transaction each);
- SQLite through :class:`~store.sqlite.SQLiteHistory` and raw ``executemany``;
- track playback: one vehicle-day (8,640 points) read back from PostgreSQL;
- the footprint (``footprint``): bytes per position on disk, table + indexes + TOAST
  (``pg_total_relation_size``), hot (a daily partition) and packed (``positions_packed``,
  store/packed.py), on a simulated day of ``FOOTPRINT_VEHICLES`` vehicles at 10 s
  (1,036,800 positions; ``--quick``: 24 vehicles, 207,360), then the 10,000-vehicle ×
  183-day projection at 10 s and 30 s, and a TimescaleDB-compression estimate.

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
        "float4",
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
                b.fuel.tolist(),
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


FOOTPRINT_VEHICLES = 120
FLEET, DAYS = 10_000, 183
# TimescaleDB is not installed here, so its compression is estimated, not measured: its
# documentation says compression "allows you to reduce your chunk size by more than 90%"
# (https://www.tigerdata.com/docs/use-timescale/latest/compression/about-compression).
# Assumed: compressed = 10 % of the uncompressed (hot) bytes, i.e. a ratio of 10.
TIMESCALE_RATIO = 10.0
TIMESCALE_SOURCE = (
    "https://www.tigerdata.com/docs/use-timescale/latest/compression/about-compression"
    ' ("reduce your chunk size by more than 90%")'
)
TARGET_PACKED_B = 60.0


def _fleet_day(vehicles: int, day_ms: int, step_ms: int, seed: int = 11) -> PositionBatch:
    """A simulated day of a fleet as terminals report it (JT/T 808 precision: 1e-6 degree,
    0.1 km/h, 0.1 km): each vehicle alternates drives and stops, turns gradually, climbs
    and descends, and its report arrives 0.2–3 s after its time. Random, but shaped like
    a track — what packing meets in production (uniform noise would be a worst case no
    terminal sends)."""
    rng = np.random.default_rng(seed)
    per = 86_400_000 // step_ms
    cols: dict[str, list[Any]] = {k: [] for k in ("vehicle", "ts", "lat", "lon", "speed",
                                                  "heading", "alt", "acc", "alarm",
                                                  "status", "mileage", "recv")}  # fmt: skip
    for v in range(vehicles):
        # Drive/stop segments of 2–40 minutes.
        seg = rng.integers(12, 240, per // 12 + 2)
        state = np.repeat(np.arange(seg.size) % 2 == 0, seg)[:per]
        speed = np.where(state, np.clip(rng.normal(40, 12, per), 0, 120), 0.0)
        speed = np.round(speed * 10) / 10
        heading = np.mod(np.cumsum(rng.normal(0, 8, per) * state) + rng.integers(0, 360), 360)
        step_km = speed * step_ms / 3_600_000
        rad = np.deg2rad(heading)
        lat = 30.45 + rng.random() * 0.2 + np.cumsum(step_km * np.cos(rad)) / 111.0
        lon = 106.6 + rng.random() * 0.2 + np.cumsum(step_km * np.sin(rad)) / 96.0
        cols["vehicle"].append(np.full(per, v))
        ts = day_ms + np.arange(per, dtype=np.int64) * step_ms + rng.integers(0, step_ms)
        cols["ts"].append(ts)
        cols["lat"].append(np.round(lat * 1e6) / 1e6)
        cols["lon"].append(np.round(lon * 1e6) / 1e6)
        cols["speed"].append(speed)
        cols["heading"].append(np.round(heading).astype(np.int64) % 360)
        cols["alt"].append(300 + np.cumsum(rng.integers(-1, 2, per)))
        cols["acc"].append(state | (rng.random(per) < 0.1))
        alarm = np.where(rng.random(per) < 0.002, 1 << rng.integers(0, 32, per), 0)
        cols["alarm"].append(alarm.astype(np.uint32))
        cols["status"].append(np.where(state, 3, 2).astype(np.uint32))  # ACC + positioned
        cols["mileage"].append(np.round(1e4 + rng.random() * 1e5 + np.cumsum(step_km), 1))
        cols["recv"].append(ts + rng.integers(200, 3000, per))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return PositionBatch.from_columns(
        vehicle=c["vehicle"], ts=c["ts"], lat=c["lat"], lon=c["lon"], speed=c["speed"],
        heading=c["heading"], alt=c["alt"], acc=c["acc"], alarm_bits=c["alarm"],
        status_bits=c["status"], mileage=c["mileage"], recv_ts=c["recv"],
    )  # fmt: skip


async def _size(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> int:
    cur = await conn.execute(
        "SELECT pg_total_relation_size(format('%%I.%%I', %s::text, %s::text)::regclass)",
        (schema, table),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _footprint(cfg: StoreConfig, vehicles: int) -> dict[str, Any]:
    reg = _registry(max(vehicles, 1))
    now = time.time_ns() // 1_000_000
    day = now // DAY_MS - 5  # a closed day, packable with pack_after_days = 2
    cfg = cfg.model_copy(update={"pack_after_days": 2, "pack_max_days_per_run": 1})
    store = PostgresHistory(cfg)
    await store.open(reg)
    s = cfg.postgres_schema
    part = "positions_p" + time.strftime("%Y%m%d", time.gmtime(day * 86_400))
    rows = _fleet_day(vehicles, day * DAY_MS, 10_000)
    for b in _split(rows, 50_000):
        await store.write_positions(b)
    conn = await psycopg.AsyncConnection.connect(cfg.postgres_dsn, autocommit=True)
    await conn.execute(
        sql.SQL("VACUUM ANALYZE {}.{}").format(sql.Identifier(s), sql.Identifier(part))
    )
    hot = await _size(conn, s, part)
    # The same rows in the column order of tables made before this version (vehicle first).
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {s}.legacy_layout (vehicle int4 NOT NULL, ts timestamptz NOT NULL,"
            " lat float8 NOT NULL, lon float8 NOT NULL, speed float4 NOT NULL,"
            " heading int2 NOT NULL, alt int2 NOT NULL, acc bool NOT NULL,"
            " alarm_bits int8 NOT NULL, status_bits int8 NOT NULL, mileage float4 NOT NULL,"
            " backfill bool NOT NULL, recv_ts timestamptz NOT NULL,"
            " fuel float4 NOT NULL DEFAULT 'NaN', PRIMARY KEY (vehicle, ts))"
        ).format(s=sql.Identifier(s))
    )
    await conn.execute(
        sql.SQL("INSERT INTO {s}.legacy_layout SELECT {c} FROM {s}.{p}").format(
            s=sql.Identifier(s),
            p=sql.Identifier(part),
            c=sql.SQL(", ").join(
                sql.Identifier(n)
                for n in ("vehicle", "ts", "lat", "lon", "speed", "heading", "alt", "acc",
                          "alarm_bits", "status_bits", "mileage", "backfill", "recv_ts",
                          "fuel")
            ),
        )
    )  # fmt: skip
    await conn.execute(sql.SQL("VACUUM ANALYZE {}.legacy_layout").format(sql.Identifier(s)))
    legacy = await _size(conn, s, "legacy_layout")
    t = time.perf_counter()
    track_hot = []
    for _ in range(10):
        t = time.perf_counter()
        tr = await store.track(reg.ids[0], day * DAY_MS, (day + 1) * DAY_MS)
        track_hot.append((time.perf_counter() - t) * 1000)
    day_wire = {
        n: pgcopy.POSITION_COLUMNS[n] for n in ("vehicle", "ts", "lat", "lon", "speed", "acc")
    }

    async def day_read() -> float:
        t = time.perf_counter()
        got = await store.positions_between(day * DAY_MS, (day + 1) * DAY_MS, day_wire)
        assert got["ts"].size == len(rows)
        return (time.perf_counter() - t) * 1000

    day_hot = [await day_read() for _ in range(3)]
    t = time.perf_counter()
    packed_days = await store.pack_closed_days(now)
    pack_s = time.perf_counter() - t
    assert packed_days == [day], packed_days
    await conn.execute(sql.SQL("VACUUM ANALYZE {}.positions_packed").format(sql.Identifier(s)))
    packed_b = await _size(conn, s, "positions_packed")
    track_packed = []
    for _ in range(10):
        t = time.perf_counter()
        tp = await store.track(reg.ids[0], day * DAY_MS, (day + 1) * DAY_MS)
        track_packed.append((time.perf_counter() - t) * 1000)
    assert all(np.array_equal(tr[k], tp[k], equal_nan=True) for k in tr)
    day_packed = [await day_read() for _ in range(3)]
    # The next day at 30 s: larger steps between reports, so more bytes per packed position.
    rows30 = _fleet_day(vehicles, (day + 1) * DAY_MS, 30_000, seed=12)
    for b in _split(rows30, 50_000):
        await store.write_positions(b)
    assert await store.pack_closed_days(now) == [day + 1]
    await conn.execute(sql.SQL("VACUUM ANALYZE {}.positions_packed").format(sql.Identifier(s)))
    packed30 = (await _size(conn, s, "positions_packed") - packed_b) / len(rows30)
    await conn.close()
    await store.close()
    n = len(rows)
    hot_b, packed_bpp, legacy_b = hot / n, packed_b / n, legacy / n
    ts_b = hot_b / TIMESCALE_RATIO
    hot_days = cfg.pack_after_days + 2  # today, the days before packing, and the margin

    def gb(ppd: int, bpp_old: float, bpp_hot: float | None = None) -> float:
        if bpp_hot is None:
            return round(FLEET * DAYS * ppd * bpp_old / 1e9, 1)
        old = FLEET * (DAYS - hot_days) * ppd * bpp_old
        return round((old + FLEET * hot_days * ppd * bpp_hot) / 1e9, 1)

    projection = {}
    for label, ppd, pbpp in (("every_10s", 8640, packed_bpp), ("every_30s", 2880, packed30)):
        projection[label] = {
            "positions_per_vehicle_day": ppd,
            "packed_bytes_per_position": round(pbpp, 2),
            "gb_all_hot_legacy_layout": gb(ppd, legacy_b),
            "gb_all_hot": gb(ppd, hot_b),
            "gb_packed_plain_postgresql": gb(ppd, pbpp, hot_b),
            "gb_timescaledb_compression_estimate": gb(ppd, ts_b, hot_b),
        }
    return {
        "positions": n,
        "vehicles": vehicles,
        "interval_s": 10,
        "measured_with": "pg_total_relation_size (table + indexes + TOAST), after VACUUM",
        "hot_bytes_per_position": round(hot_b, 1),
        "hot_legacy_layout_bytes_per_position": round(legacy_b, 1),
        "packed_bytes_per_position": round(packed_bpp, 2),
        "packed_bytes_per_position_30s": round(packed30, 2),
        "pack_seconds": round(pack_s, 2),
        "track_ms_hot": round(statistics.median(track_hot), 2),
        "track_ms_packed": round(statistics.median(track_packed), 2),
        # The whole fleet's day, six columns (what the board's figures and the rollup read).
        "fleet_day_read_ms_hot": round(statistics.median(day_hot), 1),
        "fleet_day_read_ms_packed": round(statistics.median(day_packed), 1),
        "timescaledb_compression_estimate": {
            "bytes_per_position": round(ts_b, 1),
            "ratio_assumed": TIMESCALE_RATIO,
            "of": "hot_bytes_per_position",
            "source": TIMESCALE_SOURCE,
            "measured": False,
        },
        "projection": {
            "vehicles": FLEET,
            "days": DAYS,
            "hot_days_kept": hot_days,
            "gb_is": "1e9 bytes",
            **projection,
        },
        "target_packed_bytes_per_position": TARGET_PACKED_B,
        "met": max(packed_bpp, packed30) <= TARGET_PACKED_B,
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
                db.executemany(
                    "INSERT INTO positions (vehicle, ts, lat, lon, speed, heading, alt, acc,"
                    " alarm_bits, status_bits, mileage, backfill, recv_ts)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    part,
                )
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
    foot_cfg = cfg.model_copy(update={"postgres_schema": f"bench_foot_{os.getpid()}"})
    try:
        footprint = await _footprint(foot_cfg, 24 if quick else FOOTPRINT_VEHICLES)
    finally:
        with psycopg.connect(cfg.postgres_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(foot_cfg.postgres_schema)
                )
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
        "footprint": footprint,
        "targets": {
            "postgres_rows_per_s": TARGET_ROWS_S,
            "ratio_to_copy": TARGET_RATIO,
            "track_ms": TARGET_TRACK_MS,
            "packed_bytes_per_position": TARGET_PACKED_B,
        },
        "met": {
            "postgres_rows_per_s": pg["writer_rows_per_s"] >= TARGET_ROWS_S,
            "ratio_to_copy": pg["ratio"] >= TARGET_RATIO,
            "track_ms": pg["track_ms_median"] < TARGET_TRACK_MS,
            "packed_bytes_per_position": footprint["met"],
        },
    }


def run(quick: bool = False, dsn: str | None = None) -> dict[str, Any]:
    """Run the store benchmark; returns one JSON-able dict (see the module docstring)."""
    return asyncio.run(_run(quick, dsn))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
