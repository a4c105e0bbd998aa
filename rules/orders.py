"""Dispatch orders (派车单): what excuses an otherwise irregular use of a vehicle.

An approved order names a vehicle, a time window ``[start, end]`` (epoch ms
UTC, both ends included) and a type. Each type authorises only some things
(``[rules.orders] excuses``): by default a *local* order covers a workday
trip outside working hours, *holiday* a trip or parking away on a rest day,
*overnight* a night away from the lot, *out_of_area* leaving the allowed
region (and using the car at that time). Speeding is never excused.

:class:`OrderBook` answers "which excuses hold for this vehicle at this time"
one position at a time (:meth:`OrderBook.excuses_at`) or for a whole column
of positions (:meth:`OrderBook.excuse_bits`).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from fleet.errors import BadRecord, Misuse
from fleet.registry import Registry
from rules.config import EXCUSE_TOKENS, ORDER_TYPES, OrdersConfig

__all__ = [
    "TOKEN_BITS",
    "DispatchOrder",
    "OrderBook",
    "load_orders_csv",
    "parse_orders_csv",
    "parse_orders_rows",
]

TOKEN_BITS: dict[str, int] = {tok: 1 << i for i, tok in enumerate(EXCUSE_TOKENS)}
# Positions are epoch ms < 2**42 (year 2109); the vehicle index goes above that.
_SHIFT = 42


@dataclass(frozen=True, slots=True)
class DispatchOrder:
    id: str
    vehicle_id: str
    type: str  # one of ORDER_TYPES
    start: int  # epoch ms UTC, included
    end: int  # epoch ms UTC, included
    approved: bool = True
    approved_at: int | None = None  # epoch ms; the time an after-the-fact cover is stamped with

    def __post_init__(self) -> None:
        if self.type not in ORDER_TYPES:
            raise Misuse(f"order {self.id}: type {self.type!r} is not one of {ORDER_TYPES}")
        if self.end < self.start:
            raise Misuse(f"order {self.id}: ends before it starts")


class OrderBook:
    """The approved orders known so far. Unapproved orders are ignored."""

    def __init__(
        self,
        orders: Iterable[DispatchOrder] = (),
        excuses: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        table = excuses if excuses is not None else OrdersConfig().excuses
        self.type_bits: dict[str, int] = {typ: _bits(table.get(typ, ())) for typ in ORDER_TYPES}
        self._orders: list[DispatchOrder] = []
        self._ids: set[str] = set()
        self._compiled: tuple[tuple[int, int], Any] | None = None
        for o in orders:
            self.add(o)

    def __len__(self) -> int:
        return len(self._orders)

    def add(self, order: DispatchOrder) -> bool:
        """Add an approved order; False (and nothing changes) if unapproved or already known."""
        if not order.approved or order.id in self._ids:
            return False
        self._orders.append(order)
        self._ids.add(order.id)
        self._compiled = None
        return True

    def orders(self) -> list[DispatchOrder]:
        return list(self._orders)

    def excuses_at(self, vehicle_id: str, ts: int) -> int:
        """Excuse bits (:data:`TOKEN_BITS`) that hold for ``vehicle_id`` at ``ts``."""
        bits = 0
        for o in self._orders:
            if o.vehicle_id == vehicle_id and o.start <= ts <= o.end:
                bits |= self.type_bits[o.type]
        return bits

    def excuse_bits(
        self, registry: Registry, vehicle: npt.NDArray[np.int32], ts: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint8]:
        """:meth:`excuses_at` for columns of positions (vectorized)."""
        out = np.zeros(vehicle.shape[0], dtype=np.uint8)
        if not self._orders or vehicle.shape[0] == 0:
            return out
        has, tables = self._compile(registry)
        rows = np.flatnonzero(has[vehicle])
        if rows.size == 0:
            return out
        key = (vehicle[rows].astype(np.int64) << _SHIFT) + ts[rows]
        acc = np.zeros(rows.size, dtype=np.uint8)
        for bit, (starts, ends) in tables.items():
            pos = np.searchsorted(starts, key, side="right") - 1
            hit = pos >= 0
            hit[hit] = key[hit] <= ends[pos[hit]]
            acc[hit] |= np.uint8(bit)
        out[rows] = acc
        return out

    def _compile(self, registry: Registry) -> Any:
        # Keyed by the registry's version too: a vehicle registered live (records issue)
        # needs its row, and an order of an id not known before may now apply.
        key = (id(registry), registry.version)
        if self._compiled is not None and self._compiled[0] == key:
            return self._compiled[1]
        has = np.zeros(len(registry), dtype=bool)
        per_bit: dict[int, list[tuple[int, int]]] = {}
        for o in self._orders:
            v = registry.by_id(o.vehicle_id)
            if v is None:
                continue
            has[v] = True
            bits = self.type_bits[o.type]
            for bit in TOKEN_BITS.values():
                if bits & bit:
                    per_bit.setdefault(bit, []).append(
                        ((v << _SHIFT) + o.start, (v << _SHIFT) + o.end)
                    )
        tables: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        for bit, spans in per_bit.items():
            spans.sort()
            merged: list[list[int]] = []
            for a, b in spans:
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            arr = np.array(merged, dtype=np.int64)
            tables[bit] = (arr[:, 0].copy(), arr[:, 1].copy())
        self._compiled = (key, (has, tables))
        return self._compiled[1]


def _bits(tokens: Iterable[str]) -> int:
    out = 0
    for t in tokens:
        out |= TOKEN_BITS[t]
    return out


_TRUE = {"1", "true", "yes", "y", "是", "已批准", "approved"}
_FALSE = {"0", "false", "no", "n", "否", "未批准", "pending", ""}


def _parse_time(text: str, tz: ZoneInfo, line: int, column: str) -> int:
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise BadRecord("bad_order", f"line {line}: {column} {text!r} is not ISO 8601") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return int(t.timestamp() * 1000)


def parse_orders_csv(
    text: str, registry: Registry | None = None, *, timezone: str = "Asia/Shanghai"
) -> list[DispatchOrder]:
    """Orders from CSV text: ``id,vehicle,type,start,end[,approved][,approved_at]``.

    ``vehicle`` is the vehicle id or, given a registry, its plate. Times are
    ISO 8601; without an offset they are local time in ``timezone``. A bad row
    raises :class:`BadRecord` naming the line (see :func:`parse_orders_rows` to
    keep the good rows and list the bad ones).
    """
    orders, rejected = parse_orders_rows(text, registry, timezone=timezone)
    if rejected:
        line, reason = rejected[0]
        raise BadRecord("bad_order", f"line {line}: {reason}")
    return [o for _, o in orders]


def parse_orders_rows(
    text: str, registry: Registry | None = None, *, timezone: str = "Asia/Shanghai"
) -> tuple[list[tuple[int, DispatchOrder]], list[tuple[int, str]]]:
    """Like :func:`parse_orders_csv`, row by row: ``([(line, order)], [(line, reason)])``.

    A missing header column still raises :class:`BadRecord` (no row can be read).
    """
    tz = ZoneInfo(timezone)
    by_plate = (
        {p: vid for p, vid in zip(registry.plates, registry.ids, strict=True)} if registry else {}
    )
    good: list[tuple[int, DispatchOrder]] = []
    bad: list[tuple[int, str]] = []
    reader = csv.DictReader(text.splitlines())
    missing = {"id", "vehicle", "type", "start", "end"} - set(reader.fieldnames or ())
    if missing:
        raise BadRecord("bad_order", f"CSV header lacks {sorted(missing)}")
    for line, row in enumerate(reader, start=2):
        try:
            good.append((line, _order_row(row, line, registry, by_plate, tz)))
        except BadRecord as exc:
            bad.append((line, exc.detail.removeprefix(f"line {line}: ")))
    return good, bad


def _order_row(
    row: dict[str, Any], line: int, registry: Registry | None, by_plate: dict[str, str], tz: Any
) -> DispatchOrder:
    vehicle = (row["vehicle"] or "").strip()
    vehicle = by_plate.get(vehicle, vehicle)
    if registry is not None and registry.by_id(vehicle) is None:
        raise BadRecord("bad_order", f"line {line}: unknown vehicle {vehicle!r}")
    typ = (row["type"] or "").strip()
    if typ not in ORDER_TYPES:
        raise BadRecord("bad_order", f"line {line}: type {typ!r} is not one of {ORDER_TYPES}")
    flag = (row.get("approved") or "true").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise BadRecord("bad_order", f"line {line}: approved {flag!r} is not yes/no")
    approved_at = row.get("approved_at")
    start = _parse_time(row["start"] or "", tz, line, "start")
    end = _parse_time(row["end"] or "", tz, line, "end")
    if end < start:
        raise BadRecord("bad_order", f"line {line}: end is before start")
    oid = (row["id"] or "").strip() or f"csv-{line}"
    if len(oid) > 64:
        raise BadRecord("bad_order", f"line {line}: id longer than 64 characters")
    return DispatchOrder(
        id=oid,
        vehicle_id=vehicle,
        type=typ,
        start=start,
        end=end,
        approved=flag in _TRUE,
        approved_at=_parse_time(approved_at, tz, line, "approved_at") if approved_at else None,
    )


def load_orders_csv(
    path: str | Path, registry: Registry | None = None, *, timezone: str = "Asia/Shanghai"
) -> list[DispatchOrder]:
    """:func:`parse_orders_csv` on a UTF-8 file (a BOM from Excel is accepted)."""
    return parse_orders_csv(Path(path).read_text(encoding="utf-8-sig"), registry, timezone=timezone)
