"""The packed-chunk codec (pure): every column comes back bit for bit, whatever it holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import packed


def _columns(rng: np.random.Generator, n: int, *, quantized: bool) -> dict[str, Any]:
    ts = np.sort(rng.choice(86_400_000, size=n, replace=False)).astype(np.int64) * 1000
    lat = 30.4 + np.cumsum(rng.normal(0, 1e-4, n))
    lon = 106.6 + np.cumsum(rng.normal(0, 1e-4, n))
    speed = np.abs(rng.normal(30, 20, n)).astype(np.float32)
    if quantized:  # what a JT/T 808 terminal sends: 1e-6 degree, 0.1 km/h
        lat, lon = np.round(lat * 1e6) / 1e6, np.round(lon * 1e6) / 1e6
        speed = (np.round(speed.astype(np.float64) * 10) / 10).astype(np.float32)
    mileage = np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 1e5).astype(np.float32)
    return {
        "ts": ts,
        "lat": lat,
        "lon": lon,
        "speed": speed,
        "heading": rng.integers(0, 360, n).astype(np.int16),
        "alt": rng.integers(-500, 5000, n).astype(np.int16),
        "acc": (rng.random(n) < 0.7).astype(np.uint8),
        "alarm_bits": rng.integers(0, 1 << 32, n).astype(np.int64),
        "status_bits": np.full(n, 3, np.int64),
        "mileage": mileage,
        "backfill": np.zeros(n, np.uint8),
        "recv_ts": ts + rng.integers(0, 10**9, n),
        "fuel": np.full(n, np.nan, np.float32),
    }


def _assert_same(a: dict[str, npt.NDArray[Any]], b: dict[str, Any]) -> None:
    for name, dtype in packed.COLUMNS.items():
        want = np.asarray(b[name]).astype(dtype)
        assert a[name].dtype == dtype, name
        assert a[name].tobytes() == want.tobytes(), name  # bit for bit: NaN and -0.0 too


@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("n", [0, 1, 2, 1000, 8640])
def test_round_trip_bit_for_bit(n: int, quantized: bool) -> None:
    cols = _columns(np.random.default_rng(n), n, quantized=quantized)
    _assert_same(packed.decode_chunk(packed.encode_chunk(cols)), cols)


def test_terminal_precision_is_small() -> None:
    # A vehicle-day at 10 s with JT/T 808 precision: far under the 60 B/position goal.
    cols = _columns(np.random.default_rng(3), 8640, quantized=True)
    blob = packed.encode_chunk(cols)
    assert len(blob) / 8640 < 40
    # The same values with full float64 noise fall back to raw columns, still lossless.
    noisy = dict(cols, lat=cols["lat"] + 1e-9 * np.random.default_rng(4).random(8640))
    _assert_same(packed.decode_chunk(packed.encode_chunk(noisy)), noisy)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True, width=64),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.integers(-(2**15), 2**15 - 1),
            st.integers(-(2**63), 2**63 - 1),
        ),
        max_size=50,
    )
)
def test_any_values_round_trip(rows: list[tuple[float, float, int, int]]) -> None:
    n = len(rows)
    f64 = np.array([r[0] for r in rows], np.float64)
    f32 = np.array([r[1] for r in rows], np.float32)
    i16 = np.array([r[2] for r in rows], np.int16)
    i64 = np.array([r[3] for r in rows], np.int64)
    cols = {
        "ts": np.arange(n, dtype=np.int64) * 10_000_000,
        "lat": f64,
        "lon": f64[::-1].copy(),
        "speed": f32,
        "heading": i16,
        "alt": i16[::-1].copy(),
        "acc": (i16 & 1).astype(np.uint8),
        "alarm_bits": i64,
        "status_bits": i64[::-1].copy(),
        "mileage": f32[::-1].copy(),
        "backfill": np.zeros(n, np.uint8),
        "recv_ts": i64 // 2,
        "fuel": f32,
    }
    _assert_same(packed.decode_chunk(packed.encode_chunk(cols)), cols)


def test_garbage_is_refused() -> None:
    with pytest.raises(packed.PackError):
        packed.decode_chunk(b"nope")
    blob = packed.encode_chunk(_columns(np.random.default_rng(1), 10, quantized=True))
    with pytest.raises(packed.PackError):
        packed.decode_chunk(blob[:-5])


def test_merge_keeps_the_first_source() -> None:
    a = {"vehicle": np.array([1, 1]), "ts": np.array([10, 20]), "lat": np.array([1.0, 2.0])}
    b = {"vehicle": np.array([1, 0, 1]), "ts": np.array([20, 5, 30]), "lat": np.array([9.0, 3, 4])}
    m = packed.merge_first_wins([a, b], ["vehicle", "ts", "lat"])
    assert m["vehicle"].tolist() == [0, 1, 1, 1]
    assert m["ts"].tolist() == [5, 10, 20, 30]
    assert m["lat"].tolist() == [3.0, 1.0, 2.0, 4.0]  # (1, 20) from the first source


def test_decode_only_some_columns() -> None:
    cols = _columns(np.random.default_rng(9), 100, quantized=True)
    some = packed.decode_chunk(packed.encode_chunk(cols), {"lat", "recv_ts"})
    assert set(some) == {"ts", "lat", "recv_ts"}
    assert some["recv_ts"].tobytes() == cols["recv_ts"].tobytes()  # stored relative to ts
