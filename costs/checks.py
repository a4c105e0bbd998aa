"""Checks of the bills against the tracks (只有轨迹能做的核查) — pure.

Each check turns cost items (as :class:`costs.store` returns them: dicts with
``fingerprint, kind, vehicle, plate, org, ts, amount, fields``) and what the
platform knows (tracks, vehicles, stations, the calendar, orders) into
**anomalies**: dicts ``{id, kind, vehicle, org, ts, fingerprint, lat, lon,
detail}``. Each anomaly kind is an alarm episode kind (:data:`ANOMALY_KINDS`);
the adapter (:mod:`web.costs_api`) stores them and publishes them as closed
episodes, so they reach the alarm desk, the notifications and the reports.

Ids are deterministic — ``{vehicle}:{kind}.{fingerprint[:16]}:{ts}`` — so that a
second run of the checks (another import, the same month again) finds the same
anomalies under the same ids and adds nothing.

Two checks run over many rows and are vectorized — :func:`refuel_distance_m`
(the car's position at each transaction) and :func:`card_shared_flags` (one card
on different plates within a short time); each has a scalar twin
(``*_reference``) and an agreement test on random input.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from store.figures import EARTH_RADIUS_M, haversine_m
from store.playback import stops_and_trips

__all__ = [
    "ANOMALY_KINDS",
    "CheckConfig",
    "CheckInput",
    "anomaly_id",
    "baseline_rates",
    "card_shared_flags",
    "card_shared_flags_reference",
    "refuel_distance_m",
    "refuel_distance_m_reference",
    "run_checks",
    "usage_by_vehicle",
]

Array = npt.NDArray[Any]

#: The episode kinds these checks raise, with the Chinese name staff use.
ANOMALY_KINDS: Mapping[str, str] = {
    "cost_refuel_away": "加油时车辆不在加油站",
    "cost_tank_overfill": "加油量超过油箱容积",
    "cost_card_shared": "一卡多车加油",
    "cost_fuel_rate": "百公里油耗异常",
    "cost_repair_status": "封存或处置车辆产生维修费",
    "cost_odometer": "维修里程与GPS里程不符",
    "cost_no_trip": "无出车记录日产生费用",
    "cost_rest_day": "休息日无派车单产生费用",
}

_SEALED = frozenset({"封存", "待处置", "已处置"})
_DRIVEN = frozenset({"fuel", "toll", "parking"})  # a cost the car must be driven to incur


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Tolerances of the checks (defaults from the issue where it names them)."""

    station_radius_m: float = 2_000.0  # "more than 2 km from the station"
    position_window_ms: int = 15 * 60_000  # the nearest position must be this close in time
    card_window_ms: int = 2 * 3_600_000  # two refuels of one card on two plates within this
    tank_tolerance: float = 0.0  # litres above the tank volume allowed (share of the tank)
    fuel_rate_ratio: float = 0.5  # flag when the month's L/100 km is off the baseline by 50 %
    fuel_rate_min_km: float = 50.0  # below this a month's km say nothing of its litres
    odometer_tolerance_km: float = 500.0
    odometer_tolerance_share: float = 0.1


def anomaly_id(vehicle: str, kind: str, sub: str, ts: int) -> str:
    return f"{vehicle}:{kind}.{sub}:{ts}"


# -- vectorized cores and their scalar twins --------------------------------------------------


def refuel_distance_m(
    track_ts: Array,
    track_lat: Array,
    track_lon: Array,
    at_ts: Array,
    lat: Array,
    lon: Array,
    window_ms: int,
) -> tuple[Array, Array]:
    """For each transaction (``at_ts``, station ``lat``/``lon``), the distance in metres from
    the track's position nearest in time to the station, and that position's index.

    NaN distance and index -1 where no position lies within ``window_ms``; ties in time go to
    the earlier position. ``track_ts`` sorted ascending."""
    track_ts = np.asarray(track_ts, dtype=np.int64)
    at_ts = np.asarray(at_ts, dtype=np.int64)
    n = at_ts.shape[0]
    if track_ts.shape[0] == 0 or n == 0:
        return np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    right = np.searchsorted(track_ts, at_ts, side="left")
    left = right - 1
    rc = np.clip(right, 0, track_ts.shape[0] - 1)
    lc = np.clip(left, 0, track_ts.shape[0] - 1)
    d_right = np.where(right < track_ts.shape[0], track_ts[rc] - at_ts, np.iinfo(np.int64).max)
    d_left = np.where(left >= 0, at_ts - track_ts[lc], np.iinfo(np.int64).max)
    idx = np.where(d_left <= d_right, lc, rc)
    gap = np.minimum(d_left, d_right)
    ok = gap <= window_ms
    dist = haversine_m(
        np.asarray(track_lat, dtype=np.float64)[idx],
        np.asarray(track_lon, dtype=np.float64)[idx],
        np.asarray(lat, dtype=np.float64),
        np.asarray(lon, dtype=np.float64),
    )
    return np.where(ok, dist, np.nan), np.where(ok, idx, -1)


