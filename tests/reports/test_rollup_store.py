"""The rollup written from history on SQLite and PostgreSQL: incremental, idempotent,
rebuildable, and the same figures as the board's daily stats."""

from __future__ import annotations

import pytest

from reports.daily import build_day
from store.history import day_bounds_ms
from tests.reports.conftest import DAYS, TZ, Seeded

pytestmark = pytest.mark.services


async def _build(s: Seeded, day, now: int) -> dict:  # type: ignore[no-untyped-def]
    return await build_day(s.history, s.rollup, s.registry, day, TZ, now_ms=now, orders=s.orders)


async def test_day_figures(seeded: Seeded) -> None:
    s = seeded
    out = await _build(s, DAYS[0], s.now)
    assert out["closed"] and out["vehicles"] == 4
    rows = {
        r["vehicle_id"]: r for r in await s.rollup.vehicle_days("real", "2025-11-24", "2025-11-24")
    }
    assert set(rows) == set(s.registry.ids)  # the idle vehicle has its row too
    v1 = rows["V1"]
    assert v1["trips"] == 2
    # 59 + 29 segments of 100 m, and the 345 m between the first trip's parking place and
    # the second trip's first (moving) point: a segment with a moving end counts
    assert v1["km"] == pytest.approx(88 * 0.10008 + 0.345, abs=0.002)
    assert v1["driving_s"] == pytest.approx(900.0)  # 90 segments from a moving point
    # parked with ACC on: 2 × 59 segments of 10 s (the 4 h silence between counts nothing)
    assert v1["idle_s"] == pytest.approx(1180.0)
    assert v1["online_s"] == pytest.approx(900.0 + 1180.0)
    assert v1["trips_covered"] == 1 and v1["orders"] == 1  # the 09:00 trip only
    assert v1["span_s"] == 86_400.0
    idle = [r for r in rows.values() if r["trips"] == 0]
    assert len(idle) == 1 and idle[0]["km"] == 0.0
    board = await s.history.daily_stats(DAYS[0], TZ)
    for b in board["vehicles"]:
        assert rows[b["vehicle"]]["trips"] == b["trips"]
        assert rows[b["vehicle"]]["km"] == pytest.approx(b["mileage_km"], abs=1e-3)
        assert rows[b["vehicle"]]["alarms"] == sum(b["alarms"].values())


async def test_handling_times(seeded: Seeded) -> None:
    s = seeded
    await _build(s, DAYS[0], s.now)
    items = {
        a["alarm_id"]: a for a in await s.rollup.alarm_days("real", "2025-11-24", "2025-11-24")
    }
    a0, a1 = items[s.alarms[0].id], items[s.alarms[1].id]
    assert (a0["ack_s"], a0["handle_s"]) == (240.0, 720.0)
    assert (a1["ack_s"], a1["handle_s"]) == (900.0, 900.0)
    assert sum(1 for a in items.values() if a["ack_s"] is None) == len(items) - 2


async def test_incremental_then_closed_then_rebuilt(seeded: Seeded) -> None:
    s = seeded
    day = DAYS[1]
    start, end = day_bounds_ms(day, TZ)
    noon = start + 12 * 3_600_000
    part = await _build(s, day, noon)
    assert not part["closed"]
    morning = await s.rollup.vehicle_days("real", day.isoformat(), day.isoformat())
    assert all(r["span_s"] == 43_200.0 and not r["closed"] for r in morning)
    assert {r["vehicle_id"]: r["trips"] for r in morning if r["trips"]} == {
        v: 1 for v in ("V1", "V2", "V4")
    }
    await _build(s, day, s.now)
    closed = await s.rollup.vehicle_days("real", day.isoformat(), day.isoformat())
    assert len(closed) == 4  # one row per vehicle-day, not one per write
    assert all(r["closed"] and r["span_s"] == 86_400.0 for r in closed)
    alarms = await s.rollup.alarm_days("real", day.isoformat(), day.isoformat())
    # rebuilding the day from history gives the same rows (updated_at is the day's end)
    await _build(s, day, s.now + 7 * 86_400_000)
    assert await s.rollup.vehicle_days("real", day.isoformat(), day.isoformat()) == closed
    assert await s.rollup.alarm_days("real", day.isoformat(), day.isoformat()) == alarms
    assert end == closed[0]["updated_at"]
