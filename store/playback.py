"""Stops and trips of one vehicle's track, for playback (轨迹回放): a pure core over columns.

The words mean what the daily board means by them (:mod:`store.figures`):

- a point is *moving* as :func:`fleet.vehicle_state.moving` says (ACC on, speed at
  least ``moving_kmh``);
- a **trip** (出行) is a run of moving points; a pause of more than ``stop_gap_ms``
  between two moving points (parked, or no reports at all) ends it. It runs from its
  first to its last moving point. Its ``km`` sums the segments the board counts as
  mileage (either end moving, plausible speed), each given to the trip of its moving end,
  so the trips of a day add up to the board's mileage for that day;
- a **stop** is each such pause, and the time before the first trip and after the last
  one when it is longer than ``stop_gap_ms``; with no moving point at all, the whole
  track (when that long). Its position is where the vehicle stood: the first point after
  the trip that led to it (the track's first point for a stop at the start).

:func:`stops_and_trips` is vectorized; :func:`stops_and_trips_reference` is its scalar twin.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.vehicle_state import moving as is_moving
from fleet.vehicle_state import moving_scalar
from store.figures import haversine_m

__all__ = ["stops_and_trips", "stops_and_trips_reference"]

Array = npt.NDArray[Any]
Columns = dict[str, Array]


def _empty_stops() -> Columns:
    return {
        "start": np.zeros(0, dtype=np.int64),
        "end": np.zeros(0, dtype=np.int64),
        "lat": np.zeros(0),
        "lon": np.zeros(0),
    }


def stops_and_trips(
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    *,
    moving_kmh: float = 5.0,
    stop_gap_ms: int = 300_000,
    max_kmh: float = 250.0,
) -> tuple[Columns, Columns]:
    """(stops, trips) of a track sorted by time.

    stops: ``start``, ``end`` (epoch ms), ``lat``, ``lon``; trips: ``start``, ``end``,
    ``km``, ``max_speed_kmh``. NaN speed is not moving; NaN coordinates add no distance.
    """
    ts = np.asarray(ts, dtype=np.int64)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    sp = np.asarray(speed, dtype=np.float64)
    n = ts.shape[0]
    moving = is_moving(sp, np.asarray(acc), moving_kmh)
    mi = np.flatnonzero(moving)
    if n == 0:
        return _empty_stops(), {
            "start": np.zeros(0, dtype=np.int64),
            "end": np.zeros(0, dtype=np.int64),
            "km": np.zeros(0),
            "max_speed_kmh": np.zeros(0),
        }
    if mi.size == 0:
        stops = _empty_stops()
        if ts[-1] - ts[0] > stop_gap_ms:
            stops = {
                "start": ts[:1].copy(),
                "end": ts[-1:].copy(),
                "lat": lat[:1].copy(),
                "lon": lon[:1].copy(),
            }
        return stops, {
            "start": np.zeros(0, dtype=np.int64),
            "end": np.zeros(0, dtype=np.int64),
            "km": np.zeros(0),
            "max_speed_kmh": np.zeros(0),
        }
    new_trip = np.r_[True, np.diff(ts[mi]) > stop_gap_ms]
    first = mi[new_trip]  # first moving point of each trip
    last = mi[np.r_[new_trip[1:], True]]  # last moving point of each trip
    trip_of = np.cumsum(new_trip) - 1  # trip of each moving point
    k = first.size
    # Mileage segments (i -> i+1), owned by the trip of their moving end.
    dt = (ts[1:] - ts[:-1]).astype(np.float64)
    dist = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        kmh = np.where(dt > 0, dist / np.maximum(dt, 1.0) * 3600.0, np.inf)
    counted = (moving[:-1] | moving[1:]) & np.isfinite(dist) & (kmh <= max_kmh)
    trip_of_row = np.full(n, -1, dtype=np.int64)
    trip_of_row[mi] = trip_of
    owner = np.where(moving[:-1], trip_of_row[:-1], trip_of_row[1:])
    km = np.bincount(owner[counted], weights=dist[counted], minlength=k) / 1000.0
    vmax = np.full(k, -np.inf)
    np.maximum.at(vmax, trip_of, sp[mi])
    trips = {"start": ts[first], "end": ts[last], "km": km, "max_speed_kmh": vmax}
    # Stops: before the first trip, between trips, after the last one.
    s_start = np.r_[ts[0], ts[last]]
    s_end = np.r_[ts[first], ts[-1]]
    s_at = np.r_[0, np.minimum(last + 1, n - 1)]
    keep = s_end - s_start > stop_gap_ms
    stops = {
        "start": s_start[keep],
        "end": s_end[keep],
        "lat": lat[s_at[keep]],
        "lon": lon[s_at[keep]],
    }
    return stops, trips


def stops_and_trips_reference(
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    *,
    moving_kmh: float = 5.0,
    stop_gap_ms: int = 300_000,
    max_kmh: float = 250.0,
) -> tuple[list[tuple[int, int, float, float]], list[tuple[int, int, float, float]]]:
    """Scalar twin of :func:`stops_and_trips`: lists of (start, end, lat, lon) stops and
    (start, end, km, max_speed_kmh) trips."""
    t = [int(x) for x in np.asarray(ts).tolist()]
    la = np.asarray(lat, dtype=np.float64).tolist()
    lo = np.asarray(lon, dtype=np.float64).tolist()
    sp = np.asarray(speed, dtype=np.float64).tolist()
    ac = [bool(x) for x in np.asarray(acc).tolist()]
    n = len(t)
    moving = [moving_scalar(sp[i], ac[i], moving_kmh) for i in range(n)]
    trips: list[list[Any]] = []  # [start, end, metres, vmax, last index]
    trip_at: dict[int, int] = {}
    last_t: int | None = None
    for i in range(n):
        if not moving[i]:
            continue
        if last_t is None or t[i] - last_t > stop_gap_ms:
            trips.append([t[i], t[i], 0.0, -math.inf, i])
        tr = trips[-1]
        tr[1], tr[3], tr[4] = t[i], max(tr[3], sp[i]), i
        trip_at[i] = len(trips) - 1
        last_t = t[i]
    for i in range(n - 1):
        if not (moving[i] or moving[i + 1]):
            continue
        d = float(haversine_m(np.array([la[i]]), np.array([lo[i]]), la[i + 1], lo[i + 1])[0])
        dt = t[i + 1] - t[i]
        kmh = d / max(dt, 1.0) * 3600.0 if dt > 0 else math.inf
        if math.isfinite(d) and kmh <= max_kmh:
            trips[trip_at[i] if moving[i] else trip_at[i + 1]][2] += d
    stops: list[tuple[int, int, float, float]] = []
    if n and not trips:
        if t[-1] - t[0] > stop_gap_ms:
            stops.append((t[0], t[-1], la[0], lo[0]))
    elif trips:
        bounds = [(t[0], trips[0][0], 0)]
        for a, b in itertools.pairwise(trips):
            bounds.append((a[1], b[0], min(a[4] + 1, n - 1)))
        bounds.append((trips[-1][1], t[-1], min(trips[-1][4] + 1, n - 1)))
        for s, e, at in bounds:
            if e - s > stop_gap_ms:
                stops.append((s, e, la[at], lo[at]))
    return stops, [(a, b, m / 1000.0, v) for a, b, m, v, _ in trips]
