from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geofence.datum import (
    gcj02_to_wgs84,
    gcj02_to_wgs84_scalar,
    wgs84_to_gcj02,
    wgs84_to_gcj02_scalar,
)
from geofence.distance import segment_distance_m

lons = st.one_of(st.floats(70, 140), st.just(np.nan))
lats = st.one_of(st.floats(0, 56), st.just(np.nan))


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 30), elements=lons), st.data())
def test_vectorized_matches_scalar(lon: np.ndarray, data: st.DataObject) -> None:
    lat = data.draw(hnp.arrays(np.float64, lon.shape, elements=lats))
    for fast, slow in (
        (wgs84_to_gcj02, wgs84_to_gcj02_scalar),
        (gcj02_to_wgs84, gcj02_to_wgs84_scalar),
    ):
        x, y = fast(lon, lat)
        ref = [slow(a, b) for a, b in zip(lon.tolist(), lat.tolist(), strict=True)]
        rx = np.array([r[0] for r in ref], dtype=np.float64)
        ry = np.array([r[1] for r in ref], dtype=np.float64)
        np.testing.assert_allclose(x, rx, rtol=0, atol=1e-9)
        np.testing.assert_allclose(y, ry, rtol=0, atol=1e-9)


def test_round_trip_well_under_a_metre() -> None:
    rng = np.random.default_rng(0)
    lon = rng.uniform(73, 135, 20_000)
    lat = rng.uniform(18, 53, 20_000)
    gx, gy = wgs84_to_gcj02(lon, lat)
    wx, wy = gcj02_to_wgs84(gx, gy)
    err = segment_distance_m(wx, wy, lon, lat, lon, lat)
    assert err.max() < 0.001  # under a millimetre


def test_offset_size_in_guangan_and_identity_abroad() -> None:
    gx, gy = wgs84_to_gcj02(np.array([106.633, 2.35]), np.array([30.456, 48.85]))
    shift = segment_distance_m(
        gx[:1],
        gy[:1],
        np.array([106.633]),
        np.array([30.456]),
        np.array([106.633]),
        np.array([30.456]),
    )
    assert 100 < shift[0] < 700  # GCJ-02 moves points by a few hundred metres
    assert (gx[1], gy[1]) == (2.35, 48.85)
    assert wgs84_to_gcj02_scalar(2.35, 48.85) == (2.35, 48.85)
    x, y = wgs84_to_gcj02(np.array([np.nan]), np.array([30.0]))
    assert np.isnan(x[0]) and y[0] == 30.0
