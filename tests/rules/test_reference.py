"""Differential test: the vectorized engine and the scalar reference find the same episodes."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwatch.batch import PositionBatch
from fleetwatch.config import VehicleConfig
from fleetwatch.registry import Registry
from rules.config import RulesConfig
from rules.engine import RulesEngine
from rules.orders import DispatchOrder
from rules.reference import ReferenceEngine
from tests.rules.conftest import local_ms, make_fences, make_registry

FENCES = make_fences()
N_VEHICLES = 4  # v3 is sealed (封存); v4 is registered live, mid-stream (records issue)
STATUSES = ["在用", "封存", "待处置", "已处置"]

# Short durations so that random streams of a few dozen points open and close episodes.
CFG = RulesConfig.model_validate(
    {
        "speeding": {"min_duration_s": 10, "close_after_s": 20, "update_step_kmh": 5},
        "off_hours": {
            "min_duration_s": 30,
            "close_after_s": 60,
            "working_hours": {
                "by_org": {"county": {"winter": ["09:00-17:00"], "summer": ["08:00-18:00"]}}
            },
        },
        "out_of_area": {"min_duration_s": 20, "close_after_s": 30, "update_step_km": 2},
        "forbidden_zone": {"min_duration_s": 0, "close_after_s": 30},
        "parking_violation": {"grace_s": 120, "close_after_s": 30},
        "offline": {"after_s": 600},
        "terminal_alarm": {"bits": ["sos", "illegal_ignition", "power_cut"], "close_after_s": 15},
        "fatigue": {"max_driving_s": 1800, "rest_s": 600},
        "sealed_moving": {"min_duration_s": 0, "close_after_s": 40},
        "no_order": {"orgs": ["bureau"], "min_km": 1, "min_minutes": 2, "close_after_s": 60},
        "order_mismatch": {
            "window_tolerance_minutes": 2,
            "vehicle_grace_s": 30,
            "min_duration_s": 10,
            "close_after_s": 30,
        },
        "driver_mismatch": {"min_duration_s": 0, "close_after_s": 20},
    }
)

# Places (lon, lat): in town, out of the city, the forbidden spot, the lot, the school zone.
PLACES = [
    (106.7, 30.7),
    (107.3, 30.5),
    (106.505, 30.505),
    (106.601, 30.401),
    (106.32, 30.32),
    (106.999, 30.999),
]
STARTS = [
    local_ms(2026, 11, 21, 9),  # Saturday
    local_ms(2026, 11, 25, 11, 50),  # Wednesday, around the lunch break
    local_ms(2026, 10, 10, 17, 20),  # make-up workday, evening
    local_ms(2026, 10, 1, 21, 50),  # National Day, night
    local_ms(2026, 9, 30, 23, 30),  # summer → winter hours next day... and a holiday
    local_ms(2027, 1, 4, 8, 0),  # a year chinese-calendar does not know (fallback)
]
ORDER_TYPES = ["local", "out_of_area", "holiday", "overnight"]
# Every state an order passes through; ids repeat so that later versions replace earlier
# ones (approved, then cancelled; rejected, then approved after all; a 补单 filed late).
ORDER_STATES = ["approved", "rejected", "cancelled", "pending", "dispatched", "completed"]
REGIONS = [None, "city", "county:广安区", "county:岳池县", "out_of_city:重庆", "out_of_city:成都"]

segment = st.tuples(
    st.integers(0, N_VEHICLES),  # vehicle (N_VEHICLES: the one registered live)
    st.integers(1, 25),  # rows in this segment
    st.sampled_from([0, 1, 5, 9, 10, 11, 20, 31, 60, 300, 601, 1200, 3600]),  # step, s
    st.sampled_from(range(len(PLACES))),
    st.sampled_from([0.0, 0.5, 4.0, 25.0, 31.0, 59.9, 60.0, 61.0, 80.0, 80.5, 130.0, float("nan")]),
    st.booleans(),  # acc
    st.sampled_from([0, 1, 1 << 27, (1 << 27) | 1, 1 << 8]),  # alarm bits
    st.integers(0, 20),  # 0: back-fill flag, 1: jump back in time
)


@st.composite
def scenario(draw: Any) -> dict[str, Any]:
    start = draw(st.sampled_from(STARTS))
    segments = draw(st.lists(segment, min_size=0, max_size=12))
    ts = start
    cols: dict[str, list[Any]] = {
        k: [] for k in ("vehicle", "ts", "lon", "lat", "speed", "acc", "alarm_bits", "backfill")
    }
    for v, reps, step, place, speed, acc, alarm, odd in segments:
        lon, lat = PLACES[place]
        for r in range(reps):
            ts += step * 1000
            cols["vehicle"].append(v)
            cols["ts"].append(ts - 1_800_000 if odd == 1 else ts)
            cols["lon"].append(lon + v * 1e-4 + r * 1e-3)
            cols["lat"].append(lat)
            cols["speed"].append(speed)
            cols["acc"].append(acc)
            cols["alarm_bits"].append(alarm)
            cols["backfill"].append(odd == 0)
    n = len(cols["ts"])
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    shuffle = draw(st.booleans())
    orders = draw(
        st.lists(
            st.tuples(
                st.integers(0, N_VEHICLES - 1),
                st.sampled_from(ORDER_TYPES),
                st.sampled_from([-3600, -60, 0, 300, 1200, 5000, 20000]),  # start, s
                st.sampled_from([0, 120, 600, 1800, 3600, 60000]),  # duration, s
                st.integers(0, len(cuts) + 1),
                st.sampled_from(ORDER_STATES),
                st.integers(0, 3),  # id: equal ids are versions of one order
                st.sampled_from(REGIONS),
                st.sampled_from([None, "d1", "d2"]),  # driver
            ),
            max_size=6,
        )
    )
    cards = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(cuts) + 1),
                st.integers(0, N_VEHICLES),
                st.sampled_from([None, "d1", "d2", "d3"]),
            ),
            max_size=4,
        )
    )
    ticks = draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    grow_at = draw(st.integers(0, len(cuts) + 1))
    new_status = draw(st.sampled_from(STATUSES))
    v1_status = draw(st.sampled_from(STATUSES))
    return {
        "grow_at": grow_at,
        "new_status": new_status,
        "v1_status": v1_status,
        "start": start,
        "cols": cols,
        "cuts": cuts,
        "shuffle": shuffle,
        "orders": orders,
        "cards": cards,
        "ticks": ticks,
    }


def sealed_registry() -> Registry:
    reg = make_registry(N_VEHICLES)
    reg.upsert(reg.vehicles[3].model_copy(update={"status": "封存"}))
    return reg


def change_registry(reg: Registry, sc: dict[str, Any]) -> None:
    """Live changes: a vehicle registered with a drawn status, v1's status changed."""
    reg.upsert(
        VehicleConfig(
            id=f"v{N_VEHICLES}",
            plate="川X99999",
            terminal="13999999999",
            org="county",
            status=sc["new_status"],
        )
    )
    reg.upsert(reg.vehicles[1].model_copy(update={"status": sc["v1_status"]}))


