"""Pure cores: simplification and daily figures, each against its scalar twin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from store.figures import (
    daily_figures,
    daily_figures_reference,
    haversine_m,
    project_m,
    simplify,
    simplify_reference,
)

coords = st.floats(-2000.0, 2000.0) | st.just(float("nan"))


@settings(max_examples=200, deadline=None)
@given(
    xy=hnp.arrays(np.float64, st.tuples(st.integers(0, 60), st.just(2)), elements=coords),
    tol=st.sampled_from([0.0, 0.5, 5.0, 50.0, 500.0]),
)
def test_simplify_matches_reference(xy: np.ndarray, tol: float) -> None:
    x, y = xy[:, 0], xy[:, 1]
    np.testing.assert_array_equal(simplify(x, y, tol), simplify_reference(x, y, tol))


def test_simplify_straight_line_keeps_ends_and_corner() -> None:
    x = np.r_[np.arange(0.0, 100.0, 10.0), np.full(10, 100.0)]
    y = np.r_[np.zeros(10), np.arange(0.0, 100.0, 10.0)]
    keep = simplify(x, y, 1.0)
    assert keep.tolist() == [0, 10, 19]


def test_simplify_drops_nan_and_handles_empty() -> None:
    assert simplify(np.empty(0), np.empty(0), 5.0).size == 0
    keep = simplify(np.array([0.0, np.nan, 10.0]), np.array([0.0, 1.0, 0.0]), 1.0)
    assert keep.tolist() == [0, 2]


def test_project_is_metres() -> None:
    lat = np.array([30.0, 30.0, 30.001])
    lon = np.array([106.0, 106.001, 106.0])
    x, y = project_m(lat, lon)
    d_true = haversine_m(lat[:1], lon[:1], lat[1:], lon[1:])
    d_proj = np.hypot(x[1:] - x[0], y[1:] - y[0])
    np.testing.assert_allclose(d_proj, d_true, rtol=1e-3)


@st.composite
def day_of_points(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 80))
    vehicle = np.sort(
        np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.int32)
    )
    gaps = draw(st.lists(st.integers(0, 900_000), min_size=n, max_size=n))
    ts = np.cumsum(np.array(gaps, dtype=np.int64)) if n else np.empty(0, np.int64)
    lat = 30.4 + np.cumsum(draw(hnp.arrays(np.float64, n, elements=st.floats(-0.01, 0.01))))
    lon = 106.6 + np.cumsum(draw(hnp.arrays(np.float64, n, elements=st.floats(-0.01, 0.01))))
    if n and draw(st.booleans()):
        lat[draw(st.integers(0, n - 1))] = np.nan
    speed = draw(hnp.arrays(np.float32, n, elements=st.floats(0, 120, width=32)))
    acc = draw(hnp.arrays(np.bool_, n))
    return vehicle, ts, lat, lon, speed, acc


@settings(max_examples=200, deadline=None)
@given(day_of_points())
def test_daily_figures_match_reference(cols: tuple[np.ndarray, ...]) -> None:
    fast = daily_figures(*cols)
    slow = daily_figures_reference(*cols)
    np.testing.assert_array_equal(fast["vehicle"], slow["vehicle"])
    np.testing.assert_array_equal(fast["trips"], slow["trips"])
    np.testing.assert_allclose(fast["mileage_km"], slow["mileage_km"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast["driving_s"], slow["driving_s"])


def test_daily_figures_two_trips_with_lunch_break() -> None:
    # 09:00-09:30 moving every 10 s, parked until 12:00, moving 12:00-12:10.
    t1 = np.arange(0, 1800_000, 10_000)
    t2 = np.arange(10_800_000, 11_400_000, 10_000)
    ts = np.r_[t1, 1800_000, 5_000_000, 9_000_000, t2]
    n = ts.size
    moving = np.r_[np.ones(t1.size, bool), np.zeros(3, bool), np.ones(t2.size, bool)]
    lat = 30.0 + np.cumsum(np.where(moving, 0.0009, 0.0))  # ~100 m per moving step
    fig = daily_figures(
        np.zeros(n, np.int32), ts, lat, np.full(n, 106.0), np.where(moving, 36.0, 0.0), moving
    )
    assert fig["trips"].tolist() == [2]
    # 180 + 60 moving points; driving counts the step after each moving point (gaps <= 10 min).
    assert fig["driving_s"][0] == (t1.size + t2.size - 1) * 10
    assert 23.0 < fig["mileage_km"][0] < 27.0
