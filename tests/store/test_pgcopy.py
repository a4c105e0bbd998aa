"""Binary COPY rows as numpy structured arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.errors import Misuse
from store import pgcopy

COLS = {"a": ">i4", "t": ">i8", "x": ">f8", "b": "u1"}


def test_round_trip() -> None:
    values: dict[str, np.ndarray] = {
        "a": np.array([1, -2, 3], np.int32),
        "t": np.array([0, 1 << 40, -5], np.int64),
        "x": np.array([1.5, np.nan, -0.0]),
        "b": np.array([True, False, True]),
    }
    out = pgcopy.decode(COLS, pgcopy.encode(COLS, values))
    for k, v in values.items():
        np.testing.assert_array_equal(out[k], v.astype(out[k].dtype))


def test_empty_and_garbage() -> None:
    empty = pgcopy.encode(COLS, {k: np.empty(0) for k in COLS})
    assert pgcopy.decode(COLS, empty)["a"].size == 0
    assert pgcopy.decode(COLS, b"")["t"].size == 0
    with pytest.raises(Misuse):
        pgcopy.decode(COLS, b"not a copy stream at all")


def test_timestamps() -> None:
    ms = np.array([pgcopy.PG_EPOCH_MS, 1_764_034_200_000])
    np.testing.assert_array_equal(pgcopy.pg_to_ms(pgcopy.ms_to_pg(ms)), ms)
    assert pgcopy.ms_to_pg(ms)[0] == 0


def _array_field(wire: str, values: np.ndarray, oid: int = 701) -> bytes:
    """A binary 1-D array as PostgreSQL sends it (ndim, has_null, oid, dims, elements)."""
    elems = np.empty(values.size, dtype=[("len", ">i4"), ("v", wire)])
    elems["len"] = np.dtype(wire).itemsize
    elems["v"] = values
    body = b"".join(int(x).to_bytes(4, "big") for x in (1, 0, oid, values.size, 1))
    return body + elems.tobytes()


def _row(fields: list[bytes | None]) -> bytes:
    out = len(fields).to_bytes(2, "big")
    for f in fields:
        out += (-1).to_bytes(4, "big", signed=True) if f is None else len(f).to_bytes(4, "big") + f
    return out


def test_decode_arrays_concatenates_rows_and_skips_nulls() -> None:
    cols = {"t": ">i8", "x": ">f8"}
    stream = (
        pgcopy.HEADER
        + _row(
            [_array_field(">i8", np.array([1, 2]), 20), _array_field(">f8", np.array([0.5, 1.5]))]
        )
        + _row([None, None])  # array_agg over no rows
        + _row([_array_field(">i8", np.array([3]), 20), _array_field(">f8", np.array([np.nan]))])
        + b"\xff\xff"
    )
    out = pgcopy.decode_arrays(cols, [stream[:7], stream[7:]])
    assert out["t"].tolist() == [1, 2, 3] and out["t"].dtype == np.int64
    np.testing.assert_array_equal(out["x"], [0.5, 1.5, np.nan])
    assert pgcopy.decode_arrays(cols, b"")["x"].size == 0
    with pytest.raises(Misuse):
        pgcopy.decode_arrays(cols, pgcopy.HEADER + _row([None]) + b"\xff\xff")
