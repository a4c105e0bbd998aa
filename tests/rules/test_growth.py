"""A registry that grows live: the engine follows it and ends where a fresh engine would."""

from __future__ import annotations

import numpy as np

from fleet.batch import PositionBatch
from fleet.model import VehicleConfig
from rules.config import RulesConfig
from rules.engine import RulesEngine
from tests.rules.conftest import local_ms, make_fences, make_registry

CFG = RulesConfig.model_validate({"speeding": {"min_duration_s": 10, "close_after_s": 20}})
FENCES = make_fences()


def late_cars() -> list[VehicleConfig]:
    return [
        VehicleConfig(id="n1", plate="川X70001", terminal="13900000001", org="county"),
        VehicleConfig(
            id="n2", plate="川X70002", terminal="13900000002", org="bureau", speed_limit_kmh=50
        ),
    ]


def stream(t0: int, vehicles: list[int]) -> PositionBatch:
    rows = [(v, t0 + k * 5_000, 70.0 + 10 * (k % 3) + 10 * v) for v in vehicles for k in range(12)]
    return PositionBatch.from_columns(
        vehicle=[r[0] for r in rows],
        ts=[r[1] for r in rows],
        lat=[30.7] * len(rows),
        lon=[106.7] * len(rows),
        speed=[r[2] for r in rows],
        acc=[True] * len(rows),
    )


def test_a_grown_engine_equals_a_fresh_one_on_the_same_input() -> None:
    t0 = local_ms(2026, 11, 25, 10)
    grown_reg = make_registry(3)
    grown = RulesEngine(CFG, grown_reg, fences=lambda: FENCES)
    first = grown.process(stream(t0, [0, 1, 2]))
    for v in late_cars():
        grown_reg.upsert(v)
    fresh_reg = make_registry(3)
    for v in late_cars():
        fresh_reg.upsert(v)
    fresh = RulesEngine(CFG, fresh_reg, fences=lambda: FENCES)
    assert fresh.process(stream(t0, [0, 1, 2])) == first
    later = stream(t0 + 120_000, [0, 1, 2, 3, 4])
    got = grown.process(later)
    assert got == fresh.process(later)
    assert {e.vehicle_id for e in got if e.action == "open"} >= {"n1", "n2"}  # the new cars alarm
    assert grown.tick(t0 + 10**7) == fresh.tick(t0 + 10**7)
    for k, a in grown.state.arrays().items():
        np.testing.assert_array_equal(a, fresh.state.arrays()[k], err_msg=k)


def test_a_retired_vehicle_is_no_longer_expected() -> None:
    t0 = local_ms(2026, 11, 25, 10)
    reg = make_registry(2)
    eng = RulesEngine(CFG, reg, fences=lambda: FENCES)
    eng.process(stream(t0, [0, 1]))
    opened = eng.tick(t0 + 3_600_000)
    assert sorted(e.vehicle_id for e in opened) == ["v0", "v1"]
    reg.upsert(reg.vehicles[1].model_copy(update={"status": "已处置"}))
    closed = eng.tick(t0 + 3_700_000)
    assert [(e.vehicle_id, e.action, e.detail.get("retired")) for e in closed] == [
        ("v1", "close", True)
    ]
    assert eng.tick(t0 + 7_200_000) == []  # and it never reopens


def test_a_sealed_vehicle_moving_is_a_critical_alarm() -> None:
    t0 = local_ms(2026, 11, 25, 10)
    reg = make_registry(2)
    reg.upsert(reg.vehicles[0].model_copy(update={"status": "封存"}))
    eng = RulesEngine(CFG, reg, fences=lambda: FENCES)
    b = PositionBatch.from_columns(
        vehicle=[0, 0, 1],
        ts=[t0, t0 + 5_000, t0],
        lat=[30.7] * 3,
        lon=[106.7] * 3,
        speed=[0.0, 12.0, 12.0],
        acc=[False, False, False],
    )
    got = [e for e in eng.process(b) if e.kind == "sealed_moving"]
    assert [(e.vehicle_id, e.action, e.severity, e.started_at) for e in got] == [
        ("v0", "open", "critical", t0 + 5_000)
    ]
