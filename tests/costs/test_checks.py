"""The vectorized checks against their scalar twins on random input, and the check rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from costs.checks import (
    CheckConfig,
    CheckInput,
    card_shared_flags,
    card_shared_flags_reference,
    refuel_distance_m,
    refuel_distance_m_reference,
    run_checks,
)

times = st.lists(st.integers(0, 10_000_000), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    track=st.lists(st.integers(0, 5_000_000), max_size=30, unique=True),
    at=st.lists(st.integers(-100_000, 5_100_000), max_size=15),
    window=st.integers(0, 400_000),
    seed=st.integers(0, 2**31),
)
def test_refuel_distance_agrees_with_its_scalar_twin(
    track: list[int], at: list[int], window: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ts = np.array(sorted(track), dtype=np.int64)
    lat, lon = 30 + rng.random(ts.size), 106 + rng.random(ts.size)
    a = np.array(at, dtype=np.int64)
    slat, slon = 30 + rng.random(a.size), 106 + rng.random(a.size)
    dist, idx = refuel_distance_m(ts, lat, lon, a, slat, slon, window)
    rd, ri = refuel_distance_m_reference(
        ts.tolist(), lat.tolist(), lon.tolist(), a.tolist(), slat.tolist(), slon.tolist(), window
    )
    assert idx.tolist() == ri
    for x, y in zip(dist.tolist(), rd, strict=True):
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) < 1e-6


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("ABC"), st.sampled_from("xyz"), st.integers(0, 20_000)),
        max_size=40,
    ),
    window=st.integers(0, 8_000),
)
def test_card_shared_agrees_with_its_scalar_twin(
    rows: list[tuple[str, str, int]], window: int
) -> None:
    card = [r[0] for r in rows]
    plate = [r[1] for r in rows]
    ts = [r[2] for r in rows]
    got = card_shared_flags(
        np.array(card, dtype=object), np.array(plate, dtype=object), np.array(ts), window
    )
    assert got.tolist() == card_shared_flags_reference(card, plate, ts, window)


def test_empty_input() -> None:
    d, i = refuel_distance_m(
        np.zeros(0), np.zeros(0), np.zeros(0), np.array([5]), [30.0], [106.0], 10
    )
    assert math.isnan(d[0]) and i[0] == -1
    assert card_shared_flags(np.zeros(0), np.zeros(0), np.zeros(0), 10).tolist() == []


def _item(kind: str, vid: str, ts: int, fp: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "vehicle": vid,
        "plate": f"川X{vid}",
        "org": "o",
        "ts": ts,
        "fingerprint": fp * 16,
        "amount": 100.0,
        "fields": fields,
    }


class _V:
    def __init__(self, status: str = "在用", tank: float | None = None) -> None:
        self.status = status
        self.fuel_tank_l = tank


def test_fuel_rate_against_the_fleet_and_odometer() -> None:
    t0 = int(dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC).timestamp() * 1000)
    n = 1001  # 100 km north at 36 km/h over 10,000 s, a point every 10 s
    track = {
        "ts": t0 + np.arange(n, dtype=np.int64) * 10_000,
        "lat": 30 + np.arange(n) * 0.0009,
        "lon": np.full(n, 106.0),
        "speed": np.full(n, 36.0),
        "acc": np.ones(n, bool),
        "mileage": 1000 + np.arange(n) * 0.1,
    }
    tracks = {v: track for v in ("a", "b", "c", "d")}
    items = [
        _item("fuel", v, t0 + 60_000, v, card=v, litres=lit, station="s")
        for v, lit in (("a", 8), ("b", 9), ("c", 8.5), ("d", 20))
    ]
    items.append(_item("repair", "a", t0 + 120_000, "r", odometer=5000))
    items.append(_item("repair", "b", t0 + 120_000, "q", odometer=1010))
    inp = CheckInput(
        vehicles={v: _V() for v in tracks},
        tracks=tracks,
        stations={},
        workday=lambda d: True,
        orders=[],
        tz="Asia/Shanghai",
    )
    out = run_checks(items, inp, CheckConfig())
    assert sorted((a["kind"], a["vehicle"]) for a in out) == [
        ("cost_fuel_rate", "d"),
        ("cost_odometer", "a"),
    ]
    rate = next(a for a in out if a["kind"] == "cost_fuel_rate")["detail"]
    assert abs(rate["km"] - 100) < 1 and rate["baseline_source"] == "fleet"
    # With the vehicle's own baseline of 19 L/100 km, d is normal and a is not.
    inp2 = dataclasses.replace(inp, baseline={"d": 19.0, "a": 30.0})
    kinds = sorted((a["kind"], a["vehicle"]) for a in run_checks(items, inp2))
    assert ("cost_fuel_rate", "d") not in kinds and ("cost_fuel_rate", "a") in kinds
