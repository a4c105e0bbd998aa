"""The daily rollup of one vehicle-day: pure, vectorized, with scalar twins.

Arrays in, arrays out; no I/O, no clock. Rows are one day's positions sorted by
(vehicle, ts). Definitions (the same as the board's, :mod:`store.figures`, so that
the rollup and today's board agree):

- a point is *moving* per :func:`fleet.vehicle_state.moving` (ACC on, speed at least
  ``[vehicle_state] moving_speed_kmh``, 5 km/h by default) — the map's, the rules' and
  the board's one definition;
- a *segment* is a point and the next point of the same vehicle; ``dt`` its duration;
- **km** sums the great-circle (haversine) length of segments where either end is
  moving, whose implied speed is at most ``max_kmh`` (default 250 km/h: a longer hop
  is a GPS jump and counts nothing) and whose coordinates are finite;
- a segment is *known* when ``dt <= max_gap_ms`` (``[vehicle_state] offline_after_s``,
  600 s by default: the offline threshold): a longer silence is not counted as anything;
- **driving** is the known segments starting at a moving point; **idling** those
  starting at a point with ACC on but not moving; **outside the lot** those starting
  outside the vehicle's lot (only for vehicles that have one); **online** all known
  segments — the online share is online time over the day's elapsed length;
- a **trip** (出行) is a run of moving points; a pause of more than ``stop_gap_ms``
  (300 s) between moving points starts a new one. A trip spans from its first to
  its last moving point;
- a trip is **covered** when an order of the same vehicle overlaps its span
  (``order.start <= trip.end`` and ``order.end >= trip.start``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.vehicle_state import VehicleStateConfig, moving, moving_scalar
from store.figures import haversine_m

__all__ = [
    "ROLLUP_FIELDS",
    "RollupParams",
    "alarm_facts",
    "track_rollup",
    "track_rollup_reference",
    "trip_coverage",
    "trip_coverage_reference",
]

Array = npt.NDArray[Any]

#: Per-vehicle outputs of :func:`track_rollup` (besides ``vehicle``), in order.
ROLLUP_FIELDS = ("km", "trips", "driving_s", "idle_s", "outside_s", "online_s", "points")


_STATE = VehicleStateConfig()


@dataclass(frozen=True, slots=True)
class RollupParams:
    moving_kmh: float = _STATE.moving_speed_kmh
    stop_gap_ms: int = 300_000
    max_gap_ms: int = _STATE.offline_after_ms
    max_kmh: float = 250.0

    @classmethod
    def of(cls, state: VehicleStateConfig) -> RollupParams:
        """The configured ``[vehicle_state]`` thresholds (moving speed, offline gap)."""
        return cls(moving_kmh=state.moving_speed_kmh, max_gap_ms=state.offline_after_ms)


def track_rollup(
    vehicle: Array,
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    in_lot: Array,
    params: RollupParams = RollupParams(),
) -> dict[str, Array]:
    """Per distinct vehicle (ascending): :data:`ROLLUP_FIELDS`, plus the trips as
    ``trip_group`` (index into ``vehicle``), ``trip_start``, ``trip_end`` (ms).

    ``in_lot`` is True for a point inside the vehicle's own lot, and True everywhere
    for a vehicle without a lot (so it is never "outside").
    """
    vehicle = np.asarray(vehicle)
    n = vehicle.shape[0]
    ts = np.asarray(ts, dtype=np.int64)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    acc_b = np.asarray(acc, dtype=bool)
    lot = np.asarray(in_lot, dtype=bool)
    is_moving = moving(np.asarray(speed), acc_b, params.moving_kmh)
    first = np.r_[True, vehicle[1:] != vehicle[:-1]] if n else np.zeros(0, bool)
    group = np.cumsum(first) - 1
    vehicles = vehicle[first]
    g = int(vehicles.shape[0])
    out: dict[str, Array] = {"vehicle": vehicles}
    if n == 0:
        for f in ROLLUP_FIELDS:
            out[f] = np.zeros(0, dtype=np.int64 if f in ("trips", "points") else np.float64)
        out["trip_group"] = np.zeros(0, np.int64)
        out["trip_start"] = out["trip_end"] = np.zeros(0, np.int64)
        return out
    same = ~first[1:]
    seg_g = group[:-1]
    dt = (ts[1:] - ts[:-1]).astype(np.float64)
    dist = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        kmh = np.where(dt > 0, dist / np.maximum(dt, 1.0) * 3600.0, np.inf)
    counted = same & (is_moving[:-1] | is_moving[1:]) & np.isfinite(dist) & (kmh <= params.max_kmh)
    known = same & (dt <= params.max_gap_ms)

    def total(mask: Array, w: Array) -> Array:
        return np.bincount(seg_g[mask], weights=w[mask], minlength=g)

    out["km"] = total(counted, dist) / 1000.0
    m0 = is_moving[:-1]
    out["driving_s"] = total(known & m0, dt) / 1000.0
    out["idle_s"] = total(known & acc_b[:-1] & ~m0, dt) / 1000.0
    out["outside_s"] = total(known & ~lot[:-1], dt) / 1000.0
    out["online_s"] = total(known, dt) / 1000.0
    out["points"] = np.bincount(group, minlength=g).astype(np.int64)
    mi = np.flatnonzero(is_moving)
    mg, mt = group[mi], ts[mi]
    new = np.r_[True, (mg[1:] != mg[:-1]) | (mt[1:] - mt[:-1] > params.stop_gap_ms)]
    starts = np.flatnonzero(new[: mi.size])
    ends = np.r_[starts[1:] - 1, mi.size - 1] if starts.size else starts
    out["trips"] = np.bincount(mg[starts], minlength=g).astype(np.int64)
    out["trip_group"] = mg[starts].astype(np.int64)
    out["trip_start"] = mt[starts]
    out["trip_end"] = mt[ends]
    return out


def track_rollup_reference(
    vehicle: Array,
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    in_lot: Array,
    params: RollupParams = RollupParams(),
) -> dict[str, Array]:
    """Scalar twin of :func:`track_rollup` (one Python loop over the rows)."""
    order: list[Any] = []
    acc_: dict[Any, list[float]] = {}
    trips: list[tuple[int, int, int]] = []  # (group, start, end)
    prev: tuple[Any, int, float, float, bool, bool, bool] | None = None
    last_moving: int | None = None
    rows = zip(
        np.asarray(vehicle).tolist(),
        np.asarray(ts, dtype=np.int64).tolist(),
        np.asarray(lat, dtype=np.float64).tolist(),
        np.asarray(lon, dtype=np.float64).tolist(),
        np.asarray(speed, dtype=np.float64).tolist(),
        np.asarray(acc, dtype=bool).tolist(),
        np.asarray(in_lot, dtype=bool).tolist(),
        strict=True,
    )
    for v, t, la, lo, sp, ac, lot in rows:
        mv = moving_scalar(sp, ac, params.moving_kmh) if not math.isnan(sp) else False
        if v not in acc_:
            acc_[v] = [0.0] * 7
            order.append(v)
            prev = None
            last_moving = None
        a = acc_[v]
        a[6] += 1
        if prev is not None:
            _, pt, pla, plo, pmv, pac, plot = prev
            dt = float(t - pt)
            d = float(
                haversine_m(np.array([pla]), np.array([plo]), np.array([la]), np.array([lo]))[0]
            )
            kmh = d / max(dt, 1.0) * 3600.0 if dt > 0 else math.inf
            if (pmv or mv) and math.isfinite(d) and kmh <= params.max_kmh:
                a[0] += d
            if dt <= params.max_gap_ms:
                a[5] += dt
                if pmv:
                    a[2] += dt
                elif pac:
                    a[3] += dt
                if not plot:
                    a[4] += dt
        if mv:
            gi = len(order) - 1
            if last_moving is None or t - last_moving > params.stop_gap_ms:
                a[1] += 1
                trips.append((gi, t, t))
            else:
                trips[-1] = (gi, trips[-1][1], t)
            last_moving = t
        prev = (v, t, la, lo, mv, ac, lot)
    dtype = np.asarray(vehicle).dtype
    return {
        "vehicle": np.array(order, dtype=dtype),
        "km": np.array([acc_[v][0] / 1000.0 for v in order]),
        "trips": np.array([int(acc_[v][1]) for v in order], dtype=np.int64),
        "driving_s": np.array([acc_[v][2] / 1000.0 for v in order]),
        "idle_s": np.array([acc_[v][3] / 1000.0 for v in order]),
        "outside_s": np.array([acc_[v][4] / 1000.0 for v in order]),
        "online_s": np.array([acc_[v][5] / 1000.0 for v in order]),
        "points": np.array([int(acc_[v][6]) for v in order], dtype=np.int64),
        "trip_group": np.array([t[0] for t in trips], dtype=np.int64),
        "trip_start": np.array([t[1] for t in trips], dtype=np.int64),
        "trip_end": np.array([t[2] for t in trips], dtype=np.int64),
    }


_OFF = np.int64(10**13)  # > any epoch ms until the year 2286: (vehicle, time) in one int64


def trip_coverage(
    trip_vehicle: Array,
    trip_start: Array,
    trip_end: Array,
    order_vehicle: Array,
    order_start: Array,
    order_end: Array,
) -> npt.NDArray[np.bool_]:
    """Per trip: does an order of the same vehicle overlap it? Vehicles are small
    non-negative ints (< 900,000), times epoch ms. O((trips + orders) log orders)."""
    tv = np.asarray(trip_vehicle, dtype=np.int64)
    if tv.size == 0 or np.asarray(order_vehicle).size == 0:
        return np.zeros(tv.size, dtype=bool)
    ov = np.asarray(order_vehicle, dtype=np.int64)
    os_ = np.asarray(order_start, dtype=np.int64)
    oe = np.asarray(order_end, dtype=np.int64)
    o = np.lexsort((os_, ov))
    ov, os_, oe = ov[o], os_[o], oe[o]
    key_start = ov * _OFF + os_
    # Within a vehicle, the latest end among orders starting so far (groups ascend).
    run_end = np.maximum.accumulate(ov * _OFF + oe)
    idx = np.searchsorted(key_start, tv * _OFF + np.asarray(trip_end, np.int64), side="right") - 1
    ok = idx >= 0
    j = np.where(ok, idx, 0)
    return np.asarray(
        ok & (ov[j] == tv) & (run_end[j] - tv * _OFF >= np.asarray(trip_start, np.int64)),
        dtype=bool,
    )


def trip_coverage_reference(
    trip_vehicle: Array,
    trip_start: Array,
    trip_end: Array,
    order_vehicle: Array,
    order_start: Array,
    order_end: Array,
) -> npt.NDArray[np.bool_]:
    """Scalar twin of :func:`trip_coverage`: every trip against every order."""
    orders = list(
        zip(
            np.asarray(order_vehicle).tolist(),
            np.asarray(order_start).tolist(),
            np.asarray(order_end).tolist(),
            strict=True,
        )
    )
    out = []
    for v, s, e in zip(
        np.asarray(trip_vehicle).tolist(),
        np.asarray(trip_start).tolist(),
        np.asarray(trip_end).tolist(),
        strict=True,
    ):
        out.append(any(ov == v and os_ <= e and oe >= s for ov, os_, oe in orders))
    return np.array(out, dtype=bool)


def _first_at(acks: Sequence[Mapping[str, Any]], pred: Any) -> int | None:
    for e in acks:
        if pred(e) and e.get("at") is not None:
            return int(e["at"])
    return None


def alarm_facts(a: Mapping[str, Any]) -> dict[str, Any]:
    """One alarm episode (the stores' dict shape) as a rollup alarm row.

    ``ack_s``: seconds from its start to the first handling entry (确认), None when
    never acknowledged; ``handle_s``: to the first entry that marked it handled or
    closed it (处理), None when not yet handled.
    """
    acks = list(a.get("acks") or [])
    if not acks and a.get("ack"):
        acks = [{**a["ack"], "action": "ack"}]
    started = int(a["started_at"])
    ack_at = _first_at(acks, lambda e: True)
    handled_at = _first_at(acks, lambda e: bool(e.get("handled")) or e.get("action") == "close")

    def secs(at: int | None) -> float | None:
        return None if at is None else max(0.0, (at - started) / 1000.0)

    return {
        "alarm_id": str(a["id"]),
        "vehicle_id": str(a["vehicle"]),
        "org": a.get("org") or "",
        "kind": str(a["kind"]),
        "severity": str(a.get("severity") or "warning"),
        "started_at": started,
        "covered": bool(a.get("covered")),
        "ack_s": secs(ack_at),
        "handle_s": secs(handled_at),
    }