def _haversine_scalar(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = EARTH_RADIUS_M
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(min(1.0, a)))


def refuel_distance_m_reference(
    track_ts: Sequence[int],
    track_lat: Sequence[float],
    track_lon: Sequence[float],
    at_ts: Sequence[int],
    lat: Sequence[float],
    lon: Sequence[float],
    window_ms: int,
) -> tuple[list[float], list[int]]:
    """Scalar twin of :func:`refuel_distance_m` (one loop over positions per transaction)."""
    dists: list[float] = []
    idxs: list[int] = []
    for t, la, lo in zip(at_ts, lat, lon, strict=True):
        best, best_gap = -1, None
        for i, tt in enumerate(track_ts):
            gap = abs(int(tt) - int(t))
            if best_gap is None or gap < best_gap:  # strict: the earlier of two at one gap
                best, best_gap = i, gap
        if best_gap is None or best_gap > window_ms:
            dists.append(math.nan)
            idxs.append(-1)
        else:
            dists.append(_haversine_scalar(track_lat[best], track_lon[best], la, lo))
            idxs.append(best)
    return dists, idxs


def card_shared_flags(card: Array, plate: Array, ts: Array, window_ms: int) -> Array:
    """For each refuel, the index of the latest earlier refuel of the same card on another
    plate when it is less than ``window_ms`` before (ties in time: earlier in input order),
    else -1. Input in any order; output aligned with the input."""
    n = len(card)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    card = np.asarray(card, dtype=object)
    plate = np.asarray(plate, dtype=object)
    ts = np.asarray(ts, dtype=np.int64)
    _, card_code = np.unique(card.astype(str), return_inverse=True)
    _, plate_code = np.unique(plate.astype(str), return_inverse=True)
    order = np.lexsort((np.arange(n), ts, card_code))
    c, p, t = card_code[order], plate_code[order], ts[order]
    # A run: consecutive refuels of one card on one plate. The latest earlier refuel on
    # another plate is the last of the previous run of the same card.
    new_run = np.r_[True, (c[1:] != c[:-1]) | (p[1:] != p[:-1])]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    prev = run_start - 1
    pc = np.clip(prev, 0, n - 1)
    hit = (prev >= 0) & (c[pc] == c) & (t - t[pc] < window_ms)
    out[order[hit]] = order[pc[hit]]
    return out


def card_shared_flags_reference(
    card: Sequence[str], plate: Sequence[str], ts: Sequence[int], window_ms: int
) -> list[int]:
    """Scalar twin of :func:`card_shared_flags`."""
    n = len(card)
    order = sorted(range(n), key=lambda i: (str(card[i]), int(ts[i]), i))
    out = [-1] * n
    for k, i in enumerate(order):
        for j in reversed(order[:k]):
            if str(card[j]) != str(card[i]):
                break
            if str(plate[j]) != str(plate[i]):
                if int(ts[i]) - int(ts[j]) < window_ms:
                    out[i] = j
                break
    return out


