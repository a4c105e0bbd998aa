"""Per-row facts the rules need besides fences: local day, working windows, distance steps.

Local time: the UTC offset of the fleet's zone is taken once per UTC day (at
12:00 UTC) and applied to the whole day. Exact for zones without daylight
saving (Asia/Shanghai, the default); on a DST changeover day the hours next
to the change may be off by the shift.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from fleet.registry import Registry
from rules.calendar import DayInfo, WorkCalendar
from rules.config import WorkingHoursConfig, hhmm_minutes

__all__ = ["DAY_MS", "DayTable", "Days", "Schedules", "fence_names", "step_m", "step_m_array"]

DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
EARTH_R_M = 6_371_008.8  # mean Earth radius (IUGG)


def step_m(lat0: float, lon0: float, lat1: float, lon1: float) -> int:
    """Great-circle distance in whole metres (haversine); 0 when a point is unknown."""
    if math.isnan(lat0) or math.isnan(lon0) or math.isnan(lat1) or math.isnan(lon1):
        return 0
    p0, p1 = math.radians(lat0), math.radians(lat1)
    dphi = p1 - p0
    dlmb = math.radians(lon1 - lon0)
    h = math.sin(dphi / 2) ** 2 + math.cos(p0) * math.cos(p1) * math.sin(dlmb / 2) ** 2
    return round(2 * EARTH_R_M * math.asin(math.sqrt(min(1.0, h))))


def step_m_array(lat0: Any, lon0: Any, lat1: Any, lon1: Any) -> npt.NDArray[np.int64]:
    """:func:`step_m` for columns."""
    p0, p1 = np.radians(lat0), np.radians(lat1)
    dphi = p1 - p0
    dlmb = np.radians(lon1 - lon0)
    h = np.sin(dphi / 2) ** 2 + np.cos(p0) * np.cos(p1) * np.sin(dlmb / 2) ** 2
    d = np.rint(2 * EARTH_R_M * np.arcsin(np.sqrt(np.minimum(1.0, h))))
    return np.where(np.isnan(d), 0, d).astype(np.int64)


def season_of(d: dt.date, wh: WorkingHoursConfig) -> str:
    md = (d.month, d.day)
    a = tuple(int(x) for x in wh.summer_start.split("-"))
    b = tuple(int(x) for x in wh.summer_end.split("-"))
    return "summer" if a <= md <= b else "winter"


@dataclass
class Days:
    """Local-calendar facts of sorted rows."""

    code: npt.NDArray[np.int64]  # local day number (days since 1970-01-01, local)
    mod: npt.NDArray[np.int64]  # ms since local midnight
    workday: npt.NDArray[np.bool_]
    summer: npt.NDArray[np.bool_]


class DayTable:
    """Dense per-day tables, grown on demand, so rows look days up by index."""

    def __init__(self, timezone: str, calendar: WorkCalendar, wh: WorkingHoursConfig) -> None:
        self.tz = ZoneInfo(timezone)
        self.calendar = calendar
        self.wh = wh
        self._lo = 0
        self._hi = -1  # empty
        self._off = np.zeros(0, np.int64)
        self._work = np.zeros(0, bool)
        self._summer = np.zeros(0, bool)
        self._info: list[DayInfo] = []

    def _ensure(self, lo: int, hi: int) -> None:
        lo, hi = lo - 2, hi + 2
        if self._lo <= lo and hi <= self._hi:
            return
        if self._hi >= self._lo:
            lo, hi = min(lo, self._lo), max(hi, self._hi)
        days = range(lo, hi + 1)
        off, work, summer, info = [], [], [], []
        for d in days:
            noon = dt.datetime(1970, 1, 1, 12, tzinfo=dt.UTC) + dt.timedelta(days=d)
            delta = noon.astimezone(self.tz).utcoffset()
            off.append(int(delta.total_seconds() * 1000) if delta is not None else 0)
            date = _EPOCH + dt.timedelta(days=d)
            di = self.calendar.day(date)
            info.append(di)
            work.append(di.workday)
            summer.append(season_of(date, self.wh) == "summer")
        self._lo, self._hi = lo, hi
        self._off = np.array(off, np.int64)
        self._work = np.array(work, bool)
        self._summer = np.array(summer, bool)
        self._info = info

    def rows(self, ts: npt.NDArray[np.int64]) -> Days:
        if ts.shape[0] == 0:
            z = np.zeros(0, np.int64)
            return Days(z, z, np.zeros(0, bool), np.zeros(0, bool))
        ud = ts // DAY_MS
        self._ensure(int(ud.min()), int(ud.max()))
        local = ts + self._off[ud - self._lo]
        ld = local // DAY_MS
        li = ld - self._lo
        return Days(ld, local - ld * DAY_MS, self._work[li], self._summer[li])

    def info(self, local_day: int) -> DayInfo:
        return self._info[local_day - self._lo]

    def detail(self, days: Days, i: int) -> dict[str, Any]:
        di = self.info(int(days.code[i]))
        return off_hours_detail(di)

    @staticmethod
    def night(days: Days, start: str, end: str) -> npt.NDArray[np.bool_]:
        a, b = hhmm_minutes(start) * 60_000, hhmm_minutes(end) * 60_000
        if a > b:
            return (days.mod >= a) | (days.mod < b)
        return (days.mod >= a) & (days.mod < b)


def off_hours_detail(di: DayInfo) -> dict[str, Any]:
    return {
        "reason": "after_hours" if di.workday else "rest_day",
        "day": di.kind,
        "holiday": di.name,
        "calendar": di.source,
    }


def schedule_of_org(org: int, registry: Registry, wh: WorkingHoursConfig) -> str | None:
    """The org id whose schedule applies to ``org`` (itself or nearest ancestor), or None."""
    parent = registry.orgs.parent
    o = org
    while o >= 0:
        oid = registry.orgs.ids[o]
        if oid in wh.by_org:
            return oid
        o = int(parent[o])
    return None


class Schedules:
    """Working windows per vehicle (through its organisation), as ms-of-day arrays."""

    def __init__(self, wh: WorkingHoursConfig, registry: Registry) -> None:
        names = [None, *sorted(wh.by_org)]
        pos = {n: i for i, n in enumerate(names)}
        k = 1
        for n in names:
            s = wh.default if n is None else wh.by_org[n]
            k = max(k, len(s.summer), len(s.winter))
        # w[schedule, summer?, window, lo/hi] in ms of day; padding windows are empty (0, 0).
        w = np.zeros((len(names), 2, k, 2), np.int64)
        for n in names:
            s = wh.default if n is None else wh.by_org[n]
            for season, si in (("winter", 0), ("summer", 1)):
                for j, (a, b) in enumerate(s.minutes(season)):
                    w[pos[n], si, j] = (a * 60_000, b * 60_000)
        self.w = w
        self.k = k
        org_sched = np.array(
            [pos[schedule_of_org(o, registry, wh)] for o in range(len(registry.orgs.ids))],
            dtype=np.int64,
        )
        self.vsched = org_sched[registry.org_index] if len(registry) else np.zeros(0, np.int64)
        self.single = len(names) == 1

    def in_window(self, veh: npt.NDArray[Any], days: Days) -> npt.NDArray[np.bool_]:
        base = days.summer.astype(np.int64)
        if not self.single:
            base = base + self.vsched[veh] * 2
        flat = self.w.reshape(-1, self.k, 2)
        out = np.zeros(days.mod.shape[0], bool)
        for j in range(self.k):
            lo = flat[:, j, 0][base]
            hi = flat[:, j, 1][base]
            out |= (days.mod >= lo) & (days.mod < hi)
        return out


def fence_names(index: Any, registry: Registry, vehicle: int, use: str) -> str:
    """The names of the fences of ``use`` that apply to ``vehicle``, joined by "、".

    ``allowed_region``: the regions of its organisation and every ancestor (the area
    an out_of_area episode left); ``lot``: its own organisation's lots (where a
    parking_violation says it should be). The alarm desk shows this as
    ``detail.fence_name``. Empty when there is none.
    """
    from geofence.index import USE_CODES

    org = int(registry.org_index[vehicle])
    wanted = {registry.orgs.ids[org]}
    if use == "allowed_region":
        o = int(registry.orgs.parent[org])
        while o >= 0:
            wanted.add(registry.orgs.ids[o])
            o = int(registry.orgs.parent[o])
    code = USE_CODES[use]
    names = [
        f.name
        for f, u, o in zip(index.fences, index.use.tolist(), index.org.tolist(), strict=True)
        if u == code and index.org_names[o] in wanted
    ]
    return "、".join(dict.fromkeys(names))
