"""A small history on SQLite or the real PostgreSQL, written through the store's own API:
three days of trips for four vehicles, alarm episodes with acknowledgements, two orders."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from fleet.batch import PositionBatch
from fleet.registry import Registry
from rules.events import AlarmEvent, episode_id
from store.history import day_bounds_ms
from store.postgres import PostgresHistory
from store.rollup import RollupStore, rollup_store
from store.sqlite import SQLiteHistory
from tests.web.conftest import web_config

TZ = "Asia/Shanghai"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DAYS = [dt.date(2025, 11, 24), dt.date(2025, 11, 25), dt.date(2025, 11, 26)]


def drive(v: int, start: int, n: int, step_ms: int = 10_000, lat0: float = 30.45) -> PositionBatch:
    """Vehicle ``v`` driving north at 36 km/h (100 m per 10 s), then parked 10 min with ACC on."""
    i = np.arange(n + 60)
    moving = i < n
    lat = lat0 + np.minimum(i, n - 1) * 0.0009
    return PositionBatch.from_columns(
        vehicle=np.full(i.size, v),
        ts=start + i * step_ms,
        lat=lat,
        lon=np.full(i.size, 106.63),
        speed=np.where(moving, 36.0, 0.0),
        acc=np.ones(i.size, bool),
    )


def alarm(reg: Registry, v: int, kind: str, started: int, severity: str = "warning") -> AlarmEvent:
    vid = reg.ids[v]
    return AlarmEvent(
        id=episode_id(vid, kind, started),
        vehicle=v,
        vehicle_id=vid,
        kind=kind,
        action="close",
        started_at=started,
        ended_at=started + 60_000,
        ts=started + 60_000,
        lat=30.45,
        lon=106.63,
        severity=severity,  # type: ignore[arg-type]
    )


@dataclass
class Seeded:
    history: Any
    rollup: RollupStore
    registry: Registry
    orders: list[dict[str, Any]]
    alarms: list[AlarmEvent]
    now: int  # after the last day


async def seed(history: Any, reg: Registry) -> Seeded:
    alarms: list[AlarmEvent] = []
    orders: list[dict[str, Any]] = []
    for d, day in enumerate(DAYS):
        start, _ = day_bounds_ms(day, TZ)
        for v in range(len(reg)):
            if (v + d) % 4 == 3:
                continue  # one vehicle idle each day
            # two trips: 09:00 (60 points, 10 min) and 14:00 (30 points)
            await history.write_positions(drive(v, start + 9 * 3_600_000, 60))
            await history.write_positions(drive(v, start + 14 * 3_600_000, 30, lat0=30.5))
            alarms.append(alarm(reg, v, "speeding", start + 9 * 3_600_000 + 120_000))
            if v % 2 == 0:
                alarms.append(
                    alarm(reg, v, "off_hours", start + 14 * 3_600_000 + 5_000, "critical")
                )
        orders.append(
            {
                "id": f"o{d}",
                "org": reg.org_of(0),
                "vehicle": reg.ids[0],
                "type": "local",
                "start": start + 8 * 3_600_000,
                "end": start + 10 * 3_600_000,
                "approved": True,
            }
        )
    await history.write_alarm_events(alarms)
    # acknowledgements: the first speeding alarm after 4 min, handled after 12 min
    a0 = alarms[0]
    await history.ack_alarm(a0.id, "admin", "seen", False, at_ms=a0.started_at + 240_000)
    await history.ack_alarm(
        a0.id, "admin", "done", True, at_ms=a0.started_at + 720_000, action="close"
    )
    a1 = alarms[1]
    await history.ack_alarm(a1.id, "admin", "ok", True, at_ms=a1.started_at + 900_000)
    rollup = rollup_store(history)
    await rollup.open()
    _, end = day_bounds_ms(DAYS[-1], TZ)
    return Seeded(history, rollup, reg, orders, alarms, end + 3_600_000)


@pytest.fixture(params=["sqlite", "postgres"])
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seeded]:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
        schema = f"t_rollup_{request.getfixturevalue('unique')}"
        store: dict[str, Any] = {
            "kind": "postgres",
            "postgres_dsn": PG_DSN,
            "postgres_schema": schema,
        }
    else:
        schema = ""
        store = {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")}
    cfg = web_config(tmp_path, store=store)
    reg = Registry.from_config(cfg)
    history: Any = PostgresHistory(cfg.store) if schema else SQLiteHistory(cfg.store)
    await history.open(reg)
    try:
        yield await seed(history, reg)
    finally:
        await history.close()
        if schema:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