# -- the checks -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckInput:
    """What the checks read besides the items. ``tracks``: vehicle id → columns ``ts, lat,
    lon, speed, acc, mileage`` covering the items' days; ``workday(date)``; ``orders``:
    approved dispatch orders ``(vehicle, start_ms, end_ms)``; ``in_lot(vehicle, lat, lon)``;
    ``baseline``: vehicle id → its usual L/100 km (earlier months), when known."""

    vehicles: Mapping[str, Any]
    tracks: Mapping[str, Mapping[str, Array]]
    stations: Mapping[str, tuple[float, float]]
    workday: Callable[[dt.date], bool]
    orders: Sequence[tuple[str, int, int]]
    tz: str
    in_lot: Callable[[str, float, float], bool] | None = None
    baseline: Mapping[str, float] | None = None


def _anomaly(
    item: Mapping[str, Any],
    kind: str,
    text: str,
    *,
    lat: float = 0.0,
    lon: float = 0.0,
    sub: str | None = None,
    ts: int | None = None,
    **detail: Any,
) -> dict[str, Any]:
    t = int(item["ts"] if ts is None else ts)
    return {
        "id": anomaly_id(item["vehicle"], kind, sub or item["fingerprint"][:16], t),
        "kind": kind,
        "vehicle": item["vehicle"],
        "plate": item.get("plate"),
        "org": item["org"],
        "ts": t,
        "fingerprint": item.get("fingerprint"),
        "lat": lat,
        "lon": lon,
        "detail": {
            "name": ANOMALY_KINDS[kind],
            "text": text,
            "cost_kind": item.get("kind"),
            "amount": item.get("amount"),
            **detail,
        },
    }


def _trips(track: Mapping[str, Array]) -> Mapping[str, Array]:
    _, trips = stops_and_trips(
        track["ts"], track["lat"], track["lon"], track["speed"], track["acc"]
    )
    return trips


def usage_by_vehicle(
    tracks: Mapping[str, Mapping[str, Array]], from_ms: int, to_ms: int
) -> dict[str, dict[str, float]]:
    """GPS km and trips of each vehicle in [from_ms, to_ms) (trips by their start)."""
    out: dict[str, dict[str, float]] = {}
    for vid, tr in tracks.items():
        trips = _trips(tr)
        sel = (trips["start"] >= from_ms) & (trips["start"] < to_ms)
        out[vid] = {"km": float(trips["km"][sel].sum()), "trips": float(sel.sum())}
    return out


def baseline_rates(
    items: Sequence[Mapping[str, Any]],
    tracks: Mapping[str, Mapping[str, Array]],
    from_ms: int,
    to_ms: int,
    min_km: float = 50.0,  # CheckConfig.fuel_rate_min_km
) -> dict[str, float]:
    """Each vehicle's own L/100 km over [from_ms, to_ms) (its earlier months): the litres of
    its refuels over its GPS km, where it drove at least ``min_km``."""
    litres: dict[str, float] = {}
    for it in items:
        if it["kind"] == "fuel" and from_ms <= it["ts"] < to_ms:
            litres[it["vehicle"]] = litres.get(it["vehicle"], 0.0) + float(it["fields"]["litres"])
    used = usage_by_vehicle({v: tracks[v] for v in litres if v in tracks}, from_ms, to_ms)
    return {v: litres[v] / u["km"] * 100.0 for v, u in used.items() if u["km"] >= min_km}


def _local_day(ts: int, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts / 1000, zone).date()


