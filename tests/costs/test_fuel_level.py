"""The fuel level (JT/T 808 additional item 0x02, 1/10 L) kept from the frame to the history."""

from __future__ import annotations

import math

import numpy as np

from fleet.batch import PositionBatch
from ingest.jt808.codec import encode_location
from ingest.jt808.position import decode_position_payloads, decode_position_payloads_scalar
from store.history import HistoryStore

T = 1_764_034_200_000


def _frames() -> list[bytes]:
    common = {"lat": 30.3, "lon": 106.2, "speed_kmh": 30.0, "heading": 0, "alt_m": 300}
    return [
        encode_location("13800000001", 1, time_ms=T, mileage_km=1234.5, fuel_l=42.5, **common),
        encode_location("13800000001", 2, time_ms=T + 10_000, **common),  # no item 0x02
    ]


def test_decoders_keep_the_fuel_level() -> None:
    for decode in (decode_position_payloads, decode_position_payloads_scalar):
        cols = decode(_frames()).columns
        assert cols["fuel"].dtype == np.float32
        assert cols["fuel"][0] == np.float32(42.5) and math.isnan(cols["fuel"][1])


def test_a_batch_without_fuel_has_nan() -> None:
    b = PositionBatch.from_columns(vehicle=[0, 0], ts=[1, 2], lat=[30, 30], lon=[106, 106])
    assert np.isnan(b.fuel).all() and b.fuel.dtype == np.float32
    assert len(PositionBatch.empty().fuel) == 0


async def test_history_stores_and_returns_the_fuel_level(history: HistoryStore) -> None:
    b = PositionBatch.from_columns(
        vehicle=np.zeros(3, np.int32),
        ts=T + np.arange(3) * 1000,
        lat=np.full(3, 30.3),
        lon=np.full(3, 106.2),
        fuel=np.array([50.0, np.nan, 12.3], np.float32),
    )
    assert await history.write_positions(b) == 3
    tr = await history.track("veh000", T, T + 10_000)
    assert tr["fuel"].dtype == np.float32
    assert tr["fuel"][0] == 50.0 and math.isnan(tr["fuel"][1]) and tr["fuel"][2] == np.float32(12.3)


async def test_an_older_sqlite_history_gains_the_column(tmp_path, registry) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from store.config import StoreConfig
    from store.sqlite import SQLiteHistory

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE positions (vehicle INTEGER NOT NULL, ts INTEGER NOT NULL, lat REAL NOT NULL,"
        " lon REAL NOT NULL, speed REAL NOT NULL, heading INTEGER NOT NULL, alt INTEGER NOT NULL,"
        " acc INTEGER NOT NULL, alarm_bits INTEGER NOT NULL, status_bits INTEGER NOT NULL,"
        " mileage REAL, backfill INTEGER NOT NULL, recv_ts INTEGER NOT NULL,"
        " PRIMARY KEY (vehicle, ts)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO positions VALUES (1, ?, 30, 106, 0, 0, 0, 0, 0, 0, NULL, 0, ?)", (T, T))
    db.commit()
    db.close()
    h = SQLiteHistory(StoreConfig(), path=str(path))
    await h.open(registry)
    try:
        tr = await h.track("veh000", T, T + 1)
        assert len(tr["ts"]) == 1 and math.isnan(tr["fuel"][0])
    finally:
        await h.close()
