"""An episode's state changes are never lost to ordering (issue 12, "also found").

tick() stamps an offline open with the wall clock; the close a late report brings
carries that report's (older) time. Both stores used to drop any event older than
the stored row, so the close never landed: the desk showed the episode closed,
history kept it open forever. Run against SQLite and the real PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet.batch import PositionBatch
from fleet.events import AlarmEvent, episode_id
from fleet.registry import Registry
from rules.config import RulesConfig
from rules.engine import RulesEngine
from store.history import AlarmQuery, HistoryStore

pytestmark = pytest.mark.services

T0 = 1_764_034_200_000


def report(v: int, ts: int) -> PositionBatch:
    return PositionBatch.from_columns(
        vehicle=np.array([v]), ts=np.array([ts]), lat=np.array([30.5]), lon=np.array([106.6])
    )


async def test_an_offline_episode_closed_by_a_late_report_is_closed_in_history(
    history: HistoryStore, registry: Registry
) -> None:
    eng = RulesEngine(RulesConfig(), registry)
    eng.process(report(3, T0))
    wall = T0 + 900_000  # 15 min of silence on the wall clock
    opened = eng.tick(wall)
    assert [(e.kind, e.action, e.ts) for e in opened] == [("offline", "open", wall)]
    await history.write_alarm_events(opened)
    # The terminal's next report was taken 2 minutes before that tick (it sat in a queue).
    late = eng.process(report(3, wall - 120_000))
    closes = [e for e in late if e.kind == "offline"]
    assert [(e.action, e.ts < wall) for e in closes] == [("close", True)]
    await history.write_alarm_events(closes)
    rows = await history.alarms(AlarmQuery(kinds=["offline"]))
    assert [(r["state"], r["ended_at"]) for r in rows] == [("closed", wall - 120_000)]
    assert rows[0]["updated_at"] == wall  # the stored time of change never goes back


def _ev(reg: Registry, action: str, ts: int, **kw: object) -> AlarmEvent:
    vid = reg.ids[1]
    return AlarmEvent(
        id=episode_id(vid, "speeding", T0),
        vehicle=1,
        vehicle_id=vid,
        kind="speeding",
        action=action,  # type: ignore[arg-type]
        started_at=T0,
        ts=ts,
        lat=30.5,
        lon=106.6,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_close_wins_in_any_order_and_late_updates_never_reopen(
    history: HistoryStore, registry: Registry
) -> None:
    opened = _ev(registry, "open", T0 + 5_000, detail={"peak_kmh": 95})
    update = _ev(registry, "update", T0 + 60_000, detail={"peak_kmh": 130})
    close = _ev(registry, "close", T0 + 30_000, ended_at=T0 + 30_000, detail={"duration_s": 30.0})
    # Every order the three may be written in ends the same way: closed, ended, newest ts.
    orders = [
        [opened, update, close],
        [opened, close, update],
        [close, opened, update],
        [update, close, opened],
    ]
    for n, order in enumerate(orders):
        rid = f"{opened.id}.{n}"
        for ev in order:
            await history.write_alarm_events([_with_id(ev, rid)])
        (row,) = [r for r in await history.alarms(AlarmQuery(kinds=["speeding"])) if r["id"] == rid]
        assert (row["state"], row["ended_at"], row["updated_at"]) == (
            "closed",
            T0 + 30_000,
            T0 + 60_000,
        ), order


def _with_id(ev: AlarmEvent, new_id: str) -> AlarmEvent:
    import dataclasses

    return dataclasses.replace(ev, id=new_id)
