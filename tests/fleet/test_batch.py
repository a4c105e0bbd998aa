"""The columnar batch keeps its declared dtypes and shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleet.batch import FIELDS, BatchBuilder, PositionBatch
from fleet.errors import Misuse


def test_from_columns_casts_and_defaults() -> None:
    b = PositionBatch.from_columns(vehicle=[1, 0], ts=[20, 10], lat=[30.0, 30.1], lon=[106, 106])
    for name, dt in FIELDS.items():
        assert getattr(b, name).dtype == dt
    assert math.isnan(b.mileage[0]) and b.recv_ts.tolist() == [20, 10]
    order = b.order_by_vehicle_time()
    assert b.take(order).vehicle.tolist() == [0, 1]


def test_misuse_is_raised() -> None:
    with pytest.raises(Misuse, match="needs"):
        PositionBatch.from_columns(ts=[1], lat=[1], lon=[1])
    with pytest.raises(Misuse, match="unknown"):
        PositionBatch.from_columns(vehicle=[1], ts=[1], lat=[1], lon=[1], colour=[1])
    with pytest.raises(Misuse, match="rows"):
        PositionBatch.from_columns(vehicle=[1, 2], ts=[1], lat=[1], lon=[1])


def test_builder_rows_and_parts() -> None:
    bb = BatchBuilder()
    bb.append(vehicle=3, ts=5, lat=1.0, lon=2.0, speed=10.0)
    bb.extend(PositionBatch.from_columns(vehicle=[4], ts=[6], lat=[1], lon=[2]))
    assert len(bb) == 2
    b = bb.build()
    b.check()
    assert sorted(b.vehicle.tolist()) == [3, 4] and len(bb) == 0
    assert len(BatchBuilder().build()) == 0
    assert len(PositionBatch.concat([PositionBatch.empty(), b, b])) == 4
    assert np.array_equal(PositionBatch.concat([b]).ts, b.ts)


def test_the_schema_is_declared_once_with_units() -> None:
    from fleet.batch import POINT_FIELDS, SCHEMA, UNITS
    from ingest.jt808.position import COLUMNS
    from store.history import TRACK_FIELDS

    assert [f.name for f in SCHEMA] == list(FIELDS)
    assert UNITS["speed"] == "km/h" and UNITS["ts"] == "ms" and UNITS["mileage"] == "km"
    # the decoder's and the store's columns are the batch's, not declarations of their own
    assert {k: COLUMNS[k] for k in POINT_FIELDS} == {k: FIELDS[k] for k in POINT_FIELDS}
    assert dict(TRACK_FIELDS) == {k: FIELDS[k] for k in POINT_FIELDS}
