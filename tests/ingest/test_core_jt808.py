"""JT/T 808 positions through the ingest core pass the same checks as JSON (issue 12)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from fleet.registry import Registry
from fleetwatch.config import parse_config
from ingest.core import IngestCore
from ingest.json_codec import JsonLimits
from ingest.jt808.codec import encode_heartbeat, encode_location, encode_location_batch
from ingest.jt808.messages import Location
from ingest.jt808.position import decode_position_payloads

NOW = 1_764_034_200_000
PHONE = "013900000000"  # the header's 12 BCD digits of terminal 13900000000
YEAR_2098 = 4_070_908_800_000  # 2099-01-01T00:00Z minus a year: a GPS week rollover date


def registry(n: int = 3) -> Registry:
    cfg = parse_config(
        {
            "orgs": [{"id": "c", "name": "City"}],
            "vehicles": [
                {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": f"1390000000{i}", "org": "c"}
                for i in range(n)
            ],
        }
    )
    return Registry.from_config(cfg)


def core() -> IngestCore:
    return IngestCore(
        registry(),
        limits=JsonLimits(),
        max_rows=1000,
        max_age_ms=50,
        jt808_decoder=lambda payloads: decode_position_payloads(payloads),
    )


def position(phone: str = PHONE, **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "lat": 30.45,
        "lon": 106.63,
        "speed_kmh": 42.0,
        "heading": 90,
        "alt_m": 300,
        "time_ms": NOW,
        "mileage_km": 1234.5,
    }
    args.update(kw)
    return encode_location(phone, 1, **args)


def test_a_frame_dated_2098_is_a_dead_letter_and_its_neighbours_are_kept() -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", position(time_ms=YEAR_2098), NOW)
    c.add(f"jt808/{PHONE}/up", position(), NOW)
    f = c.flush()
    assert f.batch.ts.tolist() == [NOW]
    assert [d.reason for d in f.dead_letters] == ["future_ts"]
    assert "in the future" in f.dead_letters[0].detail
    assert c.rejected["future_ts"] == 1


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"time_ms": NOW + 601_000}, "future_ts"),
        ({"time_ms": NOW - 401 * 86_400_000}, "stale_ts"),
        ({"lat": 95.0}, "out_of_range"),  # 0x0200 carries 0..4294.967295 degrees
        ({"lon": 181.0}, "out_of_range"),
        ({"speed_kmh": 450.0}, "out_of_range"),  # a WORD of 0.1 km/h reaches 6553.5
        ({"heading": 400}, "out_of_range"),
        ({"alt_m": 9500}, "out_of_range"),
        ({"mileage_km": 400_000_000.0}, "out_of_range"),  # a DWORD of 0.1 km
    ],
)
def test_jt808_positions_pass_the_json_ranges(kw: dict[str, Any], reason: str) -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", position(**kw), NOW)
    f = c.flush()
    assert len(f.batch) == 0
    assert [d.reason for d in f.dead_letters] == [reason]


def test_the_same_values_are_refused_from_json() -> None:
    """One check for both codecs: the JSON twin of each refused frame is refused alike."""
    c = IngestCore(registry(), limits=JsonLimits(), max_rows=1000, max_age_ms=50)
    bad = [
        {"ts": NOW + 601_000},
        {"ts": NOW - 401 * 86_400_000},
        {"lat": 95.0},
        {"speed": 450.0},
        {"heading": 400},
        {"alt": 9500},
        {"mileage": 400_000_000.0},
        {"mileage": -1.0},
        {"mileage": 1e39},  # finite in float64, inf in the float32 column
    ]
    for kw in bad:
        obj = {"ts": NOW, "lat": 30.0, "lon": 106.0, **kw}
        c.add("fleet/13900000000/position", orjson.dumps(obj), NOW)
    f = c.flush()
    assert len(f.batch) == 0
    assert [d.reason for d in f.dead_letters] == [
        "future_ts",
        "stale_ts",
        *["out_of_range"] * 7,
    ]


def test_bad_items_of_a_0704_batch_are_refused_one_by_one() -> None:
    good = Location(lat=30.0, lon=106.0, time_ms=NOW - 60_000, speed_kmh=10, heading=0, alt_m=0)
    bad = Location(lat=30.0, lon=106.0, time_ms=YEAR_2098, speed_kmh=10, heading=0, alt_m=0)
    c = core()
    c.add(f"jt808/{PHONE}/up", encode_location_batch(PHONE, 1, [good, bad, good]), NOW)
    f = c.flush()
    assert f.batch.ts.tolist() == [NOW - 60_000, NOW - 60_000]
    assert [(d.reason, d.detail.split(":")[0]) for d in f.dead_letters] == [
        ("future_ts", "position 1")
    ]


def test_an_empty_jt808_payload_is_a_dead_letter() -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", b"", NOW, ack=(1, 1))
    f = c.flush()
    assert [d.reason for d in f.dead_letters] == ["empty_payload"]
    assert f.acks == [(1, 1)]


def test_a_payload_without_a_frame_is_a_dead_letter() -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", b"\x7e\x7e", NOW)
    f = c.flush()
    assert len(f.batch) == 0 and len(f.dead_letters) == 1


def test_a_frame_of_another_terminal_is_not_stored_under_the_topics_vehicle() -> None:
    c = core()
    other = "013900000001"  # registered too: vehicle 1
    c.add(f"jt808/{PHONE}/up", position(phone=other), NOW)
    c.add(f"jt808/{PHONE}/up", position(), NOW)
    f = c.flush()
    assert f.batch.vehicle.tolist() == [0]
    assert [d.reason for d in f.dead_letters] == ["phone_mismatch"]
    assert other in f.dead_letters[0].detail


def test_leading_zeros_and_2019_headers_still_match_the_topic() -> None:
    c = core()
    c.add("jt808/13900000002/up", position(phone="013900000002"), NOW)
    c.add("jt808/013900000002/up", position(phone="00000000013900000002", version=2019), NOW)
    f = c.flush()
    assert f.dead_letters == [] and f.batch.vehicle.tolist() == [2, 2]


def test_non_position_messages_are_not_dead_letters() -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", encode_heartbeat(PHONE, 3), NOW)
    f = c.flush()
    assert f.dead_letters == [] and len(f.others) == 1


def test_missing_mileage_stays_nan() -> None:
    c = core()
    c.add(f"jt808/{PHONE}/up", position(mileage_km=None), NOW)
    f = c.flush()
    assert f.dead_letters == [] and math.isnan(float(f.batch.mileage[0]))