def run_both(sc: dict[str, Any], with_fences: bool) -> tuple[list[Any], list[Any], Any, Any]:
    reg = sealed_registry()
    fences = (lambda: FENCES) if with_fences else None
    vec = RulesEngine(CFG, reg, fences=fences)
    ref = ReferenceEngine(CFG, reg, fences=fences)
    batch = PositionBatch.from_columns(**sc["cols"])
    n = len(batch)
    bounds = [0, *sc["cuts"], n]
    out_v: list[Any] = []
    out_r: list[Any] = []

    def orders_at(k: int) -> None:
        for v, typ, a, d, at, state, j, region, driver in sc["orders"]:
            if at == k:
                o = DispatchOrder(
                    f"o{j}",
                    f"v{v}",
                    typ,
                    sc["start"] + a * 1000,
                    sc["start"] + (a + d) * 1000,
                    approved=state != "pending",
                    approved_at=sc["start"] + (a + d) * 1000 if at > 0 else None,
                    state=state,
                    region=region,
                    driver_id=driver,
                )
                out_v.extend(vec.add_order(o))
                out_r.extend(ref.add_order(o))
        for at, v, driver in sc["cards"]:
            if at == k:
                out_v.extend(vec.driver_card(f"v{v}", driver, sc["start"]))
                out_r.extend(ref.driver_card(f"v{v}", driver, sc["start"]))

    for k in range(len(bounds) - 1):
        orders_at(k)
        if k == sc["grow_at"]:
            change_registry(reg, sc)
        idx = np.arange(bounds[k], bounds[k + 1])
        if sc["shuffle"]:
            idx = idx[::-1]
        if len(reg) <= N_VEHICLES:  # not registered yet: its terminal is unknown
            idx = idx[batch.vehicle[idx] < N_VEHICLES]
        part = batch.take(idx)
        out_v += vec.process(part)
        out_r += ref.process(part)
        if sc["ticks"][k] and len(part):
            now = int(part.ts.max()) + 700_000
            out_v += vec.tick(now)
            out_r += ref.tick(now)
    orders_at(len(bounds) - 1)
    return out_v, out_r, vec, ref


