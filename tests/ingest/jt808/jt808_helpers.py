"""Helpers shared by the JT/T 808 tests (imported by name: the test folder is on sys.path)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ingest.jt808.codec import encode_location, encode_location_batch
from ingest.jt808.messages import Location

VECTORS_PATH = Path(__file__).resolve().parents[2] / "data" / "jt808_vectors.json"


def load_vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"])


def random_location(rng: random.Random) -> Location:
    return Location(
        lat=rng.choice((-1, 1)) * rng.randrange(0, 90_000_000) / 1e6,
        lon=rng.choice((-1, 1)) * rng.randrange(0, 180_000_000) / 1e6,
        time_ms=rng.randrange(946_684_800, 4_000_000_000) * 1000,
        speed_kmh=rng.randrange(0, 65536) / 10,
        heading=rng.randrange(0, 65536),
        alt_m=rng.randrange(-32768, 32768),
        alarm=rng.getrandbits(32),
        status=rng.getrandbits(32),
        mileage_km=rng.choice((None, rng.randrange(0, 1 << 32) / 10)),
        satellites=rng.choice((None, rng.randrange(256))),
        signal=rng.choice((None, rng.randrange(256))),
        extra=rng.choice(((), ((0xE1, bytes(rng.randrange(8))),))),
    )


def random_position_frame(rng: random.Random) -> bytes:
    version = rng.choice((2013, 2019))
    phone = str(rng.randrange(10**11, 10**12))
    serial = rng.randrange(65536)
    if rng.random() < 0.7:
        loc = random_location(rng)
        return encode_location(
            phone,
            serial,
            lat=loc.lat,
            lon=loc.lon,
            speed_kmh=loc.speed_kmh,
            heading=loc.heading,
            alt_m=loc.alt_m,
            time_ms=loc.time_ms,
            alarm=loc.alarm,
            status=loc.status,
            mileage_km=loc.mileage_km,
            version=version,
            satellites=loc.satellites,
            extra=loc.extra,
        )
    locs = [random_location(rng) for _ in range(rng.randrange(0, 4))]
    return encode_location_batch(phone, serial, locs, backfill=rng.random() < 0.5, version=version)
