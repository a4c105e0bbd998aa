"""The vectorized rollup against its scalar twin on random input, and against the board."""

from __future__ import annotations

import numpy as np
import pytest

from reports.rollup import (
    ROLLUP_FIELDS,
    RollupParams,
    alarm_facts,
    track_rollup,
    track_rollup_reference,
    trip_coverage,
    trip_coverage_reference,
)
from store.figures import daily_figures


def random_track(rng: np.random.Generator, n: int, vehicles: int) -> tuple[np.ndarray, ...]:
    veh = np.sort(rng.integers(0, vehicles, n))
    ts = np.empty(n, np.int64)
    for v in np.unique(veh):
        m = veh == v
        # gaps from 1 s to 20 min: some over the 600 s and 300 s bounds
        ts[m] = 1_700_000_000_000 + np.cumsum(rng.integers(1_000, 1_200_000, m.sum()))
    lat = 30.4 + np.cumsum(rng.normal(0, 0.002, n))
    lon = 106.6 + np.cumsum(rng.normal(0, 0.002, n))
    jump = rng.random(n) < 0.02  # GPS jumps
    lat[jump] += 1.0
    lat[rng.random(n) < 0.01] = np.nan
    speed = rng.choice([0.0, 2.0, 4.99, 5.0, 30.0, 80.0, np.nan], n)
    acc = rng.random(n) < 0.7
    in_lot = rng.random(n) < 0.5
    return veh, ts, lat, lon, speed, acc, in_lot


@pytest.mark.parametrize("seed", range(12))
def test_vectorized_agrees_with_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cols = random_track(rng, int(rng.integers(0, 600)), int(rng.integers(1, 9)))
    p = RollupParams(stop_gap_ms=int(rng.integers(60_000, 900_000)))
    a, b = track_rollup(*cols, p), track_rollup_reference(*cols, p)
    np.testing.assert_array_equal(a["vehicle"], b["vehicle"])
    for f in ROLLUP_FIELDS:
        np.testing.assert_allclose(a[f], b[f], rtol=1e-9, atol=1e-6, err_msg=f)
    for f in ("trip_group", "trip_start", "trip_end"):
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)
    assert int(a["trips"].sum()) == a["trip_start"].size


@pytest.mark.parametrize("seed", range(6))
def test_km_trips_driving_are_the_boards(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    veh, ts, lat, lon, speed, acc, lot = random_track(rng, 400, 5)
    r = track_rollup(veh, ts, lat, lon, speed, acc, lot)
    f = daily_figures(veh, ts, lat, lon, speed, acc)
    np.testing.assert_allclose(r["km"], f["mileage_km"], rtol=1e-12)
    np.testing.assert_array_equal(r["trips"], f["trips"])
    np.testing.assert_allclose(r["driving_s"], f["driving_s"], rtol=1e-12)


def test_jump_and_gap_bounds() -> None:
    t0 = 1_700_000_000_000
    # 3 points 60 s apart moving at ~36 km/h, then a 1° jump (111 km in 60 s), then a 20 min gap
    ts = np.array([t0, t0 + 60_000, t0 + 120_000, t0 + 180_000, t0 + 1_380_000])
    lat = np.array([30.0, 30.0054, 30.0108, 31.0108, 31.0110])
    lon = np.full(5, 106.0)
    speed = np.array([36.0, 36.0, 36.0, 36.0, 0.0])
    r = track_rollup(np.zeros(5, int), ts, lat, lon, speed, np.ones(5, bool), np.zeros(5, bool))
    # 1.2 km driven + 22 m after the silence; the 111 km jump counts nothing
    assert r["km"][0] == pytest.approx(1.223, rel=0.002)
    assert r["driving_s"][0] == 180.0  # the 20 min silence is not driving
    assert r["online_s"][0] == 180.0
    assert r["outside_s"][0] == 180.0
    assert r["trips"][0] == 1


@pytest.mark.parametrize("seed", range(10))
def test_coverage_agrees_with_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nt, no = int(rng.integers(0, 200)), int(rng.integers(0, 60))
    tv = rng.integers(0, 6, nt)
    ts_ = rng.integers(0, 10_000, nt)
    te = ts_ + rng.integers(0, 500, nt)
    ov = rng.integers(0, 6, no)
    os_ = rng.integers(0, 10_000, no)
    oe = os_ + rng.integers(0, 2_000, no)
    np.testing.assert_array_equal(
        trip_coverage(tv, ts_, te, ov, os_, oe), trip_coverage_reference(tv, ts_, te, ov, os_, oe)
    )


def test_alarm_facts_times() -> None:
    a = {
        "id": "x",
        "vehicle": "v1",
        "org": "u",
        "kind": "speeding",
        "severity": "warning",
        "started_at": 1_000,
        "acks": [
            {"at": 241_000, "action": "ack", "handled": False, "user": "a"},
            {"at": 901_000, "action": "close", "handled": True, "user": "a"},
        ],
    }
    f = alarm_facts(a)
    assert (f["ack_s"], f["handle_s"]) == (240.0, 900.0)
    assert alarm_facts({**a, "acks": []})["ack_s"] is None
