"""Latest position per vehicle: vectorized against scalar, never back in time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fleet.batch import PositionBatch
from fleet.vehicle_state import VehicleStateConfig
from store.latest import LatestPositions, latest_rows, latest_rows_reference
from tests.store.conftest import make_registry


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 50).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int32, n, elements=st.integers(0, 5)),
            hnp.arrays(np.int64, n, elements=st.integers(0, 20)),
        )
    )
)
def test_latest_rows_matches_reference(vt: tuple[np.ndarray, np.ndarray]) -> None:
    v, t = vt
    np.testing.assert_array_equal(latest_rows(v, t), latest_rows_reference(v, t))


def test_backfill_does_not_move_vehicle_back() -> None:
    reg = make_registry(3)
    latest = LatestPositions(reg, vehicle_state=VehicleStateConfig())
    moved = latest.apply(
        PositionBatch.from_columns(
            vehicle=[0, 0, 1],
            ts=[2000, 1000, 500],
            lat=[30.2, 30.1, 30.0],
            lon=[106.0] * 3,
            speed=[50, 0, 0],
            acc=[True, True, False],
        )
    )
    assert moved.tolist() == [0, 1]
    assert latest.lat[0] == 30.2
    moved = latest.apply(PositionBatch.from_columns(vehicle=[0], ts=[1500], lat=[1.0], lon=[1.0]))
    assert moved.tolist() == [] and latest.lat[0] == 30.2
    items = latest.items(latest.seen(), now_ms=2000)
    assert [i["state"] for i in items] == ["moving", "parked"]
    assert latest.items([1], now_ms=500 + 600_001)[0]["state"] == "offline"
    latest.open_alarms[1] = 1
    assert latest.items([1], now_ms=600)[0]["state"] == "alarm"
