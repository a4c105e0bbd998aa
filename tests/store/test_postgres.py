"""What only the PostgreSQL store does: partitions, persistent keys, the TimescaleDB switch."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import psycopg
import pytest

from fleet.batch import PositionBatch
from store import timescale
from store.config import StoreConfig
from store.history import DAY_MS
from store.postgres import PostgresHistory
from tests.store.conftest import SHARED_DSN, make_registry
from tests.store.test_history import drive

pytestmark = pytest.mark.services


def _day(ms: int) -> str:
    return "positions_p" + dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y%m%d")


async def test_partitions_ahead_on_demand_and_retention(pg_config: StoreConfig) -> None:
    # Packing off: retention runs at a "now" 185 days on, when today would be packed too
    # (the packed path: tests/store/test_packed_pg.py).
    store = PostgresHistory(pg_config.model_copy(update={"pack_after_days": 0}))
    await store.open(make_registry())
    assert not store.timescale  # no TimescaleDB on this machine: the native path
    now = time.time_ns() // 1_000_000
    names = await store.partitions()
    for k in range(-1, pg_config.partitions_ahead_days + 1):
        assert _day(now + k * DAY_MS) in names
    late = now - 40 * DAY_MS  # a terminal's blind-area upload, weeks late
    await store.write_positions(drive(1, late, 5))
    assert _day(late) in await store.partitions()
    cut_now = late + pg_config.positions_retention_days * DAY_MS + 2 * DAY_MS
    removed = await store.apply_retention(cut_now)
    assert removed["position_partitions"] >= 1
    names = await store.partitions()
    assert _day(late) not in names and _day(now) in names
    assert (await store.track("veh001", 0, now + DAY_MS))["ts"].size == 0
    # Writing into a day whose partition was dropped by another node recreates it.
    await store.write_positions(drive(1, now, 3))
    assert (await store.track("veh001", 0, now + DAY_MS))["ts"].size == 3
    await store.close()


async def test_vehicle_keys_survive_a_new_registry_order(pg_config: StoreConfig) -> None:
    store = PostgresHistory(pg_config)
    await store.open(make_registry(10))
    t0 = time.time_ns() // 1_000_000 - 3_600_000
    await store.write_positions(drive(2, t0, 7))  # veh002
    await store.close()
    reordered = make_registry(12, reverse=True)  # veh002 is now dense index 9
    store = PostgresHistory(pg_config)
    await store.open(reordered)
    assert (await store.track("veh002", t0, t0 + DAY_MS))["ts"].size == 7
    assert (await store.track("veh009", t0, t0 + DAY_MS))["ts"].size == 0
    b = drive(reordered.by_id("veh002") or 0, t0, 7)
    assert await store.write_positions(b) == 0  # the same positions: nothing new
    with psycopg.connect(SHARED_DSN) as conn:
        keys = conn.execute(
            f"SELECT id, key FROM {pg_config.postgres_schema}.vehicles ORDER BY key"
        ).fetchall()
    assert [k for _, k in keys] == list(range(1, 13))
    await store.close()


async def test_redelivery_of_a_large_batch_takes_the_staging_path(pg_config: StoreConfig) -> None:
    store = PostgresHistory(pg_config)
    reg = make_registry(50)
    await store.open(reg)
    t0 = time.time_ns() // 1_000_000 - 2 * 3_600_000
    n = 50_000
    b = PositionBatch.from_columns(
        vehicle=np.arange(n) % 50,
        ts=t0 + (np.arange(n) // 50) * 1000,
        lat=np.full(n, 30.5),
        lon=np.full(n, 106.6),
    )
    assert await store.write_positions(b) == n
    assert await store.write_positions(b.take(np.arange(n - 1, -1, -1))) == 0
    with psycopg.connect(SHARED_DSN) as conn:
        count = conn.execute(
            f"SELECT count(*) FROM {pg_config.postgres_schema}.positions"
        ).fetchone()
    assert count == (n,)
    await store.close()


def test_timescale_statements_name_the_schema() -> None:
    cfg = StoreConfig(postgres_schema="fw_x", positions_retention_days=200)
    text = [s.as_string() for s in timescale.setup_statements(cfg)]
    assert any("create_hypertable('fw_x.positions'" in t for t in text)
    assert any("add_retention_policy('fw_x.positions', '200 days'" in t for t in text)
    assert any("compress_segmentby = 'vehicle'" in t for t in text)


async def test_partition_dropped_by_another_node_is_recreated(pg_config: StoreConfig) -> None:
    a, b = PostgresHistory(pg_config), PostgresHistory(pg_config)
    await a.open(make_registry())
    await b.open(make_registry())
    old = time.time_ns() // 1_000_000 - 300 * DAY_MS
    await a.write_positions(drive(1, old, 3))  # a now believes in that day's partition
    await b.apply_retention(time.time_ns() // 1_000_000)  # b drops it
    assert _day(old) not in await a.partitions()
    assert await a.write_positions(drive(1, old, 4)) == 4
    assert (await a.track("veh001", old, old + DAY_MS))["ts"].size == 4
    await a.close()
    await b.close()


async def test_a_date_in_2098_never_creates_a_partition(pg_config: StoreConfig) -> None:
    """Issue 12: a bad date is refused loudly (logged, counted, kept as a dead letter)."""
    store = PostgresHistory(pg_config)
    await store.open(make_registry())
    now = time.time_ns() // 1_000_000
    y2098 = int(dt.datetime(2098, 3, 1, tzinfo=dt.UTC).timestamp() * 1000)
    bad = PositionBatch.concat([drive(1, now, 2), drive(2, y2098, 1), drive(3, 86_400_000, 1)])
    assert await store.write_positions(bad) == 2
    names = await store.partitions()
    assert _day(y2098) not in names and _day(86_400_000) not in names
    assert all("2000" <= n[11:] <= "2100" for n in names)
    assert store.refused_rows == 2
    assert (await store.track("veh001", 0, now + DAY_MS))["ts"].size == 2
    with psycopg.connect(SHARED_DSN) as conn:
        rows = conn.execute(
            f"SELECT reason, terminal, detail FROM {pg_config.postgres_schema}.dead_letters"
            " ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == ["outside_partition_window"] * 2
    assert "veh002" in rows[0][2] and rows[0][1] == make_registry().terminals[2]
    await store.close()
