"""Alarm history queries on SQLite and the real PostgreSQL: paging past 5,000, filters, counts."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fleet.registry import Registry
from rules.events import KINDS, AlarmEvent, episode_id
from store.history import AlarmQuery, HistoryStore

pytestmark = pytest.mark.services

T0 = 1_764_000_000_000
SEVERITIES = ("critical", "warning", "info")


def events(reg: Registry, n: int, seed: int = 3) -> list[AlarmEvent]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        v = rng.randrange(len(reg))
        kind = rng.choice(KINDS)
        started = T0 + rng.randrange(0, 30 * 86_400_000)
        out.append(
            AlarmEvent(
                id=episode_id(reg.ids[v], kind, started) + f".{k}",
                vehicle=v,
                vehicle_id=reg.ids[v],
                kind=kind,
                action=rng.choice(("open", "close")),
                started_at=started,
                ts=started + 1000,
                lat=30.5,
                lon=106.6,
                severity=rng.choice(SEVERITIES),  # type: ignore[arg-type]
            )
        )
    return out


def reference(evs: list[AlarmEvent], reg: Registry, q: AlarmQuery) -> list[str]:
    """The ids the query must return, newest first, by a plain Python filter."""
    keep = []
    for e in evs:
        plate = reg.plates[e.vehicle].upper()
        if (
            (q.state is None or ("open" if e.action == "open" else "closed") == q.state)
            and (q.kinds is None or e.kind in q.kinds)
            and (q.severities is None or e.severity in q.severities)
            and (q.orgs is None or reg.org_of(e.vehicle) in q.orgs)
            and (q.vehicle_id is None or e.vehicle_id == q.vehicle_id)
            and (q.plate is None or q.plate.upper() in plate)
            and (q.from_ms is None or e.started_at >= q.from_ms)
            and (q.to_ms is None or e.started_at < q.to_ms)
        ):
            keep.append(e)
    keep.sort(key=lambda e: e.id)
    keep.sort(key=lambda e: e.started_at, reverse=True)
    return [e.id for e in keep]


async def test_paging_beyond_5000_and_filters(history: HistoryStore, registry: Registry) -> None:
    evs = events(registry, 7_000)
    for i in range(0, len(evs), 1000):
        await history.write_alarm_events(evs[i : i + 1000])
    everything = AlarmQuery(limit=500)
    assert await history.count_alarms(everything) == 7_000
    # Walk every page: 14 pages of 500, no overlap, nothing missing, in order.
    seen: list[str] = []
    for page in range(15):
        rows = await history.alarms(dataclasses.replace(everything, offset=page * 500))
        seen += [r["id"] for r in rows]
    assert seen == reference(evs, registry, everything)
    # The last rows, far past the old cap of 5,000.
    tail = await history.alarms(AlarmQuery(limit=500, offset=6_900))
    assert [r["id"] for r in tail] == seen[6_900:]
    queries = [
        AlarmQuery(severities=["critical"]),
        AlarmQuery(severities=["warning", "info"], state="open"),
        AlarmQuery(plate="x0001"),  # case-insensitive, contains: 川X00010..川X00019
        AlarmQuery(plate="川X00007", kinds=["speeding", "offline"]),
        AlarmQuery(orgs=["ws"], from_ms=T0 + 5 * 86_400_000, to_ms=T0 + 9 * 86_400_000),
        AlarmQuery(vehicle_id=registry.ids[4], severities=["info"]),
        AlarmQuery(plate="不存在"),
    ]
    for q in queries:
        want = reference(evs, registry, q)
        assert await history.count_alarms(q) == len(want), q
        got = await history.alarms(dataclasses.replace(q, limit=10_000))
        assert [r["id"] for r in got] == want, q
        page2 = await history.alarms(dataclasses.replace(q, limit=7, offset=7))
        assert [r["id"] for r in page2] == want[7:14], q
