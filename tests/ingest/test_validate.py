"""The one position check of every codec: the vectorized form agrees with the scalar one."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.json_codec import JsonLimits
from ingest.validate import check_columns, check_position

NOW = 1_764_034_200_000
I64 = st.integers(-(2**63), 2**63 - 1)


def edgy(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Values around the bounds, plus NaN and the infinities."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(lo - 1, hi + 1),
        st.sampled_from([lo, hi, math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)]),
    )


row = st.fixed_dictionaries(
    {
        "ts": st.one_of(I64, st.integers(NOW - 500 * 86_400_000, NOW + 2_000_000)),
        "lat": edgy(-90, 90),
        "lon": edgy(-180, 180),
        "speed": edgy(0, 400),
        "heading": edgy(0, 360),
        "alt": edgy(-500, 9000),
        "mileage": edgy(0, 1e7),
        "recv_ts": st.one_of(I64, st.just(NOW)),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.lists(row, max_size=20), st.integers(0, 10**7), st.integers(1, 10**11))
def test_vector_and_scalar_agree(rows: list[dict[str, float]], future: int, past: int) -> None:
    window = JsonLimits(max_future_ms=future, max_past_ms=past)
    cols = {
        k: np.array([r[k] for r in rows], dtype=np.int64 if k in ("ts", "recv_ts") else float)
        for k in ("ts", "lat", "lon", "speed", "heading", "alt", "mileage", "recv_ts")
    }
    ok, errors = check_columns(cols, cols["recv_ts"], window)
    want = [
        check_position(
            ts=int(r["ts"]),
            lat=float(r["lat"]),
            lon=float(r["lon"]),
            speed=float(r["speed"]),
            heading=float(r["heading"]),
            alt=float(r["alt"]),
            mileage=float(r["mileage"]),
            recv_ts=int(r["recv_ts"]),
            window=window,
        )
        for r in rows
    ]
    assert ok.tolist() == [w is None for w in want]
    got = {i: (e.reason, e.detail) for i, e in errors}
    assert got == {i: (w.reason, w.detail) for i, w in enumerate(want) if w is not None}


def test_the_order_of_the_checks() -> None:
    w = JsonLimits()
    base = {
        "ts": NOW,
        "lat": 30.0,
        "lon": 106.0,
        "speed": 0.0,
        "heading": 0.0,
        "alt": 0.0,
        "mileage": math.nan,
    }
    assert check_position(**base, recv_ts=NOW, window=w) is None  # type: ignore[arg-type]
    off_globe = {**base, "lat": 91.0, "ts": NOW * 2}
    err = check_position(**off_globe, recv_ts=NOW, window=w)  # type: ignore[arg-type]
    assert err is not None and err.reason == "out_of_range"
    future = {**base, "ts": NOW * 2, "speed": 999.0}
    err = check_position(**future, recv_ts=NOW, window=w)  # type: ignore[arg-type]
    assert err is not None and err.reason == "future_ts"
    for key, value in (("mileage", -0.1), ("mileage", math.inf), ("alt", 9000.5)):
        err = check_position(**{**base, key: value}, recv_ts=NOW, window=w)  # type: ignore[arg-type]
        assert err is not None and err.reason == "out_of_range" and key in err.detail
