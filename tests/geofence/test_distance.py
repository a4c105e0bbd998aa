"""Circles and corridors against a plain geodesic reference (Vincenty's inverse on WGS-84)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from geofence.distance import segment_distance_m, segment_distance_m_scalar
from geofence.fence import Fence
from geofence.index import FenceIndex, membership_reference

_A = 6378137.0
_F = 1 / 298.257223563
_B = _A * (1 - _F)


def vincenty_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Geodesic distance on the WGS-84 ellipsoid (Vincenty 1975, inverse problem)."""
    if lon1 == lon2 and lat1 == lat2:
        return 0.0
    u1 = math.atan((1 - _F) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - _F) * math.tan(math.radians(lat2)))
    big_l = math.radians(lon2 - lon1)
    lam = big_l
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        ss = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        cs = su1 * su2 + cu1 * cu2 * cl
        sigma = math.atan2(ss, cs)
        sa = cu1 * cu2 * sl / ss
        c2a = 1 - sa * sa
        c2sm = cs - 2 * su1 * su2 / c2a if c2a else 0.0
        c = _F / 16 * c2a * (4 + _F * (4 - 3 * c2a))
        prev = lam
        lam = big_l + (1 - c) * _F * sa * (
            sigma + c * ss * (c2sm + c * cs * (-1 + 2 * c2sm * c2sm))
        )
        if abs(lam - prev) < 1e-13:
            break
    u2_ = c2a * (_A * _A - _B * _B) / (_B * _B)
    a_ = 1 + u2_ / 16384 * (4096 + u2_ * (-768 + u2_ * (320 - 175 * u2_)))
    b_ = u2_ / 1024 * (256 + u2_ * (-128 + u2_ * (74 - 47 * u2_)))
    ds = (
        b_
        * ss
        * (
            c2sm
            + b_
            / 4
            * (
                cs * (-1 + 2 * c2sm * c2sm)
                - b_ / 6 * c2sm * (-3 + 4 * ss * ss) * (-3 + 4 * c2sm * c2sm)
            )
        )
    )
    return _B * a_ * (sigma - ds)


def geodesic_to_polyline_m(lon: float, lat: float, path: list[tuple[float, float]]) -> float:
    """Distance to a polyline: golden-section search of the Vincenty distance along each leg."""
    best = math.inf
    for (ax, ay), (bx, by) in itertools.pairwise(path):

        def f(t: float, ax: float = ax, ay: float = ay, bx: float = bx, by: float = by) -> float:
            return vincenty_m(lon, lat, ax + t * (bx - ax), ay + t * (by - ay))

        lo, hi = 0.0, 1.0
        g = (math.sqrt(5) - 1) / 2
        for _ in range(80):
            m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
            if f(m1) < f(m2):
                hi = m2
            else:
                lo = m1
        best = min(best, f(0.0), f(1.0), f((lo + hi) / 2))
    return best


@pytest.mark.parametrize("dist_m", [10.0, 500.0, 2000.0, 10_000.0])
def test_point_distance_matches_vincenty(dist_m: float) -> None:
    rng = np.random.default_rng(int(dist_m))
    lat0 = rng.uniform(18, 50, 50)
    lon0 = rng.uniform(75, 130, 50)
    az = rng.uniform(0, 2 * np.pi, 50)
    lon1 = lon0 + dist_m * np.sin(az) / (111_320 * np.cos(np.radians(lat0)))
    lat1 = lat0 + dist_m * np.cos(az) / 110_574
    ours = segment_distance_m(lon1, lat1, lon0, lat0, lon0, lat0)
    ref = np.array([vincenty_m(*v) for v in zip(lon1, lat1, lon0, lat0, strict=True)])
    tol = 0.001 if dist_m <= 2000 else 0.01
    np.testing.assert_allclose(ours, ref, atol=tol, rtol=0)


def test_vectorized_distance_matches_scalar() -> None:
    rng = np.random.default_rng(9)
    args = [
        rng.uniform(106, 107, 200),
        rng.uniform(30, 31, 200),
        rng.uniform(106, 107, 200),
        rng.uniform(30, 31, 200),
        rng.uniform(106, 107, 200),
        rng.uniform(30, 31, 200),
    ]
    args[4][:20] = args[2][:20]  # degenerate segments (circles)
    args[5][:20] = args[3][:20]
    ours = segment_distance_m(*args)
    ref = [segment_distance_m_scalar(*map(float, v)) for v in zip(*args, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-9)
    assert np.isnan(segment_distance_m(*[np.array([np.nan])] + [np.array([1.0])] * 5))[0]


def test_circle_membership_against_geodesic() -> None:
    center = (106.633, 30.456)
    circle = Fence.circle("c", "c", "o", "lot", center, 300.0)
    idx = FenceIndex.build([circle])
    rng = np.random.default_rng(4)
    r = rng.uniform(250, 350, 600)
    az = rng.uniform(0, 2 * np.pi, 600)
    x = center[0] + r * np.sin(az) / (111_320 * math.cos(math.radians(center[1])))
    y = center[1] + r * np.cos(az) / 110_574
    p, _ = idx.membership(x, y)
    inside = np.zeros(600, bool)
    inside[p] = True
    ref = np.array([vincenty_m(a, b, *center) for a, b in zip(x, y, strict=True)])
    clear = np.abs(ref - 300.0) > 0.001  # 1 mm band: the formula's stated accuracy
    assert clear.sum() > 590
    np.testing.assert_array_equal(inside[clear], ref[clear] <= 300.0)
    _check_reference([circle], x, y)


def test_corridor_membership_against_geodesic() -> None:
    path = [(106.60, 30.45), (106.615, 30.46), (106.62, 30.475)]
    cor = Fence.corridor("r", "route", "o", "speed_zone", path, 40.0, speed_limit_kmh=30)
    idx = FenceIndex.build([cor])
    rng = np.random.default_rng(8)
    t = rng.uniform(0, 1, 300)
    leg = rng.integers(0, 2, 300)
    ax = np.array([p[0] for p in path])
    ay = np.array([p[1] for p in path])
    bx, by = ax[leg] + t * (ax[leg + 1] - ax[leg]), ay[leg] + t * (ay[leg + 1] - ay[leg])
    off = rng.uniform(-60, 60, 300)
    az = rng.uniform(0, 2 * np.pi, 300)
    x = bx + off * np.sin(az) / 96_000
    y = by + off * np.cos(az) / 110_850
    p, _ = idx.membership(x, y)
    inside = np.zeros(300, bool)
    inside[p] = True
    ref = np.array([geodesic_to_polyline_m(a, b, path) for a, b in zip(x, y, strict=True)])
    clear = np.abs(ref - 40.0) > 0.01
    assert clear.sum() > 290
    np.testing.assert_array_equal(inside[clear], ref[clear] <= 40.0)
    _check_reference([cor], x, y)


def test_long_corridor_segments_are_split() -> None:
    cor = Fence.corridor("r", "r", "o", "lot", [(106.0, 30.0), (106.5, 30.3)], 30.0)
    assert len(cor.segments) > 20  # ~57 km in pieces of at most 2 km
    mid = (106.25, 30.15)
    assert cor.covers(*mid)


def _check_reference(fences: list[Fence], x: np.ndarray, y: np.ndarray) -> None:
    got = FenceIndex.build(fences).membership(x, y)
    want = membership_reference(fences, x, y)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
