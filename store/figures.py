"""Pure cores behind track playback and the daily board: simplification and daily figures.

Arrays in, arrays out; no I/O, no clock. Each vectorized function has a plain
scalar twin (``*_reference``) that the tests compare it with on random input.

Definitions (what the board calls 里程 / 出行数 / 行驶时长):

- a point is *moving* as :func:`fleet.vehicle_state.moving` says (ACC on, speed at
  least ``moving_kmh``, the configured ``[vehicle_state] moving_speed_kmh``);
- **mileage** sums the great-circle distance between consecutive points of one
  vehicle where either end is moving (parked GPS drift does not count) and the
  implied speed is plausible (at most ``max_kmh``: a GPS jump does not count);
- **driving time** sums the time from a moving point to the next point, unless
  that gap is longer than ``max_gap_ms`` (missing data is not driving);
- a **trip** (出行) is a run of moving points; a pause of more than
  ``stop_gap_ms`` between two moving points starts a new trip, so a red light
  does not split a trip and a lunch stop does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.vehicle_state import moving as is_moving
from fleet.vehicle_state import moving_scalar

__all__ = [
    "EARTH_RADIUS_M",
    "DailyFigures",
    "daily_figures",
    "daily_figures_reference",
    "haversine_m",
    "project_m",
    "simplify",
    "simplify_reference",
]

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)

Array = npt.NDArray[Any]
DailyFigures = dict[str, Array]


def haversine_m(lat1: Array, lon1: Array, lat2: Array, lon2: Array) -> Array:
    """Great-circle distance in metres, element-wise."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def project_m(lat: Array, lon: Array) -> tuple[Array, Array]:
    """Local equirectangular projection to metres around the track's mean latitude.

    Good to well under a metre over a city-sized track, which is all a
    simplification tolerance in metres needs.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.size == 0:
        return lat.copy(), lon.copy()
    k = math.radians(1.0) * EARTH_RADIUS_M
    lat0 = float(np.nanmean(lat)) if np.isfinite(lat).any() else 0.0
    return lon * (k * math.cos(math.radians(lat0))), lat * k


def simplify(x: Array, y: Array, tolerance_m: float) -> Array:
    """Douglas–Peucker: indices (ascending) of the points to keep, coordinates in metres.

    Points with a NaN coordinate are never kept. The first and last finite
    points are always kept. Iterative (an explicit stack), one vectorized
    distance computation per segment.
    """
    finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if finite.size <= 2 or not tolerance_m > 0:
        return finite
    xs, ys = np.asarray(x, dtype=np.float64)[finite], np.asarray(y, dtype=np.float64)[finite]
    keep = np.zeros(finite.size, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, finite.size - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        dx, dy = xs[b] - xs[a], ys[b] - ys[a]
        px, py = xs[a + 1 : b] - xs[a], ys[a + 1 : b] - ys[a]
        length = math.sqrt(dx * dx + dy * dy)
        # Zero-length chord (the track came back to its start): distance to the point.
        d = np.sqrt(px * px + py * py) if length == 0.0 else np.abs(px * dy - py * dx) / length
        i = int(np.argmax(d))
        if d[i] > tolerance_m:
            m = a + 1 + i
            keep[m] = True
            stack.append((m, b))
            stack.append((a, m))
    return finite[keep]


def simplify_reference(x: Array, y: Array, tolerance_m: float) -> Array:
    """Scalar, recursive twin of :func:`simplify`."""
    pts = [
        (i, float(xi), float(yi))
        for i, (xi, yi) in enumerate(
            zip(np.asarray(x).tolist(), np.asarray(y).tolist(), strict=True)
        )
        if math.isfinite(xi) and math.isfinite(yi)
    ]
    if len(pts) <= 2 or not tolerance_m > 0:
        return np.array([p[0] for p in pts], dtype=np.int64)
    keep = {0, len(pts) - 1}

    def rec(a: int, b: int) -> None:
        if b - a < 2:
            return
        dx, dy = pts[b][1] - pts[a][1], pts[b][2] - pts[a][2]
        length = math.sqrt(dx * dx + dy * dy)
        best, best_d = -1, -1.0
        for j in range(a + 1, b):
            px, py = pts[j][1] - pts[a][1], pts[j][2] - pts[a][2]
            d = math.sqrt(px * px + py * py) if length == 0.0 else abs(px * dy - py * dx) / length
            if d > best_d:
                best, best_d = j, d
        if best_d > tolerance_m:
            keep.add(best)
            rec(a, best)
            rec(best, b)

    rec(0, len(pts) - 1)
    return np.array([pts[j][0] for j in sorted(keep)], dtype=np.int64)


def daily_figures(
    vehicle: Array,
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    *,
    moving_kmh: float = 5.0,
    stop_gap_ms: int = 300_000,
    max_gap_ms: int = 600_000,
    max_kmh: float = 250.0,
) -> DailyFigures:
    """Mileage (km), trips and driving time (s) per vehicle.

    Rows must be sorted by (vehicle, ts). Returns ``vehicle`` (the distinct
    vehicles, ascending) and ``mileage_km``, ``trips``, ``driving_s`` aligned
    with it. NaN coordinates make a segment count no distance; NaN speed is
    not moving.
    """
    vehicle = np.asarray(vehicle)
    n = vehicle.shape[0]
    if n == 0:
        return {
            "vehicle": vehicle[:0].copy(),
            "mileage_km": np.zeros(0),
            "trips": np.zeros(0, dtype=np.int64),
            "driving_s": np.zeros(0),
        }
    ts = np.asarray(ts, dtype=np.int64)
    moving = is_moving(np.asarray(speed), np.asarray(acc), moving_kmh)
    starts = np.flatnonzero(np.r_[True, vehicle[1:] != vehicle[:-1]])
    vehicles = vehicle[starts]
    seg_of = np.cumsum(np.r_[True, vehicle[1:] != vehicle[:-1]])[1:] - 1  # group of segment end
    same = vehicle[1:] == vehicle[:-1]
    dt = (ts[1:] - ts[:-1]).astype(np.float64)
    dist = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        kmh = np.where(dt > 0, dist / np.maximum(dt, 1.0) * 3600.0, np.inf)
    counted = same & (moving[:-1] | moving[1:]) & np.isfinite(dist) & (kmh <= max_kmh)
    groups = vehicles.shape[0]
    mileage = np.bincount(seg_of[counted], weights=dist[counted], minlength=groups) / 1000.0
    driving = same & moving[:-1] & (dt <= max_gap_ms)
    driving_s = np.bincount(seg_of[driving], weights=dt[driving], minlength=groups) / 1000.0
    # Trips: a moving point that is its vehicle's first moving point, or follows the
    # previous moving point of the same vehicle by more than stop_gap_ms.
    mi = np.flatnonzero(moving)
    mv, mt = vehicle[mi], ts[mi]
    new_trip = np.r_[True, (mv[1:] != mv[:-1]) | (mt[1:] - mt[:-1] > stop_gap_ms)]
    group_of_row = np.cumsum(np.r_[True, vehicle[1:] != vehicle[:-1]]) - 1
    trips = np.bincount(group_of_row[mi][new_trip[: mi.size]], minlength=groups).astype(np.int64)
    return {"vehicle": vehicles, "mileage_km": mileage, "trips": trips, "driving_s": driving_s}


def daily_figures_reference(
    vehicle: Array,
    ts: Array,
    lat: Array,
    lon: Array,
    speed: Array,
    acc: Array,
    *,
    moving_kmh: float = 5.0,
    stop_gap_ms: int = 300_000,
    max_gap_ms: int = 600_000,
    max_kmh: float = 250.0,
) -> DailyFigures:
    """Scalar twin of :func:`daily_figures` (one Python loop over the rows)."""
    out: dict[int, list[float]] = {}
    order: list[int] = []
    prev: tuple[int, int, float, float, bool] | None = None
    last_moving: dict[int, int] = {}
    for v, t, la, lo, sp, ac in zip(
        np.asarray(vehicle).tolist(),
        np.asarray(ts).tolist(),
        np.asarray(lat, dtype=np.float64).tolist(),
        np.asarray(lon, dtype=np.float64).tolist(),
        np.asarray(speed, dtype=np.float64).tolist(),
        np.asarray(acc).tolist(),
        strict=True,
    ):
        mv = moving_scalar(sp, bool(ac), moving_kmh)
        if v not in out:
            out[v] = [0.0, 0.0, 0.0]
            order.append(v)
            prev = None
        acc_ = out[v]
        if prev is not None:
            _, pt, pla, plo, pmv = prev
            dt = float(t - pt)
            d = float(
                haversine_m(np.array([pla]), np.array([plo]), np.array([la]), np.array([lo]))[0]
            )
            kmh = d / max(dt, 1.0) * 3600.0 if dt > 0 else math.inf
            if (pmv or mv) and math.isfinite(d) and kmh <= max_kmh:
                acc_[0] += d
            if pmv and dt <= max_gap_ms:
                acc_[2] += dt
        if mv:
            if v not in last_moving or t - last_moving[v] > stop_gap_ms:
                acc_[1] += 1
            last_moving[v] = t
        prev = (v, t, la, lo, mv)
    return {
        "vehicle": np.array(order, dtype=np.asarray(vehicle).dtype),
        "mileage_km": np.array([out[v][0] / 1000.0 for v in order]),
        "trips": np.array([int(out[v][1]) for v in order], dtype=np.int64),
        "driving_s": np.array([out[v][2] / 1000.0 for v in order]),
    }