def run_checks(
    items: Sequence[Mapping[str, Any]], inp: CheckInput, cfg: CheckConfig = CheckConfig()
) -> list[dict[str, Any]]:
    """Every anomaly of ``items`` (the items of whole months: the fuel-rate check compares a
    vehicle's month). Sorted by (ts, id)."""
    zone = ZoneInfo(inp.tz)
    out: list[dict[str, Any]] = []
    fuel = [it for it in items if it["kind"] == "fuel"]
    empty = {
        "ts": np.zeros(0, np.int64),
        "lat": np.zeros(0),
        "lon": np.zeros(0),
        "speed": np.zeros(0),
        "acc": np.zeros(0, bool),
        "mileage": np.zeros(0),
    }

    # Refuel away from the station / at the car's lot (vectorized per vehicle).
    by_vehicle: dict[str, list[Mapping[str, Any]]] = {}
    for it in fuel:
        by_vehicle.setdefault(it["vehicle"], []).append(it)
    for vid, its in by_vehicle.items():
        tr = inp.tracks.get(vid, empty)
        coords = []
        for it in its:
            f = it["fields"]
            if f.get("station_lat") is not None:
                coords.append((float(f["station_lat"]), float(f["station_lon"])))
            else:
                coords.append(inp.stations.get(f.get("station", ""), (math.nan, math.nan)))
        lat = np.array([c[0] for c in coords], dtype=np.float64)
        lon = np.array([c[1] for c in coords], dtype=np.float64)
        at = np.array([it["ts"] for it in its], dtype=np.int64)
        # a station without coordinates still gets the car's position (the lot check)
        dist, idx = refuel_distance_m(
            tr["ts"],
            tr["lat"],
            tr["lon"],
            at,
            np.nan_to_num(lat),
            np.nan_to_num(lon),
            cfg.position_window_ms,
        )
        for k, it in enumerate(its):
            if idx[k] < 0:
                continue
            plat, plon = float(tr["lat"][idx[k]]), float(tr["lon"][idx[k]])
            known = not math.isnan(lat[k])
            at_lot = inp.in_lot is not None and inp.in_lot(vid, plat, plon)
            far = known and dist[k] > cfg.station_radius_m
            if not (far or at_lot):
                continue
            where = "停在本车定点停放场所" if at_lot else f"距加油站 {dist[k] / 1000:.1f} 公里"
            out.append(
                _anomaly(
                    it,
                    "cost_refuel_away",
                    f"{it['plate']} 在 {it['fields'].get('station', '')} 加油时, 车辆{where}",
                    lat=plat,
                    lon=plon,
                    reason="at_lot" if at_lot else "away",
                    distance_m=None if not known else round(float(dist[k])),
                    station=it["fields"].get("station"),
                )
            )

    # More litres than the tank holds.
    for it in fuel:
        tank = getattr(inp.vehicles.get(it["vehicle"]), "fuel_tank_l", None)
        litres = float(it["fields"]["litres"])
        if tank and litres > tank * (1 + cfg.tank_tolerance):
            out.append(
                _anomaly(
                    it,
                    "cost_tank_overfill",
                    f"{it['plate']} 一次加油 {litres:g} 升, 超过油箱容积 {tank:g} 升",
                    litres=litres,
                    tank_l=tank,
                )
            )

    # One card on two plates within a short time (vectorized over every refuel).
    if fuel:
        prev = card_shared_flags(
            np.array([it["fields"]["card"] for it in fuel], dtype=object),
            np.array([it["plate"] for it in fuel], dtype=object),
            np.array([it["ts"] for it in fuel], dtype=np.int64),
            cfg.card_window_ms,
        )
        for k, j in enumerate(prev):
            if j < 0:
                continue
            it, other = fuel[k], fuel[int(j)]
            minutes = (it["ts"] - other["ts"]) / 60_000
            out.append(
                _anomaly(
                    it,
                    "cost_card_shared",
                    f"加油卡 {it['fields']['card']} 在 {minutes:.0f} 分钟内先后为 "
                    f"{other['plate']} 和 {it['plate']} 加油",
                    card=it["fields"]["card"],
                    other_plate=other["plate"],
                    other_fingerprint=other["fingerprint"],
                )
            )

    # Fuel per 100 km against the vehicle's baseline (per vehicle and month).
    months: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for it in fuel:
        m = dt.datetime.fromtimestamp(it["ts"] / 1000, zone).strftime("%Y-%m")
        months.setdefault((it["vehicle"], m), []).append(it)
    rates: dict[tuple[str, str], tuple[float, float, float]] = {}
    for (vid, m), its in months.items():
        y, mo = int(m[:4]), int(m[5:])
        start = int(dt.datetime(y, mo, 1, tzinfo=zone).timestamp() * 1000)
        end_d = dt.datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=zone)
        end = int(end_d.timestamp() * 1000)
        km = usage_by_vehicle({vid: inp.tracks.get(vid, empty)}, start, end)[vid]["km"]
        litres = sum(float(i["fields"]["litres"]) for i in its)
        if km >= cfg.fuel_rate_min_km:
            rates[(vid, m)] = (litres / km * 100.0, litres, km)
    for (vid, m), (rate, litres, km) in rates.items():
        base = (inp.baseline or {}).get(vid)
        source = "vehicle"
        if base is None:  # no earlier month of this vehicle: the fleet's median this month
            others = [r for (v2, m2), (r, _, _) in rates.items() if m2 == m and v2 != vid]
            if len(others) < 2:
                continue
            base, source = float(np.median(others)), "fleet"
        if base <= 0 or abs(rate - base) <= cfg.fuel_rate_ratio * base:
            continue
        last = max(months[(vid, m)], key=lambda i: (i["ts"], i["fingerprint"]))
        out.append(
            _anomaly(
                last,
                "cost_fuel_rate",
                f"{last['plate']} {m} 百公里油耗 {rate:.1f} 升, 基准 {base:.1f} 升"
                f" (加油 {litres:.0f} 升, GPS 里程 {km:.0f} 公里)",
                sub=m,
                rate_l_100km=round(rate, 2),
                baseline_l_100km=round(base, 2),
                baseline_source=source,
                litres=round(litres, 1),
                km=round(km, 1),
                month=m,
            )
        )

    # Repairs: sealed or disposed vehicle; odometer far from the GPS mileage.
    for it in (i for i in items if i["kind"] == "repair"):
        veh = inp.vehicles.get(it["vehicle"])
        status = getattr(veh, "status", None)
        if status in _SEALED:
            out.append(
                _anomaly(
                    it,
                    "cost_repair_status",
                    f"{it['plate']} 状态为{status}, 仍有维修发票 {it['amount']:g} 元",
                    status=status,
                )
            )
        odo = it["fields"].get("odometer")
        tr = inp.tracks.get(it["vehicle"], empty)
        if odo is None or tr["ts"].shape[0] == 0:
            continue
        mil = np.asarray(tr["mileage"], dtype=np.float64)
        good = np.flatnonzero(np.isfinite(mil))
        if good.size == 0:
            continue
        k = good[np.argmin(np.abs(tr["ts"][good] - it["ts"]))]
        gps = float(mil[k])
        tol = max(cfg.odometer_tolerance_km, cfg.odometer_tolerance_share * gps)
        if abs(float(odo) - gps) > tol:
            out.append(
                _anomaly(
                    it,
                    "cost_odometer",
                    f"{it['plate']} 维修单里程 {float(odo):.0f} 公里, GPS 里程 {gps:.0f} 公里",
                    odometer_km=float(odo),
                    gps_km=round(gps, 1),
                )
            )

    # Costs on days with no trip; on rest days without an order.
    trips_by_vehicle = {
        vid: _trips(inp.tracks.get(vid, empty)) for vid in {i["vehicle"] for i in items}
    }
    orders_by_vehicle: dict[str, list[tuple[int, int]]] = {}
    for vid, s, e in inp.orders:
        orders_by_vehicle.setdefault(vid, []).append((s, e))
    for it in items:
        if it["kind"] not in _DRIVEN and it["kind"] != "repair":
            continue
        day = _local_day(it["ts"], zone)
        d0 = int(dt.datetime.combine(day, dt.time(), zone).timestamp() * 1000)
        d1 = int(
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone).timestamp() * 1000
        )
        if it["kind"] in _DRIVEN:
            tp = trips_by_vehicle[it["vehicle"]]
            if not bool(((tp["start"] < d1) & (tp["end"] >= d0)).any()):
                out.append(
                    _anomaly(
                        it,
                        "cost_no_trip",
                        f"{it['plate']} {day.isoformat()} 无出车记录, 却有"
                        f"{_KIND_WORD[it['kind']]} {it['amount']:g} 元",
                        day=day.isoformat(),
                    )
                )
        if not inp.workday(day):
            covered = any(s < d1 and e > d0 for s, e in orders_by_vehicle.get(it["vehicle"], ()))
            if not covered:
                out.append(
                    _anomaly(
                        it,
                        "cost_rest_day",
                        f"{it['plate']} {day.isoformat()} 为休息日且无派车单, 却有"
                        f"{_KIND_WORD[it['kind']]} {it['amount']:g} 元",
                        day=day.isoformat(),
                    )
                )
    out.sort(key=lambda a: (a["ts"], a["id"]))
    return out


_KIND_WORD = {"fuel": "加油费", "toll": "通行费", "parking": "停车费", "repair": "维修费"}
