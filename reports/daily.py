"""Building a day of the rollup from history, and the job that keeps it current.

Not pure (it awaits the stores) but holds no SQL: positions and rows go through
:class:`store.rollup.RollupStore`, alarm episodes through the history store's
:meth:`~store.history.HistoryStore.alarms`.

:class:`RollupJob` runs on an injected clock: each :meth:`RollupJob.tick` writes
today so far (at most every ``refresh_s``) and, once a day has ended, that day as
closed (once). Both are idempotent: a day rebuilt from the same history gives the
same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from fleet.registry import Registry
from reports.lots import in_own_lot
from reports.rollup import RollupParams, alarm_facts, track_rollup, trip_coverage
from store.history import AlarmQuery, day_bounds_ms
from store.orders_core import STATES_IN_FORCE
from store.rollup import REAL, RollupStore

__all__ = ["ORDER_STATES_IN_FORCE", "RollupJob", "build_day", "local_day"]

log = logging.getLogger(__name__)

#: Order states that put a vehicle's trip "under an order" (#16); old orders: approved=True.
ORDER_STATES_IN_FORCE = STATES_IN_FORCE

MAX_ALARMS_PER_DAY = 5_000_000


def local_day(ms: int, tz: str) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def _in_force(o: Mapping[str, Any]) -> bool:
    state = o.get("state")
    if state is not None:
        return state in ORDER_STATES_IN_FORCE
    return bool(o.get("approved"))


def _in_lot(fences: Any, registry: Registry, pos: Mapping[str, Any]) -> np.ndarray:
    """True where a point is inside its vehicle's own lot, or the vehicle has no lot."""
    return in_own_lot(fences, registry, pos["vehicle"], pos["lon"], pos["lat"])


async def build_day(
    history: Any,
    rollup: RollupStore,
    registry: Registry,
    day: dt.date,
    tz: str,
    *,
    now_ms: int,
    fences: Any = None,
    orders: Sequence[Mapping[str, Any]] = (),
    alarms: Sequence[Mapping[str, Any]] | None = None,
    scenario: str = REAL,
    params: RollupParams | None = None,
) -> dict[str, Any]:
    """Compute and write one day of ``scenario`` (the part before ``now_ms`` if it has
    not ended). ``alarms``: the episodes to use (a "what if" replay's), else history's.
    Returns a small summary (rows written, whether the day is closed)."""
    params = params or RollupParams()
    start, end = day_bounds_ms(day, tz)
    upto = min(end, now_ms)
    closed = now_ms >= end
    if upto <= start:
        raise ValueError(f"{day} has not begun at {now_ms}")
    pos = await rollup.day_positions(start, upto)
    lot = _in_lot(fences, registry, pos)
    r = track_rollup(
        pos["vehicle"], pos["ts"], pos["lat"], pos["lon"], pos["speed"], pos["acc"], lot, params
    )
    n = len(registry)
    fields = ("km", "trips", "driving_s", "idle_s", "outside_s", "online_s", "points")
    per: dict[str, np.ndarray] = {f: np.zeros(n) for f in fields}
    gv = r["vehicle"].astype(np.int64)
    for f in fields:
        per[f][gv] = r[f]
    # Orders in force overlapping the day (so far), and the trips they cover.
    ov: list[int] = []
    os_: list[int] = []
    oe: list[int] = []
    for o in orders:
        if not _in_force(o):
            continue
        vid = o.get("vehicle") or o.get("vehicle_id")
        i = registry.by_id(str(vid)) if vid else None
        if i is None or int(o["end"]) < start or int(o["start"]) >= upto:
            continue
        ov.append(i)
        os_.append(int(o["start"]))
        oe.append(int(o["end"]))
    n_orders = np.bincount(np.array(ov, dtype=np.int64), minlength=n)
    trip_veh = gv[r["trip_group"]]
    cov = trip_coverage(
        trip_veh, r["trip_start"], r["trip_end"], np.array(ov), np.array(os_), np.array(oe)
    )
    covered = np.bincount(trip_veh[cov], minlength=n)
    if alarms is None:
        alarms = await history.alarms(
            AlarmQuery(from_ms=start, to_ms=upto, limit=MAX_ALARMS_PER_DAY)
        )
    arows: list[dict[str, Any]] = []
    n_alarms = np.zeros(n, dtype=np.int64)
    for a in alarms:
        if not start <= int(a["started_at"]) < upto:
            continue
        fact = alarm_facts(a)
        i = registry.by_id(fact["vehicle_id"])
        if i is not None:
            fact["org"] = registry.org_of(i)
            n_alarms[i] += 1
        arows.append(fact)
    span_s = (upto - start) / 1000.0
    vrows: list[dict[str, Any]] = []
    for i, vid in enumerate(registry.ids):
        vrows.append(
            {
                "vehicle_id": vid,
                "org": registry.org_of(i),
                "km": round(float(per["km"][i]), 3),
                "trips": int(per["trips"][i]),
                "trips_covered": int(covered[i]),
                "driving_s": round(float(per["driving_s"][i]), 1),
                "idle_s": round(float(per["idle_s"][i]), 1),
                "outside_s": round(float(per["outside_s"][i]), 1),
                "online_s": round(float(per["online_s"][i]), 1),
                "span_s": span_s,
                "points": int(per["points"][i]),
                "orders": int(n_orders[i]),
                "alarms": int(n_alarms[i]),
                "closed": closed,
                "updated_at": int(upto),
            }
        )
    await rollup.replace_day(scenario, day.isoformat(), vrows, arows)
    return {
        "day": day.isoformat(),
        "scenario": scenario,
        "closed": closed,
        "vehicles": len(vrows),
        "alarms": len(arows),
        "positions": int(pos["ts"].size),
    }


@dataclass
class RollupJob:
    """Keeps the real rollup current: today so far every ``refresh_s``, each ended day
    once as closed. ``context()`` gives (history, rollup, registry, fences, orders);
    ``params`` the ``[vehicle_state]`` thresholds (:meth:`RollupParams.of`)."""

    context: Callable[[], Awaitable[tuple[Any, RollupStore, Registry, Any, Sequence[Any]]]]
    tz: str
    refresh_s: float = 300.0
    last_today_ms: int = -(10**15)
    closed_through: dt.date | None = None  # the last day written as closed
    on_built: list[Callable[[dict[str, Any]], Any]] = field(default_factory=list)
    params: RollupParams | None = None  # the configured thresholds (RollupParams.of)

    async def tick(self, now_ms: int, *, force: bool = False) -> list[dict[str, Any]]:
        history, rollup, registry, fences, orders = await self.context()
        today = local_day(now_ms, self.tz)
        done: list[dict[str, Any]] = []
        yesterday = today - dt.timedelta(days=1)
        if self.closed_through is None or self.closed_through < yesterday:
            # Close the day before today (a service down for days closes only the last
            # one here; older days: `fleetwatch rollup --from`).
            done.append(
                await build_day(
                    history,
                    rollup,
                    registry,
                    yesterday,
                    self.tz,
                    now_ms=now_ms,
                    fences=fences,
                    orders=orders,
                    params=self.params,
                )
            )
            self.closed_through = yesterday
        if force or now_ms - self.last_today_ms >= self.refresh_s * 1000:
            done.append(
                await build_day(
                    history,
                    rollup,
                    registry,
                    today,
                    self.tz,
                    now_ms=now_ms,
                    fences=fences,
                    orders=orders,
                    params=self.params,
                )
            )
            self.last_today_ms = now_ms
        for cb in self.on_built:
            for d in done:
                cb(d)
        return done