settings_ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings_
@given(scenario())
def test_vectorized_equals_reference_with_fences(sc: dict[str, Any]) -> None:
    logging.getLogger("rules.calendar").setLevel(logging.ERROR)
    out_v, out_r, vec, ref = run_both(sc, True)
    assert out_v == out_r
    assert vec.open_episodes() == ref.open_episodes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_vectorized_equals_reference_without_fences(sc: dict[str, Any]) -> None:
    logging.getLogger("rules.calendar").setLevel(logging.ERROR)
    out_v, out_r, _, _ = run_both(sc, False)
    assert out_v == out_r


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(0, 5))
def test_restart_from_saved_state_changes_nothing(sc: dict[str, Any], at: int) -> None:
    """Saving the state after any batch and restoring it into a new engine is invisible."""
    logging.getLogger("rules.calendar").setLevel(logging.ERROR)
    reg = sealed_registry()
    change_registry(reg, sc)
    batch = PositionBatch.from_columns(**sc["cols"])
    bounds = [0, *sc["cuts"], len(batch)]
    one = RulesEngine(CFG, reg, fences=lambda: FENCES)
    two = RulesEngine(CFG, reg, fences=lambda: FENCES)
    a: list[Any] = []
    b: list[Any] = []
    for k in range(len(bounds) - 1):
        part = batch.take(np.arange(bounds[k], bounds[k + 1]))
        a += one.process(part)
        b += two.process(part)
        if k == at:
            blob = two.state_bytes()
            two = RulesEngine(CFG, reg, fences=lambda: FENCES)
            two.restore(blob)
    a += one.tick(sc["start"] + 10**8)
    b += two.tick(sc["start"] + 10**8)
    assert a == b


def test_empty_batches_and_nan_speed() -> None:
    reg = make_registry(2)
    vec = RulesEngine(CFG, reg, fences=lambda: FENCES)
    ref = ReferenceEngine(CFG, reg, fences=lambda: FENCES)
    assert vec.process(PositionBatch.empty()) == ref.process(PositionBatch.empty()) == []
    t = local_ms(2026, 11, 21, 10)
    b = PositionBatch.from_columns(
        vehicle=[0, 0, 0],
        ts=[t, t + 20_000, t + 40_000],
        lat=[30.7] * 3,
        lon=[106.7] * 3,
        speed=[np.nan, np.nan, 90.0],
        acc=[True] * 3,
    )
    assert vec.process(b) == ref.process(b)


def test_unknown_vehicle_is_misuse() -> None:
    from fleetwatch.errors import Misuse

    vec = RulesEngine(CFG, make_registry(2))
    with pytest.raises(Misuse):
        vec.process(PositionBatch.from_columns(vehicle=[5], ts=[1], lat=[30.0], lon=[106.0]))
