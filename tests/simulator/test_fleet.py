"""The simulated fleet: deterministic, parked at the lot at night, violations as recorded."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np

from simulator.fleet import Fleet, FleetSpec
from simulator.plan import DAY, MIN
from simulator.run import DEFAULT_SCENARIO, _day_start

DAY0 = _day_start(dt.date(2026, 11, 24))  # a Tuesday, a workday
SPEC = replace(DEFAULT_SCENARIO, vehicles=30)


def run(spec: FleetSpec, step_ms: int, until: int = DAY) -> dict[str, np.ndarray]:
    f = Fleet(spec, DAY0)
    parts = [f.step(DAY0 + t) for t in range(step_ms, until + 1, step_ms)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_same_seed_same_reports_however_the_steps_are_cut() -> None:
    a = run(SPEC, 60_000, 6 * 3_600_000)
    b = run(SPEC, 450_000, 6 * 3_600_000)
    order_a = np.lexsort((a["ts"], a["vehicle"]))
    order_b = np.lexsort((b["ts"], b["vehicle"]))
    for k in a:
        np.testing.assert_array_equal(a[k][order_a], b[k][order_b], err_msg=k)


def test_another_seed_another_fleet() -> None:
    a = run(SPEC, 600_000, 12 * 3_600_000)
    b = run(replace(SPEC, seed=2), 600_000, 12 * 3_600_000)
    assert len(a["ts"]) != len(b["ts"]) or not np.array_equal(a["lat"], b["lat"])


def test_parked_at_the_lot_at_night_and_moving_only_in_working_hours() -> None:
    spec = replace(SPEC, vehicles=20)
    f = Fleet(spec, DAY0)
    cols = f.step(DAY0 + DAY)
    # an approved order's evening trip is no violation, but no office-hours day either
    bad = {v.vehicle for v in f.violations(DAY0 + DAY)} | set(f.assignments(DAY0))
    local_min = ((cols["ts"] - DAY0) // MIN).astype(int)
    good = ~np.isin(cols["vehicle"], list(bad))
    night = (local_min < 6 * 60) | (local_min >= 22 * 60)
    sel = good & night
    assert sel.sum() > 1000
    assert not cols["acc"][sel].any()
    assert (cols["speed"][sel] == 0).all()
    for v in np.unique(cols["vehicle"][sel]).tolist():
        lot = f.city.lot_of(f.org_of(v))
        lat, _ = f.city.to_latlon(lot.x, lot.y)
        rows = sel & (cols["vehicle"] == v)
        assert np.abs(cols["lat"][rows] - lat).max() * 111_320 < lot.half_m
    windows = [(510, 720), (840, 1050)]  # winter hours
    moving = good & cols["acc"]
    assert moving.sum() > 500
    in_win = np.zeros(len(local_min), bool)
    for a, z in windows:
        in_win |= (local_min >= a) & (local_min <= z)
    assert in_win[moving].all()
    assert (cols["speed"][good] <= spec.limit_kmh).all()


def test_each_injected_violation_is_recorded_once() -> None:
    f = Fleet(SPEC, DAY0)
    f.step(DAY0 + DAY)
    got = f.violations(DAY0 + DAY)
    kinds = sorted(v.kind for v in got)
    assert kinds == sorted(
        [
            "speeding",
            "off_hours",
            "out_of_area",
            "forbidden_zone",
            "parking_violation",
            "offline",
            "terminal_alarm",
        ]
        * 2
        # the orders: none, rejected, approved, 补单, wrong city
        + ["no_order", "off_hours", "no_order", "off_hours", "no_order", "order_mismatch"]
    )
    assert all(v.end_ms > v.start_ms for v in got)
    # one violation per vehicle and day; an order violation may raise two kinds
    assert len({(v.vehicle, v.kind) for v in got}) == len(got)
    assert {v.vehicle for v in got} <= set(f.assignments(DAY0))
    orders = f.orders(DAY0 + DAY)
    states = {o.state for o in orders}
    assert states == {"approved", "rejected"}
    assert any(o.filed_ms > o.end for o in orders)  # the 补单
    assert sum(1 for o in orders if o.region and o.region.startswith("out_of_city:")) == 1


def test_speeding_and_sos_show_in_the_reports() -> None:
    f = Fleet(SPEC, DAY0)
    cols = f.step(DAY0 + DAY)
    for v in f.violations(DAY0 + DAY):
        rows = (cols["vehicle"] == v.vehicle) & (cols["ts"] >= v.start_ms) & (cols["ts"] < v.end_ms)
        if v.kind == "speeding":
            assert (cols["speed"][rows] > SPEC.limit_kmh).sum() >= 6
        elif v.kind == "terminal_alarm":
            assert (cols["alarm"][rows] & 1).all() and rows.sum() >= 6
        elif v.kind == "offline":
            assert not rows[1:].any() or rows.sum() <= 1


def test_blind_areas_are_back_filled_in_order() -> None:
    f = Fleet(replace(SPEC, signal_loss_share=0.5), DAY0)
    cols = f.step(DAY0 + DAY)
    back = cols["backfill"]
    assert back.sum() > 10
    for v in np.unique(cols["vehicle"][back]).tolist():
        ts = cols["ts"][cols["vehicle"] == v]
        assert (np.diff(ts) > 0).all()


def test_the_demo_city_moves_round_the_clock() -> None:
    f = Fleet(FleetSpec(vehicles=20), DAY0)
    cols = f.step(DAY0 + 3 * 3_600_000)  # 00:00-03:00
    assert cols["acc"].mean() > 0.4
    assert (cols["speed"] > 80).any()  # the speeders


def test_the_drive_back_on_a_rest_day_is_an_off_hours_violation() -> None:
    # A vehicle kept out overnight on Friday (no_return) drives back to its lot on
    # Saturday morning: no working window that day, so the truth holds an off_hours
    # violation for it (found by the month ground truth, tests/reports/test_month_truth.py).
    spec = replace(DEFAULT_SCENARIO, vehicles=16)
    friday = _day_start(dt.date(2026, 11, 13))
    fleet = Fleet(spec, friday)
    t = friday
    while t < friday + 2 * DAY:
        t += 30 * MIN
        fleet.step(t)
    away = [i for i, what in fleet.assignments(friday).items() if what == "no_return"]
    assert away
    saturday = [
        v
        for v in fleet.violations()
        if v.kind == "off_hours" and friday + DAY <= v.start_ms < friday + 2 * DAY
    ]
    back = [v for v in saturday if v.what == "return_on_rest_day"]
    assert sorted(v.vehicle for v in back) == sorted(away)
    assert all(v.end_ms > v.start_ms for v in back)
