"""Matching raised alarms with injected violations."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from fleetwatch.verify import verify_direct
from simulator.run import DEFAULT_SCENARIO, _day_start
from simulator.verify import Raised, Truth, match

H = 3_600_000


def test_a_perfect_run() -> None:
    t = [Truth("speeding", "v1", 1000, 60_000), Truth("offline", "v2", 10_000, 5 * H)]
    r = [Raised("a", "speeding", "v1", 11_000), Raised("b", "offline", "v2", 610_000, 640_000)]
    rep = match(t, r, end_ms=10 * H)
    assert rep["precision"] == rep["recall"] == 1.0
    assert rep["kinds"]["speeding"]["delay_s_p50"] == 10.0
    assert rep["kinds"]["offline"]["delay_s_p50"] == 630.0


def test_wrong_vehicle_wrong_kind_and_a_split_episode() -> None:
    t = [Truth("speeding", "v1", 0, 60_000), Truth("forbidden_zone", "v1", 0, H)]
    r = [
        Raised("a", "speeding", "v1", 5_000),
        Raised("b", "speeding", "v1", 50_000),  # the same episode again: unexplained
        Raised("c", "speeding", "v9", 5_000),  # nobody sped in v9
        Raised("d", "off_hours", "v1", 5_000),  # the wrong kind
    ]
    rep = match(t, r, end_ms=2 * H)
    sp = rep["kinds"]["speeding"]
    assert (sp["matched"], sp["false_positives"], sp["false_negatives"]) == (1, 2, 0)
    assert rep["kinds"]["forbidden_zone"]["false_negatives"] == 1
    assert rep["kinds"]["off_hours"]["precision"] == 0.0
    assert rep["precision"] == 0.25 and rep["recall"] == 0.5


def test_an_alarm_far_outside_the_violation_does_not_count() -> None:
    t = [Truth("speeding", "v1", H, H + 60_000)]
    early = match(t, [Raised("a", "speeding", "v1", H - 10 * 60_000)], end_ms=3 * H)
    late = match(t, [Raised("a", "speeding", "v1", 2 * H)], end_ms=3 * H)
    assert early["recall"] == late["recall"] == 0.0
    assert early["precision"] == late["precision"] == 0.0


def test_not_yet_due_is_neither_hit_nor_miss() -> None:
    t = [Truth("parking_violation", "v1", 10 * H - 60_000, 18 * H)]
    rep = match(t, [], end_ms=10 * H)
    assert rep["kinds"]["parking_violation"]["not_due"] == 1
    assert rep["recall"] == 1.0


def test_empty() -> None:
    assert match([], [], end_ms=0)["precision"] == 1.0


def test_the_default_scenario_through_the_rules_engine_scores_100_percent() -> None:
    d0 = _day_start(dt.date(2026, 11, 24))
    rep = verify_direct(replace(DEFAULT_SCENARIO, vehicles=40), d0, d0 + 24 * H)
    assert rep["false_positives"] == 0 and rep["false_negatives"] == 0, rep
    # 14 of the seven kinds; orders: no order (no_order), rejected (off_hours + no_order),
    # approved (nothing), 补单 (off_hours + no_order, both covered), wrong city (order_mismatch)
    assert rep["matched"] == 20
    assert rep["kinds"]["no_order"]["matched"] == 3
    assert rep["kinds"]["order_mismatch"]["matched"] == 1
    assert rep["kinds"]["off_hours"]["matched"] == 4
    assert rep["orders"]["rejected"] == 1 and rep["orders"]["late"] == 1
    assert rep["orders"]["with_region"] == 1 and rep["orders"]["approved"] >= 3
    assert rep["precision"] == rep["recall"] == 1.0
