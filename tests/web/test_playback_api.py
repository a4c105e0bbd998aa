"""Track playback over any range: ISO or epoch times, across days, stops, trips and the limit."""

from __future__ import annotations

import httpx
import numpy as np

from fleet.batch import PositionBatch
from store.playback import stops_and_trips
from tests.web.conftest import T0, Built, login

DAY = 86_400_000


def drive(start: int, minutes: int, lat0: float) -> dict[str, np.ndarray]:
    n = minutes * 6 + 1
    moving = np.ones(n, bool)
    moving[-1] = False  # arrived, ACC off
    return {
        "ts": start + np.arange(n) * 10_000,
        "lat": lat0 + np.arange(n) * 0.0009,
        "lon": np.full(n, 106.225),
        "speed": np.where(moving, 36.0, 0.0).astype(np.float32),
        "acc": moving,
    }


async def test_playback_across_days_with_iso_times(client: httpx.AsyncClient, built: Built) -> None:
    # Day 1 09:30: 30 min north from Wusheng county; day 3 09:30: 20 min further north.
    parts = [drive(T0, 30, 30.30), drive(T0 + 2 * DAY, 20, 30.30 + 180 * 0.0009)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    await built.ctx.history.write_positions(
        PositionBatch.from_columns(vehicle=np.zeros(len(cols["ts"]), np.int32), **cols)
    )
    h = await login(client, "viewer")
    r = await client.get(
        "/api/vehicles/V1/track",
        params={"from": "2025-11-25T00:00:00+08:00", "to": "2025-11-28T00:00:00+08:00"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["from"] == T0 - 34_200_000 and body["to"] == T0 - 34_200_000 + 3 * DAY
    assert len(body["points"]["ts"]) == len(cols["ts"])
    assert body["limit_kmh"] == 80.0
    assert [t["start"] for t in body["trips"]] == [T0, T0 + 2 * DAY]
    assert [round(t["km"]) for t in body["trips"]] == [18, 12]
    assert {t["max_speed_kmh"] for t in body["trips"]} == {36.0}
    # One stop: from the first arrival to the second departure, nearly two days, named.
    [stop] = body["stops"]
    assert stop["start"] == T0 + 1_790_000 and stop["end"] == T0 + 2 * DAY
    assert stop["duration_s"] == (2 * DAY - 1_790_000) // 1000
    assert stop["place"].startswith("岳池县")  # 18 km north of Wusheng
    want_stops, _ = stops_and_trips(
        cols["ts"], cols["lat"], cols["lon"], cols["speed"], cols["acc"]
    )
    assert [s["lat"] for s in body["stops"]] == want_stops["lat"].tolist()
    # Simplified points, same stops and trips (computed before simplifying).
    r = await client.get(
        f"/api/vehicles/V1/track?from={T0}&to={T0 + 3 * DAY}&simplify_m=20", headers=h
    )
    simple = r.json()
    assert len(simple["points"]["ts"]) < 10
    assert simple["trips"] == body["trips"] and simple["stops"] == body["stops"]
    # English place names; limits of the range.
    r = await client.get(f"/api/vehicles/V1/track?from={T0}&to={T0 + 3 * DAY}&lang=en", headers=h)
    assert r.json()["stops"][0]["place"].startswith("Yuechi County")
    ok = await client.get(f"/api/vehicles/V1/track?from={T0}&to={T0 + 31 * DAY}", headers=h)
    assert ok.status_code == 200
    for bad in (
        f"from={T0}&to={T0 + 31 * DAY + 1}",
        "from=2025-11-25T00:00:00&to=2025-11-26T00:00:00%2B08:00",  # no offset
        "from=soon",
    ):
        r = await client.get(f"/api/vehicles/V1/track?{bad}", headers=h)
        assert r.status_code == 400, bad
