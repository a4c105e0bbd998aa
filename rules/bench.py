"""``fleetwatch bench rules``: rule-engine throughput with 10,000 vehicles, all rules on.

Workload: 10,000 vehicles in 100 units under 10 districts, each reporting every
30 s from 17:00 on a workday (working hours end at 17:30, so off_hours opens
for every moving vehicle during the run), around
Guang'an, over the geofence benchmark's 1,000 fences re-purposed: the 10
administrative polygons are the city's allowed regions, 50 stars are forbidden
places, 250 speed zones (40-70 km/h), 690 unit lots. Batches of 100,000 rows arrive in time
order (vehicles interleaved), so the engine's sort is part of the cost.

Figures (positions/s, median over repeats, one core; ``*_pos_per_s`` from wall
time, ``cpu_*_pos_per_s`` from this process's CPU time — steadier when other
work shares the machine; ``membership_only`` is CPU time):

``rules_alone``
    all eight rules, membership precomputed outside the timed region
    (the geofence step removed, its answer kept);
``with_geofence``
    all eight rules with the engine calling ``FenceIndex.membership``;
``membership_only``
    the geofence step alone on the same batches;
``no_fences``
    the rules that need no fence (speeding by vehicle limit, off_hours,
    terminal_alarm, fatigue, offline);
``reference``
    the scalar reference engine on a small sample, as the baseline.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from fleet.batch import PositionBatch
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from rules.config import RulesConfig
from rules.engine import RulesEngine

__all__ = ["make_fleet", "make_stream", "run"]

_LON0, _LAT0 = 106.15, 30.05
N_VEHICLES = 10_000
START_MS = 1_795_597_200_000  # 2026-11-25 (a Wednesday) 17:00 Asia/Shanghai


def make_fleet(n: int = N_VEHICLES) -> Registry:
    orgs = [OrgConfig(id="city", name="city")]
    orgs += [OrgConfig(id=f"d{d}", name=f"district {d}", parent="city") for d in range(10)]
    orgs += [OrgConfig(id=f"u{u}", name=f"unit {u}", parent=f"d{u % 10}") for u in range(100)]
    vehicles = [
        VehicleConfig(
            id=f"v{i}",
            plate=f"P{i:06d}",
            terminal=f"{13800000000 + i}",
            org=f"u{i % 100}",
            type="bus" if i % 7 == 0 else "car",
        )
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(orgs), 80.0, {"bus": 60.0})


def make_fences() -> Any:
    from geofence.bench import make_workload
    from geofence.fence import Fence
    from geofence.index import FenceIndex

    base, _, _ = make_workload(n_points=1)
    out = []
    stars = [f for f in base if len(f.geometry.exterior.coords) < 500]
    admin = [f for f in base if len(f.geometry.exterior.coords) >= 500]
    for k, f in enumerate(admin):
        out.append(Fence.polygon(f"a{k}", f"region {k}", "city", "allowed_region", f.geometry))
    for k, f in enumerate(stars):
        if k < 50:
            out.append(Fence.polygon(f"f{k}", f"forbidden {k}", "city", "forbidden", f.geometry))
        elif k < 300:
            out.append(
                Fence.polygon(
                    f"z{k}",
                    f"zone {k}",
                    "city",
                    "speed_zone",
                    f.geometry,
                    speed_limit_kmh=float(40 + 10 * (k % 4)),
                )
            )
        else:
            out.append(Fence.polygon(f"lot{k}", f"lot {k}", f"u{k % 100}", "lot", f.geometry))
    return FenceIndex.build(out)


def make_stream(
    n_batches: int, per_vehicle: int = 10, n: int = N_VEHICLES, seed: int = 5, index: Any = None
) -> list[PositionBatch]:
    """Batches of ``per_vehicle`` reports of every vehicle, 30 s apart, in time order.

    Vehicles start inside the allowed regions when ``index`` is given. About 1 in
    50 drives over its limit at a time; 1 in 1,000 reports raises a terminal alarm.
    """
    rng = np.random.default_rng(seed)
    kx = 111_320.0 * np.cos(np.radians(_LAT0 + 0.45))
    lon = _LON0 + rng.uniform(0, 100_000, 20 * n) / kx
    lat = _LAT0 + rng.uniform(0, 100_000, 20 * n) / 110_574.0
    if index is not None:
        p, f = index.membership(lon, lat)
        inside = np.unique(p[index.use[f] == 0])
        lon, lat = lon[inside], lat[inside]
    lon, lat = lon[:n], lat[:n]
    normal = np.array([0, 0, 0, 20, 30, 40, 50, 60], np.float32)
    fast = np.array([85, 95, 110], np.float32)

    def draw_speed(k: int) -> np.ndarray:
        return np.where(rng.random(k) < 0.02, rng.choice(fast, k), rng.choice(normal, k))

    speed = draw_speed(n)
    acc = speed > 0
    out = []
    t = START_MS
    for _ in range(n_batches):
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("vehicle", "ts", "lon", "lat", "speed", "acc", "alarm_bits")
        }
        for _ in range(per_vehicle):
            t += 30_000
            change = rng.random(n) < 0.02
            speed = np.where(change, draw_speed(n), speed)
            acc = np.where(change, speed > 0, acc)
            step = speed / 3.6 * 30
            heading = rng.uniform(0, 2 * np.pi, n)
            lon = lon + step * np.cos(heading) / kx
            lat = lat + step * np.sin(heading) / 110_574.0
            cols["vehicle"].append(np.arange(n, dtype=np.int32))
            cols["ts"].append(t + rng.integers(0, 1000, n))
            cols["lon"].append(lon)
            cols["lat"].append(lat)
            cols["speed"].append(speed + rng.normal(0, 1, n).astype(np.float32) * (speed > 0))
            cols["acc"].append(acc)
            cols["alarm_bits"].append(np.where(rng.random(n) < 0.001, 1 << 27, 0))
        out.append(PositionBatch.from_columns(**{k: np.concatenate(v) for k, v in cols.items()}))
    return out


class _Precomputed:
    """A FenceIndex whose membership answers were computed beforehand (bench only)."""

    def __init__(self, index: Any, answers: dict[int, Any]) -> None:
        self._index = index
        self._answers = answers
        self.current = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def membership(self, lon: Any, lat: Any) -> Any:
        return self._answers[self.current]


def _time_engine(
    cfg: RulesConfig,
    reg: Registry,
    batches: list[PositionBatch],
    fences: Any,
    pre: _Precomputed | None = None,
) -> tuple[float, float, int]:
    eng = RulesEngine(cfg, reg, fences=(lambda: fences) if fences is not None else None)
    if pre is not None:
        pre.current = 0
    eng.process(batches[0])  # warm-up: first sight of every vehicle
    eng.tick(int(batches[0].ts.max()))
    events = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for k, b in enumerate(batches[1:], start=1):
        if pre is not None:
            pre.current = k
        events += len(eng.process(b))
        events += len(eng.tick(int(b.ts.max())))
    return time.perf_counter() - t0, time.process_time() - c0, events


def run(quick: bool = False) -> dict[str, Any]:
    n_batches = 4 if quick else 11
    repeats = 1 if quick else 3
    cfg = RulesConfig()
    reg = make_fleet()
    index = make_fences()
    batches = make_stream(n_batches, index=index)
    rows = sum(len(b) for b in batches[1:])
    answers = {}
    t_mem = []
    for _ in range(repeats):
        t0 = time.process_time()
        for k, b in enumerate(batches):
            order = np.lexsort((b.ts, b.vehicle))
            answers[k] = index.membership(b.lon[order], b.lat[order])
        t_mem.append(time.process_time() - t0)
    pre = _Precomputed(index, answers)
    res: dict[str, list[float]] = {"rules_alone": [], "with_geofence": [], "no_fences": []}
    cpu: dict[str, list[float]] = {k: [] for k in res}
    events: dict[str, int] = {}
    for _ in range(repeats):
        for name, fences, p in (
            ("rules_alone", pre, pre),
            ("with_geofence", index, None),
            ("no_fences", None, None),
        ):
            dt, dc, ev = _time_engine(cfg, reg, batches, fences, p)
            res[name].append(rows / dt)
            cpu[name].append(rows / dc)
            events[name] = ev
    # the scalar reference on a sample of 200 vehicles x 20 rows
    from rules.reference import ReferenceEngine

    small = make_fleet(200)
    sample = make_stream(2, per_vehicle=10, n=200, index=index)
    ref = ReferenceEngine(cfg, small, fences=lambda: index)
    ref.process(sample[0])
    t0 = time.perf_counter()
    ref.process(sample[1])
    ref_rate = len(sample[1]) / (time.perf_counter() - t0)
    mem_rows = sum(len(b) for b in batches)
    return {
        "vehicles": N_VEHICLES,
        "fences": len(index),
        "batch_rows": len(batches[0]),
        "rows_timed": rows,
        "repeats": repeats,
        "rules_alone_pos_per_s": round(statistics.median(res["rules_alone"])),
        "with_geofence_pos_per_s": round(statistics.median(res["with_geofence"])),
        "no_fences_pos_per_s": round(statistics.median(res["no_fences"])),
        "cpu_rules_alone_pos_per_s": round(statistics.median(cpu["rules_alone"])),
        "cpu_with_geofence_pos_per_s": round(statistics.median(cpu["with_geofence"])),
        "cpu_no_fences_pos_per_s": round(statistics.median(cpu["no_fences"])),
        "membership_only_pos_per_s": round(mem_rows / statistics.median(t_mem)),
        "reference_pos_per_s": round(ref_rate),
        "events": events,
        "targets": {"rules_alone": 2_000_000, "with_geofence": 500_000},
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=True), indent=2))
