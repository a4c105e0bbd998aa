"""The columnar position batch that flows between pipeline stages.

A batch is one numpy array per field, all of the same length. Fields and units
are declared once, here, in :data:`FIELDS`; every stage that receives a batch
may call :meth:`PositionBatch.check` and may rely on these dtypes.

=============  =========  ==========================================================
field          dtype      meaning
=============  =========  ==========================================================
vehicle        int32      dense index into the :class:`~fleet.registry.Registry`
ts             int64      position time, epoch milliseconds, UTC
lat, lon       float64    WGS-84 degrees
speed          float32    km/h
heading        int16      degrees clockwise from north, 0..359
alt            int16      metres above sea level
acc            bool       ignition (ACC) on — JT/T 808 status bit 0
alarm_bits     uint32     JT/T 808 alarm flags (table 24 of the 2019 edition)
status_bits    uint32     JT/T 808 status flags (table 25 of the 2019 edition)
mileage        float32    odometer km; NaN when the terminal does not report it
backfill       bool       blind-area upload (0x0704 type 1) — stored, no live alarm
recv_ts        int64      when FleetWatch received it, epoch milliseconds, UTC
fuel           float32    fuel level, litres (JT/T 808 additional item 0x02, 1/10 L);
                          NaN when the terminal does not report it
=============  =========  ==========================================================

``fuel`` is optional when a batch is made: left out, it is NaN (a batch built by a
stage that never sees fuel, or read from a spool written before the column existed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.errors import Misuse

__all__ = [
    "FIELDS",
    "POINT_FIELDS",
    "SCHEMA",
    "UNITS",
    "BatchBuilder",
    "Field",
    "PositionBatch",
    "dtypes",
    "latest_rows",
]


@dataclass(frozen=True, slots=True)
class Field:
    """One column of the batch: its name, dtype and unit (``""`` when it has none)."""

    name: str
    dtype: np.dtype[Any]
    unit: str
    meaning: str


#: The schema, declared once (the table above is its documentation).
SCHEMA: tuple[Field, ...] = (
    Field("vehicle", np.dtype(np.int32), "", "dense registry index"),
    Field("ts", np.dtype(np.int64), "ms", "position time, epoch ms UTC"),
    Field("lat", np.dtype(np.float64), "deg", "WGS-84 latitude"),
    Field("lon", np.dtype(np.float64), "deg", "WGS-84 longitude"),
    Field("speed", np.dtype(np.float32), "km/h", "ground speed"),
    Field("heading", np.dtype(np.int16), "deg", "clockwise from north, 0..359"),
    Field("alt", np.dtype(np.int16), "m", "above sea level"),
    Field("acc", np.dtype(np.bool_), "", "ignition on, JT/T 808 status bit 0"),
    Field("alarm_bits", np.dtype(np.uint32), "", "JT/T 808-2019 table 24 flags"),
    Field("status_bits", np.dtype(np.uint32), "", "JT/T 808-2019 table 25 flags"),
    Field("mileage", np.dtype(np.float32), "km", "odometer; NaN when not reported"),
    Field("backfill", np.dtype(np.bool_), "", "blind-area upload (0x0704 type 1)"),
    Field("recv_ts", np.dtype(np.int64), "ms", "received by FleetWatch, epoch ms UTC"),
    Field("fuel", np.dtype(np.float32), "L", "fuel level (0x02); NaN when not reported"),
)

FIELDS: Mapping[str, np.dtype[Any]] = {f.name: f.dtype for f in SCHEMA}
UNITS: Mapping[str, str] = {f.name: f.unit for f in SCHEMA}

#: What a terminal reports per point (decoders produce these; ``vehicle`` and ``recv_ts``
#: are added by ingest) — also what a history store returns per track point.
POINT_FIELDS: tuple[str, ...] = tuple(n for n in FIELDS if n not in ("vehicle", "recv_ts"))


def dtypes(names: Iterable[str]) -> dict[str, np.dtype[Any]]:
    """The declared dtypes of ``names``, in that order (a subset of :data:`FIELDS`)."""
    return {n: FIELDS[n] for n in names}


Array = npt.NDArray[Any]
_NO_FUEL: Array = np.empty(0, dtype=np.float32)  # "not given": NaN of the batch's length


@dataclass(frozen=True, slots=True)
class PositionBatch:
    """Positions as columns. Build with :meth:`from_columns` or :class:`BatchBuilder`."""

    vehicle: Array
    ts: Array
    lat: Array
    lon: Array
    speed: Array
    heading: Array
    alt: Array
    acc: Array
    alarm_bits: Array
    status_bits: Array
    mileage: Array
    backfill: Array
    recv_ts: Array
    fuel: Array = field(default_factory=lambda: _NO_FUEL)

    def __post_init__(self) -> None:
        if self.fuel is _NO_FUEL and len(self):
            object.__setattr__(self, "fuel", np.full(len(self), np.nan, dtype=np.float32))

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def empty(cls) -> PositionBatch:
        return cls(**{name: np.empty(0, dtype=dt) for name, dt in FIELDS.items()})

    @classmethod
    def from_columns(cls, **columns: Any) -> PositionBatch:
        """Build a batch from array-likes, casting to the declared dtypes.

        ``vehicle``, ``ts``, ``lat`` and ``lon`` are required; the other
        fields get neutral defaults (0, False, NaN mileage, ``recv_ts = ts``).
        """
        missing = {"vehicle", "ts", "lat", "lon"} - columns.keys()
        if missing:
            raise Misuse(f"PositionBatch.from_columns needs {sorted(missing)}")
        unknown = columns.keys() - FIELDS.keys()
        if unknown:
            raise Misuse(f"PositionBatch.from_columns got unknown fields {sorted(unknown)}")
        n = len(np.asarray(columns["ts"]))
        out: dict[str, Array] = {}
        for name, dt in FIELDS.items():
            if name in columns:
                out[name] = np.ascontiguousarray(np.asarray(columns[name]), dtype=dt)
            elif name in ("mileage", "fuel"):
                out[name] = np.full(n, np.nan, dtype=dt)
            elif name == "recv_ts":
                out[name] = np.asarray(columns["ts"], dtype=dt).copy()
            else:
                out[name] = np.zeros(n, dtype=dt)
        batch = cls(**out)
        batch.check()
        return batch

    def check(self) -> None:
        """Raise :class:`Misuse` unless every field is a 1-D array of its dtype and one length."""
        n = len(self)
        for f in fields(self):
            arr = getattr(self, f.name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise Misuse(f"batch field {f.name} must be a 1-D numpy array")
            if arr.dtype != FIELDS[f.name]:
                raise Misuse(f"batch field {f.name} is {arr.dtype}, expected {FIELDS[f.name]}")
            if arr.shape[0] != n:
                raise Misuse(f"batch field {f.name} has {arr.shape[0]} rows, expected {n}")

    def columns(self) -> dict[str, Array]:
        return {name: getattr(self, name) for name in FIELDS}

    def take(self, index: Array | Sequence[int]) -> PositionBatch:
        """Rows at ``index`` (an integer index array or a boolean mask)."""
        idx = np.asarray(index)
        return PositionBatch(**{name: getattr(self, name)[idx] for name in FIELDS})

    def order_by_vehicle_time(self) -> Array:
        """The permutation that sorts rows by (vehicle, ts), stable."""
        return np.lexsort((self.ts, self.vehicle))

    @classmethod
    def concat(cls, batches: Iterable[PositionBatch]) -> PositionBatch:
        parts = [b for b in batches if len(b)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(**{name: np.concatenate([getattr(b, name) for b in parts]) for name in FIELDS})


class BatchBuilder:
    """Accumulates positions, then hands them over as one batch.

    Decoders append plain Python values here (one call per position), or whole
    columnar batches (the JT/T 808 batch decoder), so that arrays are built once
    per flush, not once per message.
    """

    __slots__ = ("_cols", "_part_rows", "_parts")

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {name: [] for name in FIELDS}
        self._parts: list[PositionBatch] = []
        self._part_rows = 0

    def __len__(self) -> int:
        return len(self._cols["ts"]) + self._part_rows

    def append(
        self,
        *,
        vehicle: int,
        ts: int,
        lat: float,
        lon: float,
        speed: float = 0.0,
        heading: int = 0,
        alt: int = 0,
        acc: bool = False,
        alarm_bits: int = 0,
        status_bits: int = 0,
        mileage: float = float("nan"),
        backfill: bool = False,
        recv_ts: int = 0,
        fuel: float = float("nan"),
    ) -> None:
        c = self._cols
        c["vehicle"].append(vehicle)
        c["ts"].append(ts)
        c["lat"].append(lat)
        c["lon"].append(lon)
        c["speed"].append(speed)
        c["heading"].append(heading)
        c["alt"].append(alt)
        c["acc"].append(acc)
        c["alarm_bits"].append(alarm_bits)
        c["status_bits"].append(status_bits)
        c["mileage"].append(mileage)
        c["backfill"].append(backfill)
        c["recv_ts"].append(recv_ts)
        c["fuel"].append(fuel)

    def extend(self, batch: PositionBatch) -> None:
        """Append every row of an already-columnar batch."""
        if len(batch):
            self._parts.append(batch)
            self._part_rows += len(batch)

    def build(self) -> PositionBatch:
        """Return the accumulated rows as one batch and start empty again."""
        cols, parts = self._cols, self._parts
        self._cols = {name: [] for name in FIELDS}
        self._parts = []
        self._part_rows = 0
        if cols["ts"]:
            # A float beyond float32 (a garbage odometer reading) becomes inf, quietly.
            with np.errstate(over="ignore"):
                arrays = {
                    name: np.array(values, dtype=FIELDS[name]) for name, values in cols.items()
                }
            parts.append(PositionBatch(**arrays))
        return PositionBatch.concat(parts)


def latest_rows(vehicle: Array, ts: Array) -> Array:
    """Row index of each distinct vehicle's latest point (the later row on equal ts).

    Returned in ascending vehicle order.
    """
    if vehicle.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((ts, vehicle))  # stable: equal (vehicle, ts) keep row order
    v = vehicle[order]
    last = np.r_[v[1:] != v[:-1], True]
    return np.asarray(order[last], dtype=np.int64)
