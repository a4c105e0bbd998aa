"""Stops and trips for playback: vectorized core against its scalar twin, and the board."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.figures import daily_figures
from store.playback import stops_and_trips, stops_and_trips_reference


@st.composite
def tracks(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 60))
    gaps = draw(
        st.lists(
            st.sampled_from([0, 1_000, 10_000, 60_000, 299_000, 300_000, 301_000, 1_800_000]),
            min_size=n,
            max_size=n,
        )
    )
    ts = 1_764_000_000_000 + np.cumsum(np.array(gaps, dtype=np.int64))
    steps = draw(st.lists(st.floats(-0.01, 0.01), min_size=2 * n, max_size=2 * n))
    walk = np.cumsum(np.array(steps).reshape(n, 2), axis=0) if n else np.zeros((0, 2))
    speed = draw(
        st.lists(st.sampled_from([0.0, 3.0, 4.99, 5.0, 30.0, 95.0, np.nan]), min_size=n, max_size=n)
    )
    acc = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return {
        "ts": ts,
        "lat": 30.45 + walk[:, 0],
        "lon": 106.63 + walk[:, 1],
        "speed": np.array(speed, dtype=np.float32),
        "acc": np.array(acc, dtype=bool),
    }


@settings(max_examples=300, deadline=None)
@given(tracks())
def test_vectorized_agrees_with_reference(t: dict[str, np.ndarray]) -> None:
    stops, trips = stops_and_trips(t["ts"], t["lat"], t["lon"], t["speed"], t["acc"])
    ref_stops, ref_trips = stops_and_trips_reference(
        t["ts"], t["lat"], t["lon"], t["speed"], t["acc"]
    )
    assert list(zip(stops["start"].tolist(), stops["end"].tolist(), strict=True)) == [
        (s[0], s[1]) for s in ref_stops
    ]
    assert stops["lat"].tolist() == [s[2] for s in ref_stops]
    assert stops["lon"].tolist() == [s[3] for s in ref_stops]
    assert list(zip(trips["start"].tolist(), trips["end"].tolist(), strict=True)) == [
        (r[0], r[1]) for r in ref_trips
    ]
    assert trips["km"].tolist() == pytest.approx([r[2] for r in ref_trips], abs=1e-9)
    assert trips["max_speed_kmh"].tolist() == pytest.approx([r[3] for r in ref_trips])
    # The trips add up to the board's mileage and trip count for the same points.
    fig = daily_figures(
        np.zeros(len(t["ts"]), int), t["ts"], t["lat"], t["lon"], t["speed"], t["acc"]
    )
    if len(t["ts"]):
        assert float(trips["km"].sum()) == pytest.approx(float(fig["mileage_km"][0]), abs=1e-9)
        assert len(trips["start"]) == int(fig["trips"][0])
    # Stops and trips alternate and never overlap.
    spans = sorted(
        [(int(a), int(b)) for a, b in zip(stops["start"], stops["end"], strict=True)]
        + [(int(a), int(b)) for a, b in zip(trips["start"], trips["end"], strict=True)]
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_a_day_with_a_lunch_stop() -> None:
    # 08:00-08:30 driving at 36 km/h, parked until 12:00, driving 12:00-12:20, parked.
    t0 = 1_764_028_800_000
    ts = np.r_[
        t0 + np.arange(0, 1_800_001, 10_000), t0 + 12_600_000 + np.arange(0, 1_200_001, 10_000)
    ]
    n = len(ts)
    moving = np.ones(n, bool)
    moving[180] = moving[-1] = False  # the arrival points (ACC off)
    lat = 30.45 + np.cumsum(np.where(np.r_[False, moving[:-1]], 0.0009, 0.0))
    stops, trips = stops_and_trips(ts, lat, np.full(n, 106.63), np.where(moving, 36.0, 0.0), moving)
    assert trips["start"].tolist() == [t0, t0 + 12_600_000]
    assert trips["end"].tolist() == [t0 + 1_790_000, t0 + 12_600_000 + 1_190_000]
    assert trips["km"] == pytest.approx([18.0, 12.0], rel=0.01)
    assert stops["start"].tolist() == [t0 + 1_790_000]  # no stop at the start, none after
    assert stops["end"].tolist() == [t0 + 12_600_000]
    assert stops["lat"][0] == pytest.approx(lat[180])
