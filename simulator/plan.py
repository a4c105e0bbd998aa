"""Day plans: what each vehicle does, as a timeline of legs, and the violations it commits.

A plan is built one local day at a time, deterministically from the seed, the
vehicle and the day. It is a list of :class:`Leg` (straight drives at constant
speed, or parked spells), plus *alarm spells* (JT/T 808 alarm bits raised) and
*silences* (the terminal sends nothing; with ``backfill`` the points are kept
and uploaded when the signal comes back, as a 0x0704 blind-area batch).

Each injected violation is written down as a :class:`Violation` — the ground
truth ``fleetwatch simulate --verify`` compares FleetWatch's alarms with.

Dispatch orders (派车单): each trip is also written down as a :class:`Trip`; a
vehicle of an organisation that dispatches by order (``FleetSpec.ordered_orgs``)
gets an approved order for each ordinary trip (see ``Fleet.orders``), and the
order violations (:data:`ORDER_VIOLATIONS`) bend that: no order at all, a
rejected one, an approved one (nothing to raise), a 补单 filed after the trip, an
out-of-city order naming the wrong city.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.city import City

__all__ = [
    "ORDER_VIOLATIONS",
    "VIOLATION_KINDS",
    "AlarmSpell",
    "DayPlan",
    "Leg",
    "Silence",
    "Trip",
    "Violation",
    "plan_day",
]

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000

# Injected violation → the alarm kind FleetWatch should raise (rules/events.py KINDS).
VIOLATION_KINDS: dict[str, str] = {
    "speeding": "speeding",
    "off_hours": "off_hours",
    "out_of_area": "out_of_area",
    "forbidden_zone": "forbidden_zone",
    "no_return": "parking_violation",
    "offline": "offline",
    "sos": "terminal_alarm",
}
# Order violations: the behaviour → the alarm kinds FleetWatch should raise (with
# no_order on for the vehicle's organisation). "order_approved" raises nothing.
ORDER_VIOLATIONS: dict[str, tuple[str, ...]] = {
    "order_missing": ("no_order",),  # a daytime trip, no order
    "order_rejected": ("off_hours", "no_order"),  # an evening trip, its order rejected
    "order_approved": (),  # an evening trip, its order approved: nothing to raise
    "order_late": ("off_hours", "no_order"),  # an evening trip, a 补单 afterwards: covered
    "order_wrong_city": ("order_mismatch",),  # out of the city, the order names another
}


@dataclass(frozen=True, slots=True)
class Leg:
    """From (x0, y0) at t0 to (x1, y1) at t1 (ms, local metres); speed 0 = parked, ACC off."""

    t0: int
    t1: int
    x0: float
    y0: float
    x1: float
    y1: float
    speed: float

    def at(self, t: int) -> tuple[float, float]:
        if self.t1 <= self.t0:
            return self.x1, self.y1
        f = (t - self.t0) / (self.t1 - self.t0)
        return self.x0 + (self.x1 - self.x0) * f, self.y0 + (self.y1 - self.y0) * f

    @property
    def length_m(self) -> float:
        return math.hypot(self.x1 - self.x0, self.y1 - self.y0)


@dataclass(frozen=True, slots=True)
class AlarmSpell:
    t0: int
    t1: int
    bits: int


@dataclass(frozen=True, slots=True)
class Silence:
    t0: int
    t1: int
    backfill: bool  # True: a blind area (points kept, uploaded at t1); False: terminal off


@dataclass(frozen=True, slots=True)
class Violation:
    """One injected violation. ``kind`` is the alarm kind FleetWatch should raise."""

    kind: str
    vehicle: int
    start_ms: int
    end_ms: int
    what: str  # the injected behaviour (speeding, no_return, sos, ...)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trip:
    """One trip out of the lot and back: leaves at ``t0``, back at ``t1``. ``what``:
    ``"ordinary"``, ``"evening"`` (the after-hours errand) or ``"out_of_city"``; ``x``, ``y``
    where it went (local metres)."""

    t0: int
    t1: int
    what: str
    x: float = 0.0
    y: float = 0.0


@dataclass(slots=True)
class DayPlan:
    legs: list[Leg]
    spells: list[AlarmSpell]
    silences: list[Silence]
    violations: list[Violation]
    end_x: float
    end_y: float
    trips: list[Trip] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PlanParams:
    schedule: str  # "office" | "always"
    windows: tuple[tuple[int, int], ...]  # working windows, minutes after local midnight
    limit_kmh: float
    night_start_min: int = 22 * 60
    night_end_min: int = 6 * 60
    speeder: bool = False  # "always" schedule: this vehicle speeds now and then
    signal_loss: bool = False


class _Builder:
    """Appends legs one after another; ``t``, ``x``, ``y`` are where the vehicle is now."""

    def __init__(self, city: City, rng: random.Random, t: int, x: float, y: float) -> None:
        self.city = city
        self.rng = rng
        self.t, self.x, self.y = t, x, y
        self.legs: list[Leg] = []

    def park(self, until: int) -> None:
        if until > self.t:
            self.legs.append(Leg(self.t, until, self.x, self.y, self.x, self.y, 0.0))
            self.t = until

    def go(self, x: float, y: float, speed: float) -> Leg | None:
        d = math.hypot(x - self.x, y - self.y)
        if d < 1.0:
            return None
        dt = max(1000, round(d / (speed / 3.6) * 1000))
        leg = Leg(self.t, self.t + dt, self.x, self.y, x, y, speed)
        self.legs.append(leg)
        self.t, self.x, self.y = leg.t1, x, y
        return leg

    def cruise(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Urban speeds: arterials 45-65 km/h, other streets 25-40 km/h."""
        c = self.city
        horiz = abs(y1 - y0) < 1.0
        line = round((y0 if horiz else x0) / c.block_m)
        on_grid = abs((y0 if horiz else x0) - line * c.block_m) < 1.0
        if on_grid and c.arterial(line):
            return self.rng.uniform(45.0, 65.0)
        return self.rng.uniform(25.0, 40.0)


