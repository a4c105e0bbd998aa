"""PostgreSQL outage: positions spool to disk, in order, and reach the database when it returns.

Runs against a private PostgreSQL cluster that the test stops and starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from fleet.deadletter import DeadLetter
from fleet.errors import ServiceUnavailable
from fleet.events import AlarmEvent
from store.config import StoreConfig
from store.postgres import PostgresHistory
from store.spool import SpoolingWriter
from tests.private_services import PrivatePostgres
from tests.store.conftest import make_registry
from tests.store.test_history import drive

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM fw.{table}").fetchone()
    return int(row[0]) if row else 0


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_outage_spools_then_replays_in_order(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    cfg = StoreConfig(
        kind="postgres",
        postgres_dsn=pg.dsn,
        postgres_schema="fw",
        connect_timeout_s=1,
        retry_interval_s=5,
        spool_max_rows=1000,
    )
    reg = make_registry(10)
    clock = FakeClock()
    writer = SpoolingWriter(PostgresHistory(cfg), cfg, spool_dir=tmp_path / "spool", clock=clock)
    await writer.open(reg)
    t0 = time.time_ns() // 1_000_000 - 3_600_000
    assert await writer.write_positions(drive(0, t0, 100)) == 100

    pg.stop()
    assert await writer.write_positions(drive(0, t0 + 1_000_000, 100)) == 0  # spooled
    assert writer.degraded and writer.spooled_rows == 100
    vid = reg.ids[3]
    await writer.write_alarm_events(
        [
            AlarmEvent(
                id=f"{vid}:speeding:{t0}",
                vehicle=3,
                vehicle_id=vid,
                kind="speeding",
                action="open",
                started_at=t0,
                ts=t0,
                lat=30.5,
                lon=106.6,
            )
        ]
    )
    await writer.write_dead_letters(
        [DeadLetter(t0, "fleet/x/position", "x", "invalid_json", "", b"\xff")]
    )
    await writer.write_positions(drive(1, t0, 300))
    assert writer.spooled_rows == 400 and writer.status()["spooled_files"] == 4
    with pytest.raises(ServiceUnavailable):  # bounded: refuse, so the broker keeps it
        await writer.write_positions(drive(2, t0, 700))
    assert writer.spool_full_refusals == 1 and writer.spooled_rows == 400
    with pytest.raises(ServiceUnavailable):
        await writer.track(reg.ids[0], t0, t0 + 10**8)

    pg.start()
    clock.t = 1.0  # within retry_interval_s: the database is not tried yet
    await writer.write_positions(drive(2, t0, 10))
    assert writer.degraded and writer.spooled_rows == 410
    clock.t = 10.0
    assert await writer.write_positions(drive(3, t0, 10)) == 10  # replay first, then direct
    assert not writer.degraded and writer.spooled_rows == 0 and writer.replayed_rows == 410
    assert not list((tmp_path / "spool").iterdir())
    assert _count(pg.dsn, "positions") == 100 + 100 + 300 + 10 + 10
    assert _count(pg.dsn, "alarms") == 1 and _count(pg.dsn, "dead_letters") == 1
    tr = await writer.track(reg.ids[0], t0, t0 + 10**8)
    assert tr["ts"].size == 200
    await writer.close()


async def test_spool_left_by_a_crash_replays_at_next_start(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    cfg = StoreConfig(
        kind="postgres", postgres_dsn=pg.dsn, postgres_schema="fw", connect_timeout_s=1
    )
    pg.stop()
    writer = SpoolingWriter(PostgresHistory(cfg), cfg, spool_dir=tmp_path)
    await writer.open(make_registry(10))  # the database is down at start-up
    assert writer.degraded
    t0 = time.time_ns() // 1_000_000 - 3_600_000
    await writer.write_positions(drive(7, t0, 50))
    await writer.close()  # the process goes away with a full spool

    pg.start()
    reordered = make_registry(10, reverse=True)  # registry order changed meanwhile
    writer = SpoolingWriter(PostgresHistory(cfg), cfg, spool_dir=tmp_path)
    await writer.open(reordered)
    assert not writer.degraded and writer.replayed_rows == 50
    tr = await writer.track("veh007", t0, t0 + 10**8)
    np.testing.assert_array_equal(tr["ts"], t0 + np.arange(50) * 10_000)
    await writer.close()
