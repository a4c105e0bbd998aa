"""The benchmark runs and reports the figures the issue asks for (no timing asserted)."""

from __future__ import annotations

import pytest

from rules import bench


@pytest.mark.slow
def test_bench_quick_reports_figures() -> None:
    out = bench.run(quick=True)
    for key in (
        "rules_alone_pos_per_s",
        "with_geofence_pos_per_s",
        "membership_only_pos_per_s",
        "no_fences_pos_per_s",
        "reference_pos_per_s",
    ):
        assert out[key] > 0
    assert out["vehicles"] == 10_000
    # precomputed membership and the live geofence step find the same alarms
    assert out["events"]["rules_alone"] == out["events"]["with_geofence"]