def route(city: City, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """Grid route from an intersection to an intersection: to the nearest arterial row, along
    it, then to the destination's row."""
    a = city.arterial_every * city.block_m
    ry = round(y0 / a) * a
    pts = [(x0, y0), (x0, ry), (x1, ry), (x1, y1)]
    out = [pts[0]]
    for p in pts[1:]:
        if math.hypot(p[0] - out[-1][0], p[1] - out[-1][1]) >= 1.0:
            out.append(p)
    return out


def _drive(
    b: _Builder, pts: list[tuple[float, float]], fast: float | None = None
) -> tuple[int, int] | None:
    """Drive along ``pts``. With ``fast`` (km/h), speed for ~90 s on the longest arterial leg
    and return when: the only place where anyone goes over the limit."""
    longest = -1
    if fast is not None:
        lengths = [math.hypot(q[0] - p[0], q[1] - p[1]) for p, q in itertools.pairwise(pts)]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
    window = None
    for k, (p, q) in enumerate(itertools.pairwise(pts)):
        v = b.cruise(p[0], p[1], q[0], q[1])
        if k == longest and fast is not None:
            d = math.hypot(q[0] - p[0], q[1] - p[1])
            fast_m = fast / 3.6 * b.rng.uniform(80.0, 120.0)
            if d > fast_m + 800:
                f0 = 400 / d
                f1 = (400 + fast_m) / d
                b.go(p[0] + (q[0] - p[0]) * f0, p[1] + (q[1] - p[1]) * f0, v)
                t_fast = b.t
                b.go(p[0] + (q[0] - p[0]) * f1, p[1] + (q[1] - p[1]) * f1, fast)
                window = (t_fast, b.t)
        b.go(q[0], q[1], v)
    return window


def _dest(
    city: City, rng: random.Random, near: tuple[float, float], spread: float
) -> tuple[float, float]:
    """A random intersection within ``spread`` of the grid's half-side, not at ``near``, that
    the grid route reaches and leaves staying inside the city boundary."""
    n = int(city.n_half * spread)
    while True:
        x = rng.randint(-n, n) * city.block_m
        y = rng.randint(-n, n) * city.block_m
        if (
            math.hypot(x - near[0], y - near[1]) > 2 * city.block_m
            and city.route_inside(route(city, near[0], near[1], x, y))
            and city.route_inside(route(city, x, y, near[0], near[1]))
        ):
            return x, y


def _trip_time(city: City, pts: list[tuple[float, float]]) -> int:
    """A pessimistic drive time (25 km/h) for planning."""
    d = sum(math.hypot(q[0] - p[0], q[1] - p[1]) for p, q in itertools.pairwise(pts))
    return round(d / (25 / 3.6) * 1000)


def _crossings(city: City, legs: list[Leg]) -> list[tuple[int, bool]]:
    """(time, now_inside) at each crossing of the city boundary along ``legs``."""
    out = []
    for leg in legs:
        if leg.t1 <= leg.t0 or leg.length_m < 1.0:
            continue
        for f, inside in city.crossings(leg.x0, leg.y0, leg.x1, leg.y1):
            out.append((leg.t0 + round(f * (leg.t1 - leg.t0)), inside))
    return out


def plan_day(
    city: City,
    params: PlanParams,
    *,
    seed: int,
    vehicle: int,
    org: str,
    day_start: int,
    start: tuple[int, float, float],
    violation: str | None,
) -> DayPlan:
    """Plan one local day (``day_start`` = local midnight, epoch ms) of one vehicle.

    ``start`` is (t, x, y): where and when the previous plan ended. ``violation`` is the
    injected behaviour for the day, one of :data:`VIOLATION_KINDS`, or None.
    """
    rng = random.Random(f"{seed}:{vehicle}:{day_start}")
    t, x, y = start
    b = _Builder(city, rng, t, x, y)
    lot = city.lot_of(org)
    spells: list[AlarmSpell] = []
    silences: list[Silence] = []
    found: list[Violation] = []
    trips: list[Trip] = []
    day_end = day_start + DAY
    if params.schedule == "always":
        while b.t < day_end:
            dest = _dest(city, rng, (b.x, b.y), 0.8)
            fast = (
                params.limit_kmh + rng.uniform(20, 30)
                if params.speeder and rng.random() < 0.5
                else None
            )
            w = _drive(b, route(city, b.x, b.y, *dest), fast)
            if w is not None:
                found.append(Violation("speeding", vehicle, w[0], w[1], "speeding"))
            b.park(b.t + rng.randint(2 * MIN, 10 * MIN))
        return DayPlan(b.legs, spells, silences, found, b.x, b.y)

    win = [(day_start + a * MIN, day_start + z * MIN) for a, z in params.windows]
    margin = 5 * MIN

    def trip_out_back(
        dest: tuple[float, float],
        w0: int,
        w1: int,
        stay: int,
        *,
        fast: float | None = None,
        back: bool = True,
        loss: bool = False,
        sos: bool = False,
        path: list[tuple[float, float]] | None = None,
    ) -> bool:
        """Leave within [w0, w1), stay, come back before w1; False when it does not fit.
        With ``path`` (from the lot), go along it and come back the same way."""
        out_pts = path if path is not None else route(city, b.x, b.y, *dest)
        back_pts = path[::-1] if path is not None else route(city, dest[0], dest[1], lot.x, lot.y)
        t_out = b.t
        need = _trip_time(city, out_pts) + (_trip_time(city, back_pts) if back else 0)
        depart = max(b.t, w0 + rng.randint(margin, margin + 20 * MIN))
        if depart + need + stay + margin > w1:
            return False
        b.park(depart)
        legs_before = len(b.legs)
        window = _drive(b, out_pts, fast)
        if fast is not None:
            if window is None:
                raise AssertionError("speeding trip without a long enough arterial")
            found.append(Violation("speeding", vehicle, window[0], window[1], "speeding"))
        if loss or sos:
            # Into the outbound drive, away from its ends.
            d0, d1 = b.legs[legs_before].t0, b.t
            s0 = d0 + (d1 - d0) // 3
            s1 = min(s0 + rng.randint(2 * MIN, 4 * MIN), d1 - 30_000)
            if s1 > s0 + 60_000:
                if loss:
                    silences.append(Silence(s0, s1, True))
                else:
                    spells.append(AlarmSpell(s0, s1, 1))  # JT/T 808 table 24, bit 0: SOS
                    found.append(Violation("terminal_alarm", vehicle, s0, s1, "sos"))
            elif sos:
                raise AssertionError("SOS trip too short")
        b.park(b.t + stay)
        if back:
            _drive(b, back_pts)
            for tc, inside in _crossings(city, b.legs[legs_before:]):
                if not inside:
                    t_out = tc
                elif violation == "order_wrong_city":
                    found.append(
                        Violation("order_mismatch", vehicle, t_out, tc, "order_wrong_city")
                    )
                else:
                    found.append(Violation("out_of_area", vehicle, t_out, tc, "out_of_area"))
            far = out_pts[-1]
            what = "out_of_city" if path is not None else "ordinary"
            trips.append(Trip(depart, b.t, what, far[0], far[1]))
        return True

    def stay_len(lo: int, hi: int) -> int:
        return rng.randint(lo * MIN, hi * MIN)

    # Back to the lot first thing if the vehicle spent the night elsewhere.
    if math.hypot(b.x - lot.x, b.y - lot.y) > 1.0:
        b.park((win[0][0] if win else day_start + 9 * HOUR) + rng.randint(margin, 2 * margin))
        t_back = b.t
        _drive(b, route(city, b.x, b.y, lot.x, lot.y))
        if not win:
            # A rest day (no working window): that drive back is itself off hours.
            found.append(Violation("off_hours", vehicle, t_back, b.t, "return_on_rest_day"))
    home = (lot.x, lot.y)
    for k, (w0, w1) in enumerate(win):
        first, last = k == 0, k == len(win) - 1
        if first and violation == "speeding":
            a = city.arterial_every * city.block_m
            side = -1.0 if lot.x > 0 else 1.0
            dest = (side * 0.6 * city.n_half * city.block_m, round(lot.y / a) * a + a)
            dest = (round(dest[0] / city.block_m) * city.block_m, dest[1])
            if not trip_out_back(
                dest, w0, w1, stay_len(10, 30), fast=params.limit_kmh + rng.uniform(20, 30)
            ):
                raise AssertionError("speeding trip does not fit the morning")
        elif first and violation in ("out_of_area", "order_wrong_city"):
            # Out along the shortest road that leaves the real city boundary, 2.5 km past it.
            path = city.exit_path(org, beyond_m=2500.0)
            if not trip_out_back(path[-1], w0, w1, stay_len(10, 20), path=path):
                raise AssertionError("out-of-area trip does not fit the morning")
        elif first and violation == "sos":
            dest = _dest(city, rng, home, 0.7)
            while math.hypot(dest[0] - lot.x, dest[1] - lot.y) < 4 * city.block_m:
                dest = _dest(city, rng, home, 0.7)
            if not trip_out_back(dest, w0, w1, stay_len(10, 30), sos=True):
                raise AssertionError("SOS trip does not fit the morning")
        elif last and violation == "forbidden_zone":
            place = city.places[vehicle % len(city.places)]
            corner = (place.x - city.block_m / 2, place.y - city.block_m / 2)
            depart = w0 + rng.randint(margin, margin + 20 * MIN)
            b.park(depart)
            _drive(b, route(city, b.x, b.y, *corner))
            # The driveway: 15 km/h from the corner to the place, in a straight line.
            d = math.hypot(place.x - corner[0], place.y - corner[1])
            enter = b.t + round((d - place.radius_m) / (15 / 3.6) * 1000)
            b.go(place.x, place.y, 15.0)
            b.park(b.t + stay_len(25, 40))
            t_leave = b.t
            b.go(*corner, 15.0)
            leave = t_leave + round(place.radius_m / (15 / 3.6) * 1000)
            found.append(
                Violation(
                    "forbidden_zone", vehicle, enter, leave, "forbidden_zone", {"fence": place.id}
                )
            )
            _drive(b, route(city, b.x, b.y, lot.x, lot.y))
            if b.t + margin > w1:
                raise AssertionError("banned-place trip does not fit the afternoon")
        elif last and violation == "no_return":
            dest = _dest(city, rng, home, 0.7)
            if not trip_out_back(dest, w0, w1, 0, back=False):
                raise AssertionError("no-return trip does not fit the afternoon")
            night = day_start + params.night_start_min * MIN
            morning = day_end + params.night_end_min * MIN
            found.append(
                Violation("parking_violation", vehicle, max(night, b.t), morning, "no_return")
            )
        elif first and violation == "order_missing":
            for _ in range(20):
                dest = _dest(city, rng, home, 0.7)
                if trip_out_back(dest, w0, w1, stay_len(25, 45)):
                    t0, t1 = trips[-1].t0, trips[-1].t1
                    found.append(Violation("no_order", vehicle, t0, t1, "order_missing"))
                    break
            else:
                raise AssertionError("trip without an order does not fit the morning")
        elif rng.random() < 0.75:
            for _ in range(5):
                dest = _dest(city, rng, home, 0.7)
                loss = params.signal_loss and first
                if trip_out_back(dest, w0, w1, stay_len(15, 60), loss=loss):
                    break
        if violation == "offline" and first:
            # Silent over the lunch break, parked at the lot.
            s0 = w1 + rng.randint(10 * MIN, 20 * MIN)
            s1 = s0 + rng.randint(40 * MIN, 70 * MIN)
            b.park(s1 + MIN)
            silences.append(Silence(s0, s1, False))
            found.append(Violation("offline", vehicle, s0, s1, "offline"))
    evening = ("off_hours", "order_rejected", "order_approved", "order_late")
    if violation in evening:
        # An evening errand, outside every window, back in the lot before the night.
        t_go = day_start + 19 * HOUR + rng.randint(0, 60 * MIN)
        b.park(t_go)
        dest = _dest(city, rng, home, 0.5)
        if violation != "off_hours":  # far enough for no_order's 2 km, whatever the order
            while math.hypot(dest[0] - lot.x, dest[1] - lot.y) < 3000.0:
                dest = _dest(city, rng, home, 0.5)
        _drive(b, route(city, b.x, b.y, *dest))
        _drive(b, route(city, b.x, b.y, lot.x, lot.y))
        trips.append(Trip(t_go, b.t, "evening", dest[0], dest[1]))
        kinds = ("off_hours",) if violation == "off_hours" else ORDER_VIOLATIONS[violation]
        for kind in kinds:
            covered = {"covered": violation == "order_late"} if violation != "off_hours" else {}
            found.append(Violation(kind, vehicle, t_go, b.t, violation, covered))
    b.park(day_end)
    return DayPlan(b.legs, spells, silences, found, b.x, b.y, trips)
