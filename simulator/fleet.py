"""A simulated city fleet: daily schedules, reports and the violations injected, as columns.

Pure and deterministic: the same :class:`FleetSpec` and the same sequence of
``step(now_ms)`` calls give the same reports, and how the calls are spaced does
not change what is reported (each vehicle's reports follow its own plan and
its own random stream). Time is passed in; nothing here reads a clock.

Two schedules:

- ``"office"`` — what the verify run uses: parked at the organisation's lot at
  night, trips inside the working windows on workdays, and on some vehicles
  one injected violation a day (see :mod:`simulator.plan`), recorded as ground
  truth in :meth:`Fleet.violations`.
- ``"always"`` — the demo's lively city: trips round the clock, a share of
  the vehicles speeding now and then.

Reports: every ``interval_s`` while moving, every ``parked_interval_s`` while
parked, and at once when ACC or an alarm bit changes (as JT/T 808 terminals do).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from simulator.city import City, build_city
from simulator.plan import (
    DAY,
    MIN,
    ORDER_VIOLATIONS,
    VIOLATION_KINDS,
    AlarmSpell,
    DayPlan,
    Leg,
    PlanParams,
    Silence,
    Trip,
    Violation,
    plan_day,
)

__all__ = [
    "COLUMNS",
    "ORDER_VIOLATIONS",
    "Fleet",
    "FleetSpec",
    "PlannedOrder",
    "Violation",
    "terminal_id",
    "vehicle_id",
]

TZ_OFFSET_MS = 8 * 3_600_000  # Asia/Shanghai, no daylight saving

# The columns of a step, in fleet.batch units (speed km/h, mileage km, times epoch ms).
COLUMNS = (
    "vehicle",
    "ts",
    "lat",
    "lon",
    "speed",
    "heading",
    "alt",
    "acc",
    "alarm",
    "status",
    "mileage",
    "backfill",
)


def terminal_id(i: int) -> str:
    """Terminal id (an 11-digit SIM number, as JT/T 808 terminals have) of simulated vehicle i."""
    return f"139{i:08d}"


def vehicle_id(i: int) -> str:
    return f"v{i:05d}"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    vehicles: int = 200
    center_lat: float = 30.456  # Guang'an (广安)
    center_lon: float = 106.633
    radius_km: float = 15.0
    interval_s: float = 10.0  # report interval while moving
    speeding_share: float = 0.05  # vehicles that speed (per day in "office")
    parked_share: float = 0.3  # kept for compatibility; the schedules decide who is parked
    limit_kmh: float = 80.0
    seed: int = 1
    schedule: Literal["office", "always"] = "always"
    parked_interval_s: float = 60.0
    gps_noise_m: float = 4.0
    # Shares of vehicles given each injected violation per day ("office" only).
    off_hours_share: float = 0.0
    out_of_area_share: float = 0.0
    forbidden_share: float = 0.0
    no_return_share: float = 0.0
    offline_share: float = 0.0
    sos_share: float = 0.0
    signal_loss_share: float = 0.0  # blind areas then 0x0704 back-fill: not a violation
    # Dispatch orders (派车单): the first ``ordered_orgs`` units dispatch every trip by
    # order, with no_order on; their vehicles take the order violations (per day, office).
    ordered_orgs: int = 0
    order_missing_share: float = 0.0
    order_rejected_share: float = 0.0
    order_approved_share: float = 0.0
    order_late_share: float = 0.0
    order_wrong_city_share: float = 0.0
    windows_summer: tuple[str, ...] = ("08:30-12:00", "14:30-18:00")
    windows_winter: tuple[str, ...] = ("08:30-12:00", "14:00-17:30")
    summer: tuple[str, str] = ("05-01", "09-30")

    def shares(self) -> dict[str, float]:
        return {
            "speeding": self.speeding_share,
            "off_hours": self.off_hours_share,
            "out_of_area": self.out_of_area_share,
            "forbidden_zone": self.forbidden_share,
            "no_return": self.no_return_share,
            "offline": self.offline_share,
            "sos": self.sos_share,
        }

    def order_shares(self) -> dict[str, float]:
        return {
            "order_missing": self.order_missing_share,
            "order_rejected": self.order_rejected_share,
            "order_approved": self.order_approved_share,
            "order_late": self.order_late_share,
            "order_wrong_city": self.order_wrong_city_share,
        }


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """A dispatch order the scenario files: ``filed_ms`` is when FleetWatch learns of it
    (a 补单 after its trip). Fields as :class:`rules.orders.DispatchOrder` takes them."""

    id: str
    vehicle: int
    type: str
    start: int
    end: int
    state: str
    filed_ms: int
    region: str | None = None

    def dispatch_order(self) -> Any:
        from rules.orders import DispatchOrder

        return DispatchOrder(
            self.id,
            vehicle_id(self.vehicle),
            self.type,
            self.start,
            self.end,
            approved=self.state != "rejected",
            approved_at=self.filed_ms,
            region=self.region,
            state=self.state,
        )


def _minutes(w: str) -> tuple[int, int]:
    a, z = w.split("-")
    return int(a[:2]) * 60 + int(a[3:]), int(z[:2]) * 60 + int(z[3:])


def local_day(ms: int) -> int:
    """Epoch ms of the local midnight at or before ``ms``."""
    return (ms + TZ_OFFSET_MS) // DAY * DAY - TZ_OFFSET_MS


def is_workday(day_start: int) -> bool:
    d = dt.date(1970, 1, 1) + dt.timedelta(days=(day_start + TZ_OFFSET_MS) // DAY)
    try:
        import chinese_calendar

        return bool(chinese_calendar.is_workday(d))
    except (ImportError, NotImplementedError):
        return d.weekday() < 5


class _Vehicle:
    """One vehicle's timeline and report cursor."""

    __slots__ = (
        "buffer",
        "fi",
        "forced",
        "i",
        "legs",
        "li",
        "m0",
        "next_t",
        "org",
        "rng",
        "silences",
        "spells",
    )

    def __init__(self, i: int, org: str, seed: int, first_t: int) -> None:
        self.i = i
        self.org = org
        self.rng = random.Random(f"{seed}:noise:{i}")
        self.legs: list[Leg] = []
        self.m0: list[float] = []  # mileage (km) at the start of each leg
        self.li = 0
        self.spells: list[AlarmSpell] = []
        self.silences: list[Silence] = []
        self.forced: list[int] = []
        self.fi = 0
        self.next_t = first_t
        self.buffer: list[tuple[float, ...]] = []


