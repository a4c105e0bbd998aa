"""Packed days on the real PostgreSQL: every reader returns the same rows packed or not.

Random positions over several closed days (with duplicates, NaN, values finer than a
terminal sends, vehicles that stop reporting) are read through every positions reader —
the track, the daily figures, the rollup's day — before packing, after packing, after late
positions arrive for a packed day, and after that day is packed again.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import psycopg
import pytest

from fleet.batch import PositionBatch
from fleet.registry import Registry
from store.config import StoreConfig
from store.history import DAY_MS
from store.postgres import PostgresHistory
from store.rollup import rollup_store
from tests.store.conftest import SHARED_DSN, make_registry

pytestmark = pytest.mark.services

TZ = "Asia/Shanghai"
N_VEHICLES = 12


def _random_batch(rng: np.random.Generator, start_ms: int, days: int, n: int) -> PositionBatch:
    vehicle = rng.integers(0, N_VEHICLES - 2, n)  # the last two never report
    ts = start_ms + rng.integers(0, days * DAY_MS // 1000, n) * 1000
    fine = rng.random(n) < 0.1  # a JSON terminal with more digits than 1e-6 degree
    lat = np.round((30.3 + rng.random(n) * 0.3) * 1e6) / 1e6 + np.where(fine, 1e-9, 0)
    return PositionBatch.from_columns(
        vehicle=vehicle,
        ts=ts,
        lat=lat,
        lon=np.round((106.5 + rng.random(n) * 0.3) * 1e6) / 1e6,
        speed=np.round(rng.random(n) * 900) / 10,
        heading=rng.integers(0, 360, n),
        alt=rng.integers(100, 900, n),
        acc=rng.random(n) < 0.6,
        alarm_bits=rng.integers(0, 1 << 32, n).astype(np.uint32),
        status_bits=rng.integers(0, 1 << 32, n).astype(np.uint32),
        mileage=np.where(rng.random(n) < 0.2, np.nan, np.round(rng.random(n) * 1e6) / 10),
        backfill=rng.random(n) < 0.05,
        recv_ts=ts + rng.integers(0, 60_000, n),
        fuel=np.where(rng.random(n) < 0.5, np.nan, np.round(rng.random(n) * 800) / 10),
    )


async def _read_all(store: PostgresHistory, reg: Registry, first_day: int, days: int) -> Any:
    """What every positions reader returns over the days (bytes, so NaN compares)."""
    lo, hi = (first_day - 1) * DAY_MS, (first_day + days + 1) * DAY_MS
    tracks = {}
    for vid in reg.ids:
        tr = await store.track(vid, lo, hi)
        tracks[vid] = {k: v.tobytes() for k, v in tr.items()}
        part = await store.track(vid, lo + DAY_MS + 3_600_123, hi - DAY_MS - 7_200_456)
        tracks[vid + "/part"] = {k: v.tobytes() for k, v in part.items()}
    rollup = rollup_store(store)
    stats, rolled = {}, {}
    for k in range(-1, days + 1):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=first_day + k)
        stats[day] = await store.daily_stats(day, TZ)
        stats[(day, "qx")] = await store.daily_stats(day, TZ, ["qx"])
        d = await rollup.day_positions((first_day + k) * DAY_MS, (first_day + k + 1) * DAY_MS)
        rolled[day] = {n: v.tobytes() for n, v in d.items()}
    return tracks, stats, rolled


async def _count(cfg: StoreConfig, table: str) -> int:
    async with await psycopg.AsyncConnection.connect(SHARED_DSN) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {cfg.postgres_schema}.{table}")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_every_reader_returns_the_same_rows_packed_or_not(pg_config: StoreConfig) -> None:
    cfg = pg_config.model_copy(
        update={"pack_after_days": 2, "pack_max_days_per_run": 10, "pack_vehicles_per_txn": 5}
    )
    reg = make_registry(N_VEHICLES)
    store = PostgresHistory(cfg)
    await store.open(reg)
    rng = np.random.default_rng(20261202)
    now = time.time_ns() // 1_000_000
    first_day = now // DAY_MS - 8
    days = 4
    batch = _random_batch(rng, first_day * DAY_MS, days, 6000)
    await store.write_positions(batch)
    await store.write_positions(batch.take(np.arange(0, 6000, 7)))  # a redelivery
    before = await _read_all(store, reg, first_day, days)
    assert sum(len(t["ts"]) for k, t in before[0].items() if "/" not in k) > 5000

    removed = await store.apply_retention(now)
    assert removed["days_packed"] == days
    names = await store.partitions()
    for d in range(first_day, first_day + days):
        assert f"positions_p{(dt.date(1970, 1, 1) + dt.timedelta(days=d)):%Y%m%d}" not in names
    assert await _count(cfg, "positions_packed") == days * (N_VEHICLES - 2)
    assert await _read_all(store, reg, first_day, days) == before

    # Late positions for a packed day go to positions_late: a new one, and a redelivery of
    # a packed one with other values (the first stored wins, as ON CONFLICT DO NOTHING).
    known = batch.take(np.array([0]))
    d0 = int(known.ts[0]) // DAY_MS
    fresh = _random_batch(rng, d0 * DAY_MS, 1, 50)
    changed = PositionBatch.from_columns(
        vehicle=known.vehicle, ts=known.ts, lat=known.lat + 0.5, lon=known.lon
    )
    other = PostgresHistory(cfg)  # another node's writer, which never saw the mark
    await other.open(reg)
    await other.write_positions(PositionBatch.concat([fresh, changed]))
    assert await _count(cfg, "positions_late") >= 50
    vid = reg.ids[int(known.vehicle[0])]
    tr = await store.track(vid, d0 * DAY_MS, (d0 + 1) * DAY_MS)
    assert float(tr["lat"][tr["ts"] == known.ts[0]][0]) == float(known.lat[0])
    expected = await _read_all(store, reg, first_day, days)
    assert expected != before
    # ...and the next run packs them into the day's chunks; readers do not see a change.
    removed = await store.apply_retention(now)
    assert removed["days_packed"] == 1
    assert await _count(cfg, "positions_late") == 0
    assert await _read_all(store, reg, first_day, days) == expected
    assert await other.apply_retention(now, dry_run=True) == dict.fromkeys(removed, 0)

    # Retention takes packed days like partitions: whole days past positions_retention_days.
    later = (first_day + 2 + cfg.positions_retention_days) * DAY_MS + 1
    removed = await store.apply_retention(later)
    assert removed["packed_vehicle_days"] == 2 * (N_VEHICLES - 2)
    assert await _count(cfg, "positions_packed") == (days - 2) * (N_VEHICLES - 2)
    await other.close()
    await store.close()


async def test_packing_off_and_recent_days_stay_hot(pg_config: StoreConfig) -> None:
    reg = make_registry(N_VEHICLES)
    now = time.time_ns() // 1_000_000
    batch = _random_batch(np.random.default_rng(1), (now // DAY_MS - 5) * DAY_MS, 5, 500)
    off = PostgresHistory(pg_config.model_copy(update={"pack_after_days": 0}))
    await off.open(reg)
    await off.write_positions(batch)
    assert (await off.apply_retention(now))["days_packed"] == 0
    await off.close()
    on = PostgresHistory(pg_config.model_copy(update={"pack_after_days": 3}))
    await on.open(reg)
    # Days ended more than 3 days and an hour ago: day -5 (and -4 once it is 01:00 UTC).
    packed_days = await on.pack_closed_days(now)
    assert packed_days[0] == now // DAY_MS - 5 and len(packed_days) <= 2
    await on.close()


async def test_packing_under_concurrent_late_writes_and_reads(pg_config: StoreConfig) -> None:
    """A packer, another node writing late positions of the days being packed, and a reader,
    all at once: no position is ever missing from a read, none is doubled, and at the end
    everything written is there exactly once."""
    import asyncio

    cfg = pg_config.model_copy(
        update={"pack_after_days": 2, "pack_max_days_per_run": 10, "pack_vehicles_per_txn": 2}
    )
    reg = make_registry(N_VEHICLES)
    now = time.time_ns() // 1_000_000
    first_day = now // DAY_MS - 7
    rng = np.random.default_rng(7)
    # Unique times on a 1 s grid, so "everything written" is simply every row.
    n = 12_000
    slots = rng.choice(3 * 86_400, size=n, replace=False)
    batch = _random_batch(rng, first_day * DAY_MS, 3, n)
    batch = PositionBatch.from_columns(
        vehicle=batch.vehicle, ts=first_day * DAY_MS + slots * 1000, lat=batch.lat, lon=batch.lon
    )
    seed, late = batch.take(np.arange(0, 8000)), batch.take(np.arange(8000, n))
    packer, writer, reader = (PostgresHistory(cfg) for _ in range(3))
    for s in (packer, writer, reader):
        await s.open(reg)
    await writer.write_positions(seed)
    lo, hi = first_day * DAY_MS, (first_day + 3) * DAY_MS
    done = asyncio.Event()
    written = [0]

    async def total() -> int:
        raw = await reader.positions_between(lo, hi, {"vehicle": ">i4", "ts": ">i8"})
        keys = raw["vehicle"].astype(np.int64) << 40 | raw["ts"]
        assert np.unique(keys).size == keys.size  # never doubled
        return int(keys.size)

    async def write_late() -> None:
        for part in np.array_split(np.arange(len(late)), 20):
            await writer.write_positions(late.take(part))
            written[0] += part.size
            await asyncio.sleep(0.005)

    async def read() -> None:
        while not done.is_set():
            floor = 8000 + written[0]  # rows committed before this read began
            assert await total() >= floor
            await asyncio.sleep(0)

    async def pack() -> None:
        await packer.pack_closed_days(now)

    reading = asyncio.create_task(read())
    await asyncio.gather(pack(), write_late())
    done.set()
    await reading
    await packer.pack_closed_days(now)  # the late rows that came during the first run
    assert await total() == n
    raw = await reader.positions_between(lo, hi, {"vehicle": ">i4", "ts": ">i8", "lat": ">f8"})
    order = np.lexsort((batch.ts, reader._keys[batch.vehicle]))
    assert raw["ts"].tobytes() == (batch.ts[order] * 1000 - 946_684_800_000_000).tobytes()
    assert raw["lat"].tobytes() == batch.lat[order].tobytes()
    assert await _count(cfg, "positions_late") == 0
    assert not any(
        p.endswith(f"{(dt.date(1970, 1, 1) + dt.timedelta(days=first_day)):%Y%m%d}")
        for p in await reader.partitions()
    )
    for s in (packer, writer, reader):
        await s.close()


async def test_a_database_of_an_earlier_version_works_and_packs(pg_config: StoreConfig) -> None:
    """Tables made before the narrow column order (vehicle first) and before packing."""
    s = pg_config.postgres_schema
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {s}")
        conn.execute(
            f"CREATE TABLE {s}.positions (vehicle int4 NOT NULL, ts timestamptz NOT NULL,"
            " lat float8 NOT NULL, lon float8 NOT NULL, speed float4 NOT NULL,"
            " heading int2 NOT NULL, alt int2 NOT NULL, acc bool NOT NULL,"
            " alarm_bits int8 NOT NULL, status_bits int8 NOT NULL, mileage float4 NOT NULL,"
            " backfill bool NOT NULL, recv_ts timestamptz NOT NULL, PRIMARY KEY (vehicle, ts))"
            " PARTITION BY RANGE (ts)"
        )
    reg = make_registry(N_VEHICLES)
    store = PostgresHistory(pg_config.model_copy(update={"pack_max_days_per_run": 10}))
    await store.open(reg)
    now = time.time_ns() // 1_000_000
    first_day = now // DAY_MS - 6
    await store.write_positions(
        _random_batch(np.random.default_rng(5), first_day * DAY_MS, 2, 3000)
    )
    before = await _read_all(store, reg, first_day, 2)
    assert (await store.apply_retention(now))["days_packed"] == 2
    assert await _read_all(store, reg, first_day, 2) == before
    # A late row of a packed day goes to positions_late (made LIKE the old table).
    late = _random_batch(np.random.default_rng(6), first_day * DAY_MS, 1, 10)
    assert await store.write_positions(late) == 10
    assert await _count(pg_config, "positions_late") == 10
    await store.close()


async def test_a_packed_row_wins_over_a_hot_one_and_repacking_keeps_it(
    pg_config: StoreConfig,
) -> None:
    """The same (vehicle, ts) packed and in a partition made again for the packed day (only
    a writer that ignored the mark could do that): the packed row — stored first — is the
    one every reader returns, and the next run packs the other rows of the partition."""
    reg = make_registry(N_VEHICLES)
    store = PostgresHistory(pg_config)
    await store.open(reg)
    now = time.time_ns() // 1_000_000
    day = now // DAY_MS - 5
    batch = _random_batch(np.random.default_rng(8), day * DAY_MS, 1, 500)
    await store.write_positions(batch)
    assert await store.pack_closed_days(now) == [day]
    before = await _read_all(store, reg, day, 1)
    key = int(store._keys[int(batch.vehicle[0])])
    ts = dt.datetime.fromtimestamp(int(batch.ts[0]) / 1000, dt.UTC)
    part = f"positions_p{(dt.date(1970, 1, 1) + dt.timedelta(days=day)):%Y%m%d}"
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        s = pg_config.postgres_schema
        lo = dt.datetime.fromtimestamp(day * 86_400, dt.UTC).isoformat()
        hi = dt.datetime.fromtimestamp((day + 1) * 86_400, dt.UTC).isoformat()
        conn.execute(
            f"CREATE TABLE {s}.{part} PARTITION OF {s}.positions"
            f" FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )
        conn.execute(
            f"INSERT INTO {s}.positions (vehicle, ts, lat, lon, speed, heading, alt, acc,"
            " alarm_bits, status_bits, mileage, backfill, recv_ts) VALUES"
            " (%s, %s, 1.5, 2.5, 0, 0, 0, false, 0, 0, 'NaN', false, %s)",
            (key, ts, ts),
        )
    assert await _read_all(store, reg, day, 1) == before
    assert await store.pack_closed_days(now) == [day]
    assert part not in await store.partitions()
    assert await _read_all(store, reg, day, 1) == before
    await store.close()
