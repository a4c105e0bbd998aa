"""`fleetwatch simulate --verify` through the real service: a day, every alarm right."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from fleetwatch.verify import verify_run
from simulator.run import DEFAULT_SCENARIO, VerifyOptions

pytestmark = [pytest.mark.services, pytest.mark.slow]


async def test_a_day_of_twelve_vehicles_scores_100_percent(
    mosquitto: tuple[str, int], unique: str
) -> None:
    # Twelve vehicles, one of each violation on seven of them, and four of the order cases
    # (no order, rejected, approved, 补单) on the two units that dispatch by order;
    # 07:00-24:00 in about a minute (1000x: a stall of 0.6 s wall would read as offline).
    spec = replace(DEFAULT_SCENARIO, vehicles=12, signal_loss_share=0.2, seed=3)
    opts = VerifyOptions(
        host=mosquitto[0],
        port=mosquitto[1],
        speedup=1000.0,
        day=dt.date(2026, 11, 24),
        from_hour=7.0,
        topic_prefix=f"sim{unique}/",
    )
    rep = await verify_run(spec, opts)
    assert rep["run"]["positions_processed"] > 0
    assert rep["false_positives"] == 0 and rep["false_negatives"] == 0, rep
    # 7 + no_order (missing) + off_hours and no_order (rejected) + the same, covered (补单)
    assert rep["matched"] == 12
    assert rep["kinds"]["no_order"]["matched"] == 3
    assert rep["precision"] == rep["recall"] == 1.0
