"""The JSON position contract: every bad-input class is caught, its neighbours kept."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.batch import BatchBuilder
from ingest.json_codec import JsonLimits, decode_json_payload, parse_ts

NOW = 1_764_034_200_000  # 2025-11-25T09:30:00+08:00
LIMITS = JsonLimits(
    max_payload_bytes=4096, max_positions=10, max_future_ms=600_000, max_past_ms=30 * 86_400_000
)


def decode(payload: bytes | object, vehicle: int | None = 7):
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    out = BatchBuilder()
    errors = decode_json_payload(
        raw, terminal="13900000007", vehicle=vehicle, recv_ts=NOW, limits=LIMITS, out=out
    )
    return out.build(), errors


GOOD = {
    "ts": NOW - 1000,
    "lat": 30.456,
    "lon": 106.633,
    "speed": 42.5,
    "heading": 270,
    "alt": 310,
    "acc": True,
    "alarm": 0,
    "status": 3,
    "mileage": 12345.6,
}


def test_one_object_decodes_all_fields() -> None:
    batch, errors = decode(GOOD)
    assert errors == []
    assert len(batch) == 1
    assert batch.vehicle[0] == 7 and batch.ts[0] == NOW - 1000
    assert batch.lat[0] == 30.456 and batch.lon[0] == 106.633
    assert batch.speed[0] == pytest.approx(42.5) and batch.heading[0] == 270
    assert batch.alt[0] == 310 and bool(batch.acc[0]) is True
    assert batch.status_bits[0] == 3 and batch.mileage[0] == pytest.approx(12345.6)
    assert batch.recv_ts[0] == NOW and not batch.backfill[0]


def test_iso_timestamp_with_and_without_offset() -> None:
    assert parse_ts("2025-11-25T09:30:00+08:00") == NOW
    assert parse_ts("2025-11-25T01:30:00Z") == NOW
    assert parse_ts("2025-11-25T09:30:00") == NOW  # naive = terminal clock, GMT+8


def test_acc_defaults_to_status_bit0() -> None:
    batch, _ = decode({"ts": NOW, "lat": 30.0, "lon": 106.0, "status": 1})
    assert bool(batch.acc[0]) is True
    batch, _ = decode({"ts": NOW, "lat": 30.0, "lon": 106.0})
    assert bool(batch.acc[0]) is False and math.isnan(batch.mileage[0])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        ({"lat": 30.0, "lon": 106.0}, "missing_field"),
        ({"ts": NOW, "lon": 106.0}, "missing_field"),
        ({"ts": NOW, "lat": 30.0}, "missing_field"),
        ({"ts": NOW, "lat": 91.0, "lon": 106.0}, "out_of_range"),
        ({"ts": NOW, "lat": 30.0, "lon": -181.0}, "out_of_range"),
        ({"ts": NOW, "lat": "30.0", "lon": 106.0}, "bad_type"),
        ({"ts": NOW, "lat": True, "lon": 106.0}, "bad_type"),
        ({"ts": NOW + 3_600_000, "lat": 30.0, "lon": 106.0}, "future_ts"),
        ({"ts": NOW // 1000, "lat": 30.0, "lon": 106.0}, "stale_ts"),
        ({"ts": "yesterday", "lat": 30.0, "lon": 106.0}, "bad_timestamp"),
        ({"ts": NOW, "lat": 30.0, "lon": 106.0, "speed": -5}, "out_of_range"),
        ({"ts": NOW, "lat": 30.0, "lon": 106.0, "alarm": -1}, "bad_type"),
        ({"ts": NOW, "lat": 30.0, "lon": 106.0, "acc": "yes"}, "bad_type"),
        ([1, 2], "not_object"),
        (b"[" + b",".join([orjson.dumps(GOOD)] * 11) + b"]", "too_many_positions"),
        (b"x" * 5000, "oversized"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(payload: object, reason: str) -> None:
    batch, errors = decode(payload)
    assert len(batch) == 0
    assert errors and all(e.reason == reason for e in errors)


def test_nan_literal_is_invalid_json_and_huge_number_not_finite() -> None:
    _, errors = decode(b'{"ts": 1, "lat": NaN, "lon": 106.0}')
    assert [e.reason for e in errors] == ["invalid_json"]
    _, errors = decode(b'{"ts": %d, "lat": 30.0, "lon": 106.0, "speed": 1e999}' % NOW)
    assert [e.reason for e in errors] in (["not_finite"], ["invalid_json"])


def test_unknown_terminal_rejects_whole_payload() -> None:
    batch, errors = decode(GOOD, vehicle=None)
    assert len(batch) == 0 and [e.reason for e in errors] == ["unknown_terminal"]


def test_bad_item_keeps_its_neighbours() -> None:
    items = [GOOD, {"ts": NOW, "lat": 200.0, "lon": 1.0}, {**GOOD, "ts": NOW - 500}, "x"]
    batch, errors = decode(items)
    assert batch.ts.tolist() == [NOW - 1000, NOW - 500]
    assert sorted(e.reason for e in errors) == ["not_object", "out_of_range"]
    assert any("item 1" in e.detail for e in errors)


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    batch, errors = decode(raw)
    assert len(batch) + len(errors) >= 1 or raw.strip() in (b"[]",)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ts": st.integers(NOW - 86_400_000, NOW),
                "lat": st.floats(-90, 90),
                "lon": st.floats(-180, 180),
                "speed": st.floats(0, 300),
            }
        ),
        max_size=10,
    )
)
def test_valid_arrays_round_trip(items: list[dict[str, float]]) -> None:
    batch, errors = decode(items)
    assert errors == []
    assert batch.ts.tolist() == [i["ts"] for i in items]
    assert batch.lat.tolist() == [i["lat"] for i in items]


@pytest.mark.parametrize(
    ("mileage", "reason"),
    [
        (-0.1, "out_of_range"),
        (1e39, "out_of_range"),  # finite here, inf in the float32 column
        (math.inf, "not_finite"),
        (math.nan, "not_finite"),
    ],
)
def test_mileage_must_be_a_sane_odometer(mileage: float, reason: str) -> None:
    """Issue 12: JSON ``mileage`` accepted inf and negative values."""
    import numpy as np

    from ingest.json_codec import decode_objects

    if isinstance(mileage, bytes):
        doc = orjson.loads(
            orjson.dumps({**GOOD, "mileage": 0}).replace(b'"mileage":0', b'"mileage":' + mileage)
        )
        mileage = doc["mileage"]
    obj = {**GOOD, "mileage": mileage}
    batch, errors = decode_objects([obj], np.array([7]), np.array([NOW]), LIMITS)
    assert len(batch) == 0 and [e.reason for _, e in errors] == [reason]
