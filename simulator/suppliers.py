"""Supplier files (三定点 statements) consistent with the simulated tracks, with injected
anomalies as ground truth, and the score of FleetWatch's cost checks (#18).

:func:`supplier_files` is pure: given each vehicle's stored track of the simulated day, it
writes a fuel-card statement (each refuel at a station placed where the car stood, at a
time it stood there), toll and parking, insurance and repair files — and injects one
anomaly of each kind the checks know, recording which vehicle and kind it must raise:

=====================  ================================================================
cost_refuel_away       a refuel at a station 5.5 km from where the car was at the time
cost_tank_overfill     75 L into a 60 L tank (a car that drove under 50 km: its fuel
                       rate stays out of the comparison)
cost_card_shared       one card on a second plate 5 to 90 minutes after its own refuel
cost_fuel_rate         three times the fleet's litres per 100 km (when at least three
                       other cars drove 50 km or more, so that a baseline exists)
cost_repair_status     a repair invoice for a car the records then mark 封存
cost_odometer          a repair invoice whose odometer is 3,000 km past the GPS mileage
cost_no_trip           a parking fee on an earlier workday the car did not drive
cost_rest_day          a toll on a rest day without an order (also a day without a
                       trip: both kinds are expected)
=====================  ================================================================

Every other row is clean: it must raise nothing. Two bad rows (an unknown plate, zero
litres) must come back as bad rows with their lines.

:func:`verify_costs` runs the files through the service's API (import, idempotence, the
anomalies) and scores per kind: precision and recall over (kind, vehicle) pairs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from costs.checks import CheckConfig
from store.playback import stops_and_trips

__all__ = ["SupplierFiles", "print_costs", "score", "supplier_files", "verify_costs"]

TZ = ZoneInfo("Asia/Shanghai")
TANK_L = 60.0
BASE_RATE = 9.0  # litres per 100 km of the simulated fleet
PRICE = 7.5  # yuan per litre
MIN_KM = CheckConfig().fuel_rate_min_km  # the fuel-rate check compares cars that drove this
_HEADERS = {
    "fuel": [
        "加油卡号",
        "车牌号",
        "加油站",
        "交易时间",
        "加油量(升)",
        "油品",
        "金额(元)",
        "加油站纬度",
        "加油站经度",
    ],
    "toll": ["车牌号", "通行时间", "收费站", "金额(元)"],
    "parking": ["车牌号", "停车时间", "停车场", "金额(元)"],
    "insurance": ["车牌号", "保险公司", "起保日期", "终保日期", "保费(元)", "险种"],
    "repair": [
        "车牌号",
        "维修厂",
        "维修日期",
        "维修项目",
        "材料费(元)",
        "工时费(元)",
        "金额(元)",
        "里程表读数(公里)",
    ],
}


@dataclass
class SupplierFiles:
    files: dict[str, bytes] = field(default_factory=dict)  # kind → CSV (UTF-8 with BOM)
    truth: list[tuple[str, str]] = field(default_factory=list)  # (anomaly kind, vehicle)
    bad_lines: dict[str, list[int]] = field(default_factory=dict)  # kind → lines
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # vehicle → changes


def _local(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, TZ).strftime("%Y-%m-%d %H:%M:%S")


def _csv(kind: str, rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_HEADERS[kind])
    w.writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _km_and_trips(tr: Mapping[str, np.ndarray]) -> tuple[float, int]:
    _, trips = stops_and_trips(tr["ts"], tr["lat"], tr["lon"], tr["speed"], tr["acc"])
    return float(trips["km"].sum()), int(trips["start"].shape[0])


def _parked_point(tr: Mapping[str, np.ndarray]) -> int:
    """A point where the car stood (speed 0), the last of the day's first half if any."""
    still = np.flatnonzero(np.asarray(tr["speed"]) < 1.0)
    if still.size == 0:
        return int(len(tr["ts"]) // 2)
    return int(still[still.size // 2])


def supplier_files(
    tracks: Mapping[str, Mapping[str, np.ndarray]],
    plates: Mapping[str, str],
    *,
    day: dt.date,
    quiet_day: dt.date,
    rest_day: dt.date,
    seed: int = 18,
) -> SupplierFiles:
    """The statements of the simulated ``day`` (see the module docstring).

    ``tracks``: each vehicle's positions of the day (``ts, lat, lon, speed, acc, mileage``);
    ``quiet_day``: an earlier workday without positions; ``rest_day``: a rest day without
    positions or orders."""
    rng = random.Random(seed)
    out = SupplierFiles()
    vids = sorted(plates)
    cards = {v: f"9{n:011d}" for n, v in enumerate(vids, start=1)}
    for v in vids:
        out.records[v] = {"fuel_card": cards[v], "fuel_tank_l": TANK_L}
    usage = {v: _km_and_trips(tracks[v]) for v in vids if v in tracks and len(tracks[v]["ts"])}
    active = [v for v in vids if usage.get(v, (0.0, 0))[1] > 0]
    rate = {v: BASE_RATE * rng.uniform(0.9, 1.1) for v in vids}
    used: set[str] = set()
    fuel: list[list[Any]] = []

    def refuel(
        v: str,
        i: int,
        litres: float,
        *,
        card: str | None = None,
        off_lat: float = 0.0,
        station: str | None = None,
    ) -> None:
        tr = tracks[v]
        price = PRICE * rng.uniform(0.97, 1.03)
        fuel.append(
            [
                card or cards[v],
                plates[v],
                station or f"定点加油站-{v}",
                _local(int(tr["ts"][i])),
                round(litres, 2),
                "92#",
                round(litres * price, 2),
                round(float(tr["lat"][i]) + off_lat, 6),
                round(float(tr["lon"][i]), 6),
            ]
        )

    def normal_litres(v: str) -> float:
        return rate[v] * usage[v][0] / 100.0

    # cost_refuel_away: the station 0.05° (5.5 km) north of where the car was.
    by_km = sorted(active, key=lambda v: -usage[v][0])
    a = next((v for v in by_km if normal_litres(v) >= 1.0), None)
    if a is not None:
        used.add(a)
        refuel(
            a, _parked_point(tracks[a]), normal_litres(a), off_lat=0.05, station=f"远郊加油站-{a}"
        )
        out.truth.append(("cost_refuel_away", a))
    # cost_tank_overfill: a car under MIN_KM (its fuel rate is not compared).
    b = next((v for v in active if v not in used and usage[v][0] < MIN_KM), None)
    if b is not None:
        used.add(b)
        refuel(b, _parked_point(tracks[b]), 75.0)
        out.truth.append(("cost_tank_overfill", b))
    # cost_card_shared: C's card on D's plate 5..90 minutes after C's own refuel.
    pair = None
    for c in active:
        if c in used or normal_litres(c) < 1.0:
            continue
        ic = _parked_point(tracks[c])
        tc = int(tracks[c]["ts"][ic])
        for d in active:
            if d in used or d == c or normal_litres(d) < 1.0:
                continue
            ts = np.asarray(tracks[d]["ts"])
            ok = np.flatnonzero((ts > tc + 300_000) & (ts < tc + 5_400_000))
            if ok.size:
                pair = (c, ic, d, int(ok[0]))
                break
        if pair:
            break
    if pair is not None:
        c, ic, d, idd = pair
        used |= {c, d}
        refuel(c, ic, normal_litres(c))
        refuel(d, idd, normal_litres(d), card=cards[c])
        out.truth.append(("cost_card_shared", d))
    # cost_fuel_rate: three times the base rate, when a baseline of >= 3 other cars exists.
    long = [v for v in active if usage[v][0] >= MIN_KM]
    cand = next(
        (v for v in long if v not in used and 3 * BASE_RATE * usage[v][0] / 100 <= 55), None
    )
    if cand is not None and len([v for v in long if v != cand and v != b]) >= 3:
        used.add(cand)
        refuel(cand, _parked_point(tracks[cand]), 3 * BASE_RATE * usage[cand][0] / 100.0)
        out.truth.append(("cost_fuel_rate", cand))
    # Clean refuels for everyone else who drove.
    for v in active:
        if v not in used and normal_litres(v) >= 1.0:
            refuel(v, _parked_point(tracks[v]), normal_litres(v))
    bad_fuel_line = len(fuel) + 2
    v0 = active[0] if active else vids[0]
    fuel.append(
        [cards[v0], plates[v0], "定点加油站", f"{day.isoformat()} 10:00:00", 0, "92#", 1, "", ""]
    )
    out.bad_lines["fuel"] = [bad_fuel_line]
    out.files["fuel"] = _csv("fuel", fuel)

    # Tolls and parking: clean ones at a point of a trip; the no-trip and rest-day ones.
    toll: list[list[Any]] = []
    parking: list[list[Any]] = []
    for v in active[:5]:
        tr = tracks[v]
        moving = np.flatnonzero(np.asarray(tr["speed"]) >= 5.0)
        i = int(moving[len(moving) // 2]) if moving.size else 0
        toll.append([plates[v], _local(int(tr["ts"][i])), "广安东收费站", 35])
        parking.append([plates[v], _local(int(tr["ts"][_parked_point(tr)])), "政务中心停车场", 10])
    rest_pool = [v for v in vids if v not in used]
    g = rest_pool[0] if rest_pool else vids[0]
    h = rest_pool[1] if len(rest_pool) > 1 else vids[-1]
    parking.append([plates[g], f"{quiet_day.isoformat()} 15:00:00", "商场停车场", 20])
    out.truth.append(("cost_no_trip", g))
    toll.append([plates[h], f"{rest_day.isoformat()} 11:00:00", "高速收费站", 60])
    out.truth += [("cost_rest_day", h), ("cost_no_trip", h)]
    out.bad_lines["toll"] = [len(toll) + 2]
    toll.append(["川Z99999", f"{day.isoformat()} 09:00:00", "广安东收费站", 35])
    out.files["toll"] = _csv("toll", toll)
    out.files["parking"] = _csv("parking", parking)

    # Insurance: clean.
    year = day.year
    out.files["insurance"] = _csv(
        "insurance",
        [
            [
                plates[v],
                "人保财险广安分公司",
                f"{year}-01-01",
                f"{year}-12-31",
                4200,
                "交强险+商业险",
            ]
            for v in vids[:3]
        ],
    )

    # Repairs: a sealed car's invoice, one odometer far from the GPS, one clean.
    repair: list[list[Any]] = []
    spare = [v for v in vids if v not in used and v not in (g, h)]
    e = spare[0] if spare else vids[0]
    out.records[e]["status"] = "封存"
    repair.append([plates[e], "定点维修中心", day.isoformat(), "更换刹车片", 380, 120, 500, ""])
    out.truth.append(("cost_repair_status", e))
    with_mileage = [
        v
        for v in active
        if v != e and np.isfinite(np.asarray(tracks[v]["mileage"], dtype=float)).any()
    ]
    if with_mileage:
        f = with_mileage[0]
        mil = np.asarray(tracks[f]["mileage"], dtype=float)
        first = float(mil[np.flatnonzero(np.isfinite(mil))[0]])
        repair.append(
            [plates[f], "定点维修中心", day.isoformat(), "保养", 100, 50, 150, round(first + 3000)]
        )
        out.truth.append(("cost_odometer", f))
        if len(with_mileage) > 1:
            k = with_mileage[1]
            mk = np.asarray(tracks[k]["mileage"], dtype=float)
            near = float(mk[np.flatnonzero(np.isfinite(mk))[0]])
            repair.append(
                [
                    plates[k],
                    "定点维修中心",
                    day.isoformat(),
                    "更换机油",
                    200,
                    80,
                    280,
                    round(near + 5),
                ]
            )
    out.files["repair"] = _csv("repair", repair)
    return out


def score(truth: Sequence[tuple[str, str]], raised: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Precision and recall per anomaly kind over (kind, vehicle) pairs."""
    kinds = sorted({k for k, _ in truth} | {k for k, _ in raised})
    t, r = set(truth), set(raised)
    out: dict[str, Any] = {}
    for k in kinds:
        tk = {x for x in t if x[0] == k}
        rk = {x for x in r if x[0] == k}
        hit = len(tk & rk)
        out[k] = {
            "injected": len(tk),
            "raised": len(rk),
            "matched": hit,
            "precision": round(hit / len(rk), 3) if rk else (1.0 if not tk else 0.0),
            "recall": round(hit / len(tk), 3) if tk else 1.0,
            "missed": sorted(v for _, v in tk - rk),
            "unexplained": sorted(v for _, v in rk - tk),
        }
    return out


def _previous(day: dt.date, workday: bool) -> dt.date:
    from simulator.fleet import TZ_OFFSET_MS, is_workday
    from simulator.plan import DAY

    d = day - dt.timedelta(days=1)
    while is_workday((d - dt.date(1970, 1, 1)).days * DAY - TZ_OFFSET_MS) != workday:
        d -= dt.timedelta(days=1)
    return d


async def verify_costs(
    http: Any,
    token: str,
    records: Any,
    history: Any,
    vehicle_ids: Sequence[str],
    day: dt.date,
    start_ms: int,
    end_ms: int,
) -> dict[str, Any]:
    """Write the supplier files for the simulated day, import them through the API (twice:
    the second adds nothing), read the anomalies back and score them."""
    head = {"Authorization": f"Bearer {token}"}
    on_file = {v.id: v for v in await records.vehicles()}
    plates = {vid: on_file[vid].plate for vid in vehicle_ids if vid in on_file}
    tracks = {vid: await history.track(vid, start_ms, end_ms) for vid in plates}
    files = supplier_files(
        tracks, plates, day=day, quiet_day=_previous(day, True), rest_day=_previous(day, False)
    )
    for vid, change in files.records.items():
        await records.put_vehicle(
            on_file[vid].model_copy(update=change), by="simulator", at=end_ms, action="update"
        )
    imported: dict[str, int] = {}
    bad: dict[str, list[int]] = {}
    for kind, body in files.files.items():
        r = await http.post(
            "/api/costs/import",
            params={"kind": kind, "supplier": f"sim-{kind}"},
            content=body,
            headers=head,
            timeout=120,
        )
        r.raise_for_status()
        res = r.json()
        imported[kind] = res["imported"]
        bad[kind] = [b["line"] for b in res["bad"]]
    again = await http.post(
        "/api/costs/import",
        params={"kind": "fuel", "supplier": "sim-fuel"},
        content=files.files["fuel"],
        headers=head,
        timeout=120,
    )
    again.raise_for_status()
    months = sorted(
        {d.strftime("%Y-%m") for d in (day, _previous(day, True), _previous(day, False))}
    )
    raised: list[tuple[str, str]] = []
    for m in months:
        r = await http.get("/api/costs/anomalies", params={"month": m}, headers=head)
        r.raise_for_status()
        raised += [(a["kind"], a["vehicle"]) for a in r.json()["anomalies"]]
    kinds = score(files.truth, raised)
    return {
        "kinds": kinds,
        "all_found": all(k["precision"] == 1.0 and k["recall"] == 1.0 for k in kinds.values()),
        "imported": imported,
        "bad_rows": {"expected": files.bad_lines, "reported": {k: v for k, v in bad.items() if v}},
        "second_import_added": again.json()["imported"],
    }


def print_costs(costs: Mapping[str, Any] | None) -> None:
    """The cost checks' part of the ``--verify`` report."""
    if not costs:
        return
    print(f"{'cost check':<22}{'injected':>9}{'raised':>8}{'prec':>7}{'recall':>8}")
    for k, s in costs["kinds"].items():
        print(f"{k:<22}{s['injected']:>9}{s['raised']:>8}{s['precision']:>7.2f}{s['recall']:>8.2f}")
    print(
        f"cost files: imported {costs['imported']}, bad rows {costs['bad_rows']['reported']}"
        f" (expected {costs['bad_rows']['expected']}), second import added"
        f" {costs['second_import_added']}"
    )
