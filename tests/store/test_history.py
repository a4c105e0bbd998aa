"""Behaviour every history store shares, run against SQLite and the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from fleet.batch import PositionBatch
from fleet.events import Action, AlarmEvent, episode_id
from fleet.registry import Registry
from store.history import DAY_MS, AlarmQuery, DeadLetter, HistoryStore, day_bounds_ms

pytestmark = pytest.mark.services

# 2025-11-25 00:00 Asia/Shanghai = 2025-11-24T16:00Z
DAY = dt.date(2025, 11, 25)
DAY_START, _ = day_bounds_ms(DAY, "Asia/Shanghai")


def drive(
    vehicle: int, start_ms: int, n: int, step_ms: int = 10_000, lat0: float = 30.45
) -> PositionBatch:
    """A vehicle driving north at 36 km/h (100 m per 10 s)."""
    i = np.arange(n)
    return PositionBatch.from_columns(
        vehicle=np.full(n, vehicle),
        ts=start_ms + i * step_ms,
        lat=lat0 + i * 0.0009,
        lon=np.full(n, 106.63),
        speed=np.full(n, 36.0),
        heading=np.zeros(n),
        acc=np.ones(n, bool),
        alarm_bits=np.full(n, 1 << 31, dtype=np.uint32),
        mileage=np.where(i % 2 == 0, np.nan, 1000.0 + i * 0.1),
    )


def event(
    reg: Registry, v: int, kind: str, started: int, action: Action, ts: int, **kw: Any
) -> AlarmEvent:
    vid = reg.ids[v]
    return AlarmEvent(
        id=episode_id(vid, kind, started),
        vehicle=v,
        vehicle_id=vid,
        kind=kind,
        action=action,
        started_at=started,
        ts=ts,
        lat=30.5,
        lon=106.6,
        **kw,
    )


async def test_is_a_history_store(history: HistoryStore) -> None:
    assert isinstance(history, HistoryStore)


async def test_redelivery_stores_nothing_twice(history: HistoryStore, registry: Registry) -> None:
    b = PositionBatch.concat([drive(v, DAY_START + 3_600_000, 200) for v in range(5)])
    assert await history.write_positions(b) == 1000
    assert await history.write_positions(b) == 0
    # Overlapping redelivery: half old, half new, and a duplicate inside the batch.
    more = PositionBatch.concat(
        [
            b.take(np.arange(500, 1000)),
            drive(0, DAY_START + 7_200_000, 100),
            drive(0, DAY_START + 7_200_000, 1),
        ]
    )
    assert await history.write_positions(more) == 100
    tr = await history.track(registry.ids[0], DAY_START, DAY_START + DAY_MS)
    assert tr["ts"].size == 300
    assert np.all(np.diff(tr["ts"]) > 0)


async def test_track_columns_and_simplification(history: HistoryStore, registry: Registry) -> None:
    await history.write_positions(drive(3, DAY_START, 500))
    t0 = DAY_START + 10_000 * 100
    tr = await history.track(registry.ids[3], t0, t0 + 10_000 * 50)
    assert tr["ts"][0] == t0 and tr["ts"].size == 50
    assert tr["lat"].dtype == np.float64 and tr["speed"].dtype == np.float32
    assert tr["alarm_bits"].dtype == np.uint32 and tr["alarm_bits"][0] == 1 << 31
    assert bool(tr["acc"].all()) and tr["heading"].dtype == np.int16
    assert np.isnan(tr["mileage"][0]) and tr["mileage"][1] == np.float32(1000.0 + 101 * 0.1)
    straight = await history.track(registry.ids[3], DAY_START, DAY_START + DAY_MS, simplify_m=5)
    assert straight["ts"].tolist() == [DAY_START, DAY_START + 499 * 10_000]
    assert (await history.track("no-such-vehicle", 0, DAY_START + DAY_MS))["ts"].size == 0


async def test_tracks_of_several_vehicles_equal_each_track(
    history: HistoryStore, registry: Registry
) -> None:
    rng = np.random.default_rng(7)
    parts = [
        drive(v, DAY_START + int(rng.integers(0, 3_600_000)), int(rng.integers(1, 120)))
        for v in range(4)  # vehicle 4 has no positions
    ]
    await history.write_positions(PositionBatch.concat(parts))
    ids = [registry.ids[v] for v in range(5)] + ["no-such-vehicle"]
    lo, hi = DAY_START + 1_800_000, DAY_START + 4_000_000
    got = await history.tracks(ids, lo, hi)
    for vid in ids:
        one = await history.track(vid, lo, hi)
        if one["ts"].size == 0:
            assert vid not in got
            continue
        assert set(got[vid]) == set(one)
        for name, col in one.items():
            np.testing.assert_array_equal(got[vid][name], col, err_msg=f"{vid} {name}")
    assert await history.tracks([], lo, hi) == {}
    assert await history.tracks(ids, DAY_START - DAY_MS, DAY_START) == {}  # nothing then


async def test_alarm_episode_upsert_and_ack(history: HistoryStore, registry: Registry) -> None:
    s = DAY_START + 1000
    opened = event(registry, 1, "speeding", s, "open", s, detail={"peak_kmh": 95})
    updated = event(registry, 1, "speeding", s, "update", s + 5000, detail={"peak_kmh": 120})
    closed = event(
        registry, 1, "speeding", s, "close", s + 9000, ended_at=s + 9000, detail={"peak_kmh": 120}
    )
    other = event(registry, 2, "off_hours", s + 50, "open", s + 50)
    await history.write_alarm_events([opened, other])
    await history.write_alarm_events([updated, closed])
    await history.write_alarm_events([updated])  # a late replay does not reopen it
    rows = await history.alarms(AlarmQuery(kinds=["speeding"]))
    assert len(rows) == 1
    a = rows[0]
    assert (a["state"], a["ended_at"], a["detail"]) == ("closed", s + 9000, {"peak_kmh": 120})
    assert a["plate"] == registry.plates[1] and a["org"] == registry.org_of(1)
    assert a["ack"] is None
    # Covered after the fact: an update after the close lands, the episode stays closed.
    covered = event(
        registry, 1, "speeding", s, "update", s + 20_000, covered=True, detail={"peak_kmh": 120}
    )
    await history.write_alarm_events([covered])
    assert await history.ack_alarm(a["id"], "zhang", "called the driver", True, at_ms=s + 60_000)
    assert not await history.ack_alarm("nope", "zhang", "", False)
    a = (await history.alarms(AlarmQuery(kinds=["speeding"])))[0]
    assert a["covered"] and a["state"] == "closed"
    assert a["ack"] == {
        "user": "zhang",
        "at": s + 60_000,
        "note": "called the driver",
        "handled": True,
    }
    assert [r["id"] for r in await history.alarms(AlarmQuery(state="open"))] == [other.id]
    assert [r["id"] for r in await history.alarms()] == [other.id, a["id"]]  # newest first
    org2 = registry.org_of(2)
    assert {r["id"] for r in await history.alarms(AlarmQuery(orgs=[org2]))} == {other.id}
    assert await history.alarms(AlarmQuery(from_ms=s + 51)) == []
    assert len(await history.alarms(AlarmQuery(limit=1))) == 1


async def test_daily_stats(history: HistoryStore, registry: Registry) -> None:
    # veh000: 09:00-09:30 and 14:00-14:10 local (two trips); veh004: one trip; 23:59 next day.
    await history.write_positions(drive(0, DAY_START + 9 * 3_600_000, 181))
    await history.write_positions(drive(0, DAY_START + 14 * 3_600_000, 61, lat0=30.45 + 0.162))
    await history.write_positions(drive(4, DAY_START + 10 * 3_600_000, 31))
    await history.write_positions(drive(5, DAY_START + DAY_MS + 60_000, 31))  # the next day
    await history.write_alarm_events(
        [
            event(registry, 0, "off_hours", DAY_START + 100, "open", DAY_START + 100),
            event(registry, 0, "speeding", DAY_START + 200, "open", DAY_START + 200),
            event(registry, 0, "speeding", DAY_START + 300, "open", DAY_START + 300),
        ]
    )
    stats = await history.daily_stats(DAY, "Asia/Shanghai")
    by_vehicle = {v["vehicle"]: v for v in stats["vehicles"]}
    assert len(by_vehicle) == len(registry)
    v0 = by_vehicle["veh000"]
    assert v0["trips"] == 2
    assert v0["driving_s"] == (180 + 60) * 10
    assert v0["mileage_km"] == pytest.approx(24.0, rel=0.01)
    assert v0["alarms"] == {"off_hours": 1, "speeding": 2}
    assert by_vehicle["veh004"]["trips"] == 1 and by_vehicle["veh005"]["trips"] == 0
    assert stats["total"]["trips"] == 3 and stats["total"]["active_vehicles"] == 2
    assert stats["total"]["alarms"] == {"speeding": 2, "off_hours": 1}
    org0 = {o["org"]: o for o in stats["orgs"]}[registry.org_of(0)]
    assert org0["trips"] == 2 + (1 if registry.org_of(4) == registry.org_of(0) else 0)
    only = await history.daily_stats(DAY, "Asia/Shanghai", orgs=[registry.org_of(4)])
    assert {v["org"] for v in only["vehicles"]} == {registry.org_of(4)}
    assert only["total"]["trips"] == 1
    nxt = await history.daily_stats(DAY + dt.timedelta(days=1), "Asia/Shanghai")
    assert nxt["total"]["trips"] == 1


async def test_rule_state_and_dead_letters(history: HistoryStore) -> None:
    assert await history.load_rule_state("engine") is None
    await history.save_rule_state("engine", b"\x00\x01state")
    await history.save_rule_state("engine", b"\x00\x02state")
    assert await history.load_rule_state("engine") == b"\x00\x02state"
    await history.write_dead_letters(
        [
            DeadLetter(DAY_START, "fleet/x/position", "x", "invalid_json", "line 1", b"{nope"),
            DeadLetter(DAY_START + 1, "jt808/1/up", None, "bad_checksum", "", b"\x7e\x00\x7e"),
        ]
    )


async def test_retention(history: HistoryStore, registry: Registry) -> None:
    now = DAY_START + 200 * DAY_MS
    old = now - 190 * DAY_MS
    await history.write_positions(drive(0, old, 10))
    await history.write_positions(drive(0, now - 10 * DAY_MS, 10))
    await history.write_alarm_events(
        [
            event(registry, 1, "speeding", old, "close", old + 10, ended_at=old + 10),
            event(registry, 1, "fatigue", now - 4 * 365 * DAY_MS, "open", now - 4 * 365 * DAY_MS),
            event(
                registry,
                1,
                "speeding",
                now - 1096 * DAY_MS,
                "close",
                now - 1096 * DAY_MS,
                ended_at=now - 1096 * DAY_MS,
            ),
        ]
    )
    await history.write_dead_letters([DeadLetter(old, "t", None, "r", "", b"")])
    removed = await history.apply_retention(now)
    assert removed["alarms"] == 1 and removed["dead_letters"] == 1
    tr = await history.track(registry.ids[0], 0, now)
    assert tr["ts"].size == 10 and tr["ts"].min() >= now - 10 * DAY_MS
    # Kept: a closed episode within 3 years; an episode still open however old it is.
    assert {a["kind"] for a in await history.alarms()} == {"speeding", "fatigue"}


async def test_a_registry_that_grew_is_mapped_before_the_write(
    history: Any, registry: Registry
) -> None:
    """Records issue: a vehicle registered live is stored without re-opening the store."""
    from fleet.model import VehicleConfig

    i = registry.upsert(
        VehicleConfig(id="late1", plate="川X99991", terminal="13999999991", org="qx")
    )
    b = PositionBatch.from_columns(
        vehicle=[i], ts=[1_764_034_200_000], lat=[30.5], lon=[106.6], speed=[10.0]
    )
    assert await history.write_positions(b) == 1
    track = await history.track("late1", 1_764_034_100_000, 1_764_034_300_000)
    assert len(track["ts"]) == 1
