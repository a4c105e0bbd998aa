"""The checks every position passes before it enters a batch, whatever codec decoded it.

JSON (:mod:`ingest.json_codec`) and JT/T 808 (:mod:`ingest.jt808.position`) decode
their wire formats into plain numbers; both then run :func:`check_columns` over the
columns, so a value FleetWatch refuses from one codec it refuses from the other. A
row that fails goes to the dead letters with the reason of the *first* check it
fails, in the order of :data:`RANGES` and the time window:

=============  ======================================================  ===============
check          accepted                                                reason
=============  ======================================================  ===============
lat, lon       WGS-84 degrees, -90..90 and -180..180                   ``out_of_range``
ts             not more than ``max_future_ms`` after its receive time  ``future_ts``
ts             not more than ``max_past_ms`` before its receive time   ``stale_ts``
speed          0..400 km/h                                             ``out_of_range``
heading        0..360 degrees                                          ``out_of_range``
alt            -500..9000 m                                            ``out_of_range``
mileage        0..10,000,000 km, or NaN (not reported)                 ``out_of_range``
=============  ======================================================  ===============

The time window is what keeps one impossible date (a terminal after a GPS week
rollover reports 2098) from becoming a vehicle's last point, after which every
real position would look late and raise no live alarm. It is measured against
the receive time, which the adapter takes from its clock: the check itself is
pure.

:func:`check_position` is the scalar reference, one row at a time;
:func:`check_columns` is the vectorized form the codecs use. They agree on every
input (tests/ingest/test_validate.py, hypothesis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fleet.errors import BadRecord

__all__ = ["RANGES", "TimeWindow", "check_columns", "check_position", "valid_rows"]

Array = npt.NDArray[Any]

# The accepted range of each checked value, in check order: (column, low, high, unit).
# lat/lon come first (a position off the globe says nothing else is worth reading),
# then the time window, then these.
_LATLON = (("lat", -90.0, 90.0), ("lon", -180.0, 180.0))
RANGES: tuple[tuple[str, float, float, str], ...] = (
    ("speed", 0.0, 400.0, "km/h"),
    # JT/T 808-2019 table 23: heading 0..359; JSON terminals may say 360 for north.
    ("heading", 0.0, 360.0, ""),
    ("alt", -500.0, 9000.0, "m"),
    # No vehicle's odometer reaches ten million km; a larger value is a broken terminal
    # (and would overflow the float32 column to inf).
    ("mileage", 0.0, 10_000_000.0, "km"),
)


class TimeWindow(Protocol):
    """How far from its receive time a position's time may be (epoch ms)."""

    @property
    def max_future_ms(self) -> int: ...

    @property
    def max_past_ms(self) -> int: ...


def _range_error(name: str, value: float, lo: float, hi: float, unit: str) -> BadRecord:
    u = f" {unit}" if unit else ""
    return BadRecord("out_of_range", f"{name} {value}{u} outside {lo:g}..{hi:g}")


def check_position(
    *,
    ts: int,
    lat: float,
    lon: float,
    speed: float,
    heading: float,
    alt: float,
    mileage: float,
    recv_ts: int,
    window: TimeWindow,
) -> BadRecord | None:
    """The first check ``ts``.. ``mileage`` fail, or None. ``mileage`` NaN: not reported."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return BadRecord("out_of_range", f"lat {lat} / lon {lon} outside WGS-84 range")
    if ts > recv_ts + window.max_future_ms:
        return BadRecord("future_ts", f"ts is {(ts - recv_ts) / 1000:.0f} s in the future")
    if ts < recv_ts - window.max_past_ms:
        hint = " (ts must be epoch milliseconds, not seconds)" if 0 < ts < 10**11 else ""
        return BadRecord("stale_ts", f"ts is older than the accepted window{hint}")
    values = {"speed": speed, "heading": heading, "alt": alt, "mileage": mileage}
    for name, lo, hi, unit in RANGES:
        v = values[name]
        if name == "mileage" and math.isnan(v):
            continue
        if not lo <= v <= hi:
            return _range_error(name, v, lo, hi, unit)
    return None


def valid_rows(columns: Mapping[str, Array], recv_ts: Array, window: TimeWindow) -> Array:
    """The mask of rows that pass every check (see :func:`check_columns`)."""
    ts = np.asarray(columns["ts"], dtype=np.int64)
    recv = np.asarray(recv_ts, dtype=np.int64)
    ok = np.ones(ts.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares False: it fails, as in the reference
        for name, lo, hi in _LATLON:
            v = np.asarray(columns[name], dtype=np.float64)
            ok &= (v >= lo) & (v <= hi)
        # Clamped so that recv +/- the window stays inside int64, as Python's ints do.
        i64 = np.iinfo(np.int64)
        ok &= ts <= np.minimum(recv, i64.max - window.max_future_ms) + window.max_future_ms
        ok &= ts >= np.maximum(recv, i64.min + window.max_past_ms) - window.max_past_ms
        for name, lo, hi, _ in RANGES:
            if name not in columns:
                continue
            v = np.asarray(columns[name], dtype=np.float64)
            inside = (v >= lo) & (v <= hi)
            if name == "mileage":
                inside |= np.isnan(v)
            ok &= inside
    return ok


def check_columns(
    columns: Mapping[str, Array], recv_ts: Array, window: TimeWindow
) -> tuple[npt.NDArray[np.bool_], list[tuple[int, BadRecord]]]:
    """Rows that pass every check (a mask) and ``(row, error)`` for each that does not.

    ``columns`` holds ``ts, lat, lon, speed, heading, alt`` and optionally
    ``mileage`` (absent or NaN: not reported), as the codec decoded them;
    ``recv_ts`` each row's receive time. The errors are those
    :func:`check_position` gives, row by row.
    """
    ok = valid_rows(columns, recv_ts, window)
    errors: list[tuple[int, BadRecord]] = []
    if ok.all():
        return ok, errors
    mileage = columns.get("mileage")
    recv = np.asarray(recv_ts, dtype=np.int64)
    for i in np.flatnonzero(~ok).tolist():
        err = check_position(
            ts=int(columns["ts"][i]),
            lat=float(columns["lat"][i]),
            lon=float(columns["lon"][i]),
            speed=float(columns["speed"][i]),
            heading=float(columns["heading"][i]),
            alt=float(columns["alt"][i]),
            mileage=math.nan if mileage is None else float(mileage[i]),
            recv_ts=int(recv[i]),
            window=window,
        )
        # The two forms agree (tested); should they ever not, the row is still refused.
        errors.append((i, err or BadRecord("out_of_range", "outside the accepted ranges")))
    return ok, errors
