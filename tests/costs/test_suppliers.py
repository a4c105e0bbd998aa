"""The simulator's supplier files: consistent with the tracks, every injected anomaly found by
the checks and nothing else (the pure path: validate, then check; the service path runs in
``fleetwatch simulate --verify``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from costs.checks import CheckInput, run_checks
from costs.validate import validate_rows
from rules.calendar import WorkCalendar
from simulator.suppliers import score, supplier_files

TZ = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2026, 11, 24)  # a Tuesday


@dataclass
class Car:
    id: str
    plate: str
    org: str = "ga"
    status: str = "在用"
    fuel_card: str | None = None
    fuel_tank_l: float | None = None


def _track(minutes: int, lat0: float, start_h: float) -> dict[str, np.ndarray]:
    """Drive north at 60 km/h for ``minutes`` (a point each 30 s), then stand two hours."""
    t0 = int(dt.datetime.combine(DAY, dt.time(), TZ).timestamp() * 1000) + int(start_h * 3.6e6)
    n1, n2 = minutes * 2, 120
    ts = t0 + np.r_[np.arange(n1) * 30_000, n1 * 30_000 + np.arange(n2) * 60_000]
    lat = np.r_[lat0 + np.arange(n1) * 0.0045, np.full(n2, lat0 + n1 * 0.0045)]
    speed = np.r_[np.full(n1, 60.0), np.zeros(n2)]
    return {
        "ts": ts.astype(np.int64),
        "lat": lat,
        "lon": np.full(n1 + n2, 106.6),
        "speed": speed.astype(np.float32),
        "acc": speed > 0,
        "mileage": (5000 + np.cumsum(np.r_[0, np.full(n1 + n2 - 1, 0.5)] * (speed > 0))).astype(
            np.float32
        ),
    }


def _rows(body: bytes) -> list[dict[str, object]]:
    reader = csv.reader(io.StringIO(body.decode("utf-8-sig")))
    head = next(reader)
    return [{"_line": n, **dict(zip(head, r, strict=True))} for n, r in enumerate(reader, start=2)]


def test_every_injected_anomaly_is_found_and_nothing_else() -> None:
    minutes = [120, 130, 110, 125, 20, 30, 40, 25, 35, 0]
    tracks = {f"v{i:05d}": _track(m, 30.3 + 0.01 * i, 8 + 0.1 * i) for i, m in enumerate(minutes)}
    tracks["v00009"] = {k: v[:0] for k, v in tracks["v00009"].items()}  # did not drive
    plates = {v: f"川XA{int(v[1:]):04d}" for v in tracks}
    files = supplier_files(
        tracks, plates, day=DAY, quiet_day=dt.date(2026, 11, 23), rest_day=dt.date(2026, 11, 22)
    )
    assert {k for k, _ in files.truth} == {
        "cost_refuel_away",
        "cost_tank_overfill",
        "cost_card_shared",
        "cost_fuel_rate",
        "cost_repair_status",
        "cost_odometer",
        "cost_no_trip",
        "cost_rest_day",
    }
    cars = [Car(v, plates[v], **files.records[v]) for v in sorted(plates)]
    now = int(dt.datetime(2026, 12, 1, tzinfo=TZ).timestamp() * 1000)
    items = []
    for kind, body in files.files.items():
        plan = validate_rows(kind, _rows(body), cars, mapping=None, now_ms=now, tz="Asia/Shanghai")
        assert [b.line for b in plan.bad] == files.bad_lines.get(kind, []), plan.bad
        items += [{**it.as_dict(), "plate": it.plate} for it in plan.items]
    cal = WorkCalendar()
    found = run_checks(
        items,
        CheckInput(
            vehicles={c.id: c for c in cars},
            tracks=tracks,
            stations={},
            workday=lambda d: cal.day(d).workday,
            orders=[],
            tz="Asia/Shanghai",
        ),
    )
    result = score(files.truth, [(a["kind"], a["vehicle"]) for a in found])
    assert all(k["precision"] == 1.0 and k["recall"] == 1.0 for k in result.values()), result