class Fleet:
    """State of every simulated vehicle; :meth:`step` advances it and returns the reports."""

    def __init__(self, spec: FleetSpec, start_ms: int) -> None:
        self.spec = spec
        self.city: City = build_city(spec.center_lat, spec.center_lon, spec.radius_km, 8)
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.steps = 0
        leaves = self.city.leaf_orgs
        rng = random.Random(f"{spec.seed}:fleet")
        self._v = [
            _Vehicle(i, leaves[i % len(leaves)], spec.seed, start_ms + rng.randint(0, 9_999))
            for i in range(spec.vehicles)
        ]
        self._planned_until = local_day(start_ms)
        self._ends: list[tuple[float, float]] = [
            (self.city.lot_of(v.org).x, self.city.lot_of(v.org).y) for v in self._v
        ]
        self._mileage = [1000.0 + 37.0 * i % 5000 for i in range(spec.vehicles)]
        self._violations: list[Violation] = []
        self._orders: list[PlannedOrder] = []
        self._plan_next_day()

    # -- plans ------------------------------------------------------------------------------

    def org_of(self, i: int) -> str:
        return self._v[i].org

    def assignments(self, day_start: int) -> dict[int, str]:
        """Which vehicle commits which violation on the day starting at ``day_start``."""
        spec = self.spec
        if spec.schedule != "office":
            return {}
        rng = random.Random(f"{spec.seed}:day:{day_start}")
        everyone = list(range(spec.vehicles))
        rng.shuffle(everyone)
        ordered = self.ordered_orgs()
        order = [v for v in everyone if self._v[v].org not in ordered]
        out: dict[int, str] = {}
        k = 0
        workday = is_workday(day_start)
        for what, share in spec.shares().items():
            if share <= 0 or (not workday and what not in ("off_hours", "offline")):
                continue
            count = max(1, round(share * spec.vehicles))
            for v in order[k : k + count]:
                out[v] = what
            k += count
        by_order = [v for v in everyone if self._v[v].org in ordered]
        k = 0
        for what, share in spec.order_shares().items():
            if share <= 0 or not workday:
                continue
            count = max(1, round(share * spec.vehicles))
            for v in by_order[k : k + count]:
                out[v] = what
            k += count
        return out

    def ordered_orgs(self) -> tuple[str, ...]:
        """The units that dispatch by order (no_order on for them)."""
        return self.city.childless_orgs[: self.spec.ordered_orgs]

    def orders(self, until_ms: int | None = None) -> list[PlannedOrder]:
        """Every order filed before ``until_ms``, in filing order."""
        out = [o for o in self._orders if until_ms is None or o.filed_ms < until_ms]
        return sorted(out, key=lambda o: (o.filed_ms, o.id))

    def _plan_orders(self, v: _Vehicle, day_start: int, plan: DayPlan, what: str | None) -> None:
        if v.org not in self.ordered_orgs():
            return
        for n, trip in enumerate(plan.trips):
            oid = f"sim-{vehicle_id(v.i)}-{day_start // DAY}-{n}"
            start, end = trip.t0 - 5 * MIN, trip.t1 + 10 * MIN
            typ = "out_of_area" if trip.what == "out_of_city" else "local"
            if trip.what == "ordinary" and what == "order_missing" and n == 0:
                continue  # the trip without an order
            state, filed, region = "approved", start - 30 * MIN, None
            if trip.what == "evening" and what == "order_rejected":
                state = "rejected"
            elif trip.what == "evening" and what == "order_late":
                filed = trip.t1 + 30 * MIN  # 补单: filed after the trip
            elif trip.what == "out_of_city":
                region = f"out_of_city:{self._wrong_city(trip)}"
            self._orders.append(PlannedOrder(oid, v.i, typ, start, end, state, filed, region))

    def _wrong_city(self, trip: Trip) -> str:
        """A neighbouring city in another direction than the trip went: the order names it."""
        from rules.regions import city_centres, inside_one

        lat, lon = self.city.to_latlon(trip.x, trip.y)
        c_lat, c_lon = self.spec.center_lat, self.spec.center_lon
        went = math.atan2(lat - c_lat, lon - c_lon)
        best = None
        for name, (x, y) in sorted(city_centres().items()):
            off = abs(math.remainder(math.atan2(y - c_lat, x - c_lon) - went, math.tau))
            if not inside_one(f"out_of_city:{name}", lon, lat, 0.5, 15.0) and (
                best is None or off > best[0]
            ):
                best = (off, name)
        if best is None:
            raise AssertionError("no neighbouring city lies away from the trip")
        return best[1]

    def _params(self, day_start: int, i: int, lossy: set[int]) -> PlanParams:
        spec = self.spec
        d = dt.date(1970, 1, 1) + dt.timedelta(days=(day_start + TZ_OFFSET_MS) // DAY)
        mmdd = d.strftime("%m-%d")
        summer = spec.summer[0] <= mmdd <= spec.summer[1]
        windows = spec.windows_summer if summer else spec.windows_winter
        if spec.schedule == "office" and not is_workday(day_start):
            windows = ()
        n_speeders = round(spec.vehicles * spec.speeding_share)
        return PlanParams(
            schedule=spec.schedule,
            windows=tuple(_minutes(w) for w in windows),
            limit_kmh=spec.limit_kmh,
            speeder=spec.schedule == "always" and i < n_speeders,
            signal_loss=i in lossy,
        )

    def _plan_next_day(self) -> None:
        day_start = self._planned_until
        assigned = self.assignments(day_start)
        rng = random.Random(f"{self.spec.seed}:loss:{day_start}")
        lossy = {
            i
            for i in range(self.spec.vehicles)
            if i not in assigned and rng.random() < self.spec.signal_loss_share
        }
        for v in self._v:
            t = v.legs[-1].t1 if v.legs else min(self.start_ms, day_start)
            x, y = self._ends[v.i]
            plan = plan_day(
                self.city,
                self._params(day_start, v.i, lossy),
                seed=self.spec.seed,
                vehicle=v.i,
                org=v.org,
                day_start=day_start,
                start=(t, x, y),
                violation=assigned.get(v.i),
            )
            self._add(v, plan)
            self._ends[v.i] = (plan.end_x, plan.end_y)
            self._violations.extend(plan.violations)
            self._plan_orders(v, day_start, plan, assigned.get(v.i))
        self._planned_until = day_start + DAY

    def _add(self, v: _Vehicle, plan: DayPlan) -> None:
        # Drop what is already behind the cursor so a long run keeps little in memory.
        if v.li > 64:
            del v.legs[: v.li - 1], v.m0[: v.li - 1]
            v.li = 1
        m = self._mileage[v.i]
        prev_acc = v.legs[-1].speed > 0 if v.legs else False
        for leg in plan.legs:
            v.legs.append(leg)
            v.m0.append(m)
            m += leg.length_m / 1000.0
            acc = leg.speed > 0
            if acc != prev_acc:
                v.forced.append(leg.t0)  # a report when ACC changes
            prev_acc = acc
        self._mileage[v.i] = m
        v.spells.extend(plan.spells)
        v.silences.extend(plan.silences)
        for s in plan.spells:
            v.forced += [s.t0, s.t1]
        for q in plan.silences:
            v.forced.append(q.t1)
        v.forced = sorted(set(v.forced[v.fi :]))
        v.fi = 0

    def violations(self, until_ms: int | None = None) -> list[Violation]:
        """The ground truth: every violation injected that started before ``until_ms``."""
        out = [x for x in self._violations if until_ms is None or x.start_ms < until_ms]
        return sorted(out, key=lambda x: (x.start_ms, x.vehicle, x.kind))

    # -- reports ----------------------------------------------------------------------------

    def _leg_at(self, v: _Vehicle, t: int) -> tuple[Leg, float]:
        while v.li + 1 < len(v.legs) and v.legs[v.li].t1 <= t:
            v.li += 1
        return v.legs[v.li], v.m0[v.li]

    def _report(self, v: _Vehicle, t: int) -> tuple[float, ...]:
        leg, m0 = self._leg_at(v, t)
        x, y = leg.at(t)
        spec = self.spec
        rng = v.rng
        x += rng.gauss(0.0, spec.gps_noise_m)
        y += rng.gauss(0.0, spec.gps_noise_m)
        lat, lon = self.city.to_latlon(x, y)
        moving = leg.speed > 0 and t < leg.t1
        speed = 0.0
        heading = 0.0
        if moving:
            # Never pushed over the limit by the noise: only injected speeding goes over.
            speed = max(3.0, leg.speed + rng.uniform(-2.0, 2.0))
            if leg.speed <= spec.limit_kmh:
                speed = min(speed, spec.limit_kmh - 5.0)
            heading = math.degrees(math.atan2(leg.x1 - leg.x0, leg.y1 - leg.y0)) % 360.0
        done = (t - leg.t0) / (leg.t1 - leg.t0) if leg.t1 > leg.t0 else 1.0
        mileage = m0 + leg.length_m / 1000.0 * min(1.0, max(0.0, done))
        alarm = 0
        for s in v.spells:
            if s.t0 <= t < s.t1:
                alarm |= s.bits
        # JT/T 808 table 25: status bit 0 ACC on, bit 1 positioned.
        status = (1 if moving else 0) | 2
        alt = 300.0 + 20.0 * math.sin(x / 3000.0)
        return (v.i, t, lat, lon, speed, heading, alt, moving, alarm, status, mileage, False)

    def _silence(self, v: _Vehicle, t: int) -> Silence | None:
        for s in v.silences:
            if s.t0 <= t < s.t1:
                return s
        return None

    def step(self, now_ms: int) -> dict[str, npt.NDArray[Any]]:
        """Advance to ``now_ms``; return every report due in (previous now, now_ms], in the order
        the terminals send them. ``backfill`` rows are a blind-area upload sent together."""
        while self._planned_until <= now_ms + DAY // 2:
            self._plan_next_day()
        self.now_ms = max(self.now_ms, now_ms)
        self.steps += 1
        moving_ms = round(self.spec.interval_s * 1000)
        parked_ms = round(self.spec.parked_interval_s * 1000)
        rows: list[tuple[int, int, tuple[float, ...]]] = []  # (send time, order, row)
        for v in self._v:
            while v.next_t <= now_ms:
                t = v.next_t
                row = self._report(v, t)
                quiet = self._silence(v, t)
                if quiet is None:
                    for r in v.buffer:
                        rows.append((t, len(rows), (*r[:-1], True)))
                    v.buffer.clear()
                    rows.append((t, len(rows), row))
                elif quiet.backfill:
                    v.buffer.append(row)
                leg, _ = self._leg_at(v, t)
                nxt = t + (moving_ms if leg.speed > 0 and t < leg.t1 else parked_ms)
                while v.fi < len(v.forced) and v.forced[v.fi] <= t:
                    v.fi += 1
                if v.fi < len(v.forced):
                    nxt = min(nxt, v.forced[v.fi])
                v.next_t = nxt
            if len(v.silences) > 16:
                v.silences = [s for s in v.silences if s.t1 > now_ms - DAY]
                v.spells = [s for s in v.spells if s.t1 > now_ms - DAY]
        rows.sort(key=lambda r: (r[0], r[1]))
        return _columns([r[2] for r in rows])


def _columns(rows: list[tuple[float, ...]]) -> dict[str, npt.NDArray[Any]]:
    dtypes = (
        np.int32,
        np.int64,
        np.float64,
        np.float64,
        np.float32,
        np.int16,
        np.int16,
        np.bool_,
        np.uint32,
        np.uint32,
        np.float32,
        np.bool_,
    )
    if not rows:
        return {name: np.zeros(0, dtype=d) for name, d in zip(COLUMNS, dtypes, strict=True)}
    cols = list(zip(*rows, strict=True))
    return {
        name: np.asarray(col, dtype=d) for name, col, d in zip(COLUMNS, cols, dtypes, strict=True)
    }


__all__ += ["VIOLATION_KINDS", "local_day"]
