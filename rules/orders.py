"""Dispatch orders (派车单): what excuses an otherwise irregular use of a vehicle.

An approved order names a vehicle, a time window ``[start, end]`` (epoch ms
UTC, both ends included) and a type. Each type authorises only some things
(``[rules.orders] excuses``): by default a *local* order covers a workday
trip outside working hours, *holiday* a trip or parking away on a rest day,
*overnight* a night away from the lot, *out_of_area* leaving the allowed
region (and using the car at that time). Speeding is never excused.

:class:`OrderBook` answers "which excuses hold for this vehicle at this time"
one position at a time (:meth:`OrderBook.excuses_at`) or for a whole column
of positions (:meth:`OrderBook.excuse_bits`), and "which order covers this vehicle
at this time" (:meth:`OrderBook.covering` / :meth:`OrderBook.cover_index`) for the
rules that check a trip against its order (``no_order``, ``order_mismatch``,
``driver_mismatch``).

An order is *valid* — excuses and covers — only while it is approved and its
``state`` is not pending, rejected or cancelled. Adding an order whose id the
book already holds replaces the earlier version; a withdrawn version (rejected,
cancelled, ``approved=False``) removes the id's excuses from then on.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from fleetwatch.errors import BadRecord, Misuse
from fleetwatch.registry import Registry
from rules.config import EXCUSE_TOKENS, ORDER_TYPES, OrdersConfig

__all__ = [
    "ORDER_STATES",
    "TOKEN_BITS",
    "DispatchOrder",
    "OrderBook",
    "load_orders_csv",
    "parse_orders_csv",
    "parse_orders_rows",
    "parse_region",
]

TOKEN_BITS: dict[str, int] = {tok: 1 << i for i, tok in enumerate(EXCUSE_TOKENS)}
#: Order states (CONTRACTS.md, order JSON). Only the ones after approval excuse anything.
ORDER_STATES: tuple[str, ...] = (
    "pending",
    "approved",
    "dispatched",
    "out",
    "returned",
    "completed",
    "rejected",
    "cancelled",
)
_VOID_STATES = frozenset({"pending", "rejected", "cancelled"})
_REGION_RE = re.compile(r"^(city|county:[^:\s][^:]*|out_of_city:[^:\s][^:]*)$")


def parse_region(region: str | None) -> tuple[str, str | None] | None:
    """``"county:岳池县"`` → ``("county", "岳池县")``; ``"city"`` → ``("city", None)``;
    None → None. Raises :class:`Misuse` for anything else."""
    if region is None:
        return None
    if not _REGION_RE.match(region):
        raise Misuse(
            f"region {region!r} is not null, 'city', 'county:<name>' or 'out_of_city:<city>'"
        )
    kind, _, name = region.partition(":")
    return kind, (name or None)


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
    driver_id: str | None = None  # the driver on the order (None: not checked)
    region: str | None = None  # None | "city" | "county:<name>" | "out_of_city:<city>"
    state: str = "approved"  # one of ORDER_STATES

    def __post_init__(self) -> None:
        if self.type not in ORDER_TYPES:
            raise Misuse(f"order {self.id}: type {self.type!r} is not one of {ORDER_TYPES}")
        if self.end < self.start:
            raise Misuse(f"order {self.id}: ends before it starts")
        if self.state not in ORDER_STATES:
            raise Misuse(f"order {self.id}: state {self.state!r} is not one of {ORDER_STATES}")
        parse_region(self.region)

    @property
    def valid(self) -> bool:
        """Approved and not pending, rejected or cancelled: it excuses and covers."""
        return self.approved and self.state not in _VOID_STATES


class OrderBook:
    """The valid orders known so far, the latest version of each id.

    Invalid versions (pending, rejected, cancelled, unapproved) are not kept: they
    excuse nothing, and one replacing a valid version withdraws that version."""

    def __init__(
        self,
        orders: Iterable[DispatchOrder] = (),
        excuses: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        table = excuses if excuses is not None else OrdersConfig().excuses
        self.type_bits: dict[str, int] = {typ: _bits(table.get(typ, ())) for typ in ORDER_TYPES}
        self._by_id: dict[str, DispatchOrder] = {}
        self._orders: list[DispatchOrder] = []
        self._compiled: tuple[tuple[int, int], Any] | None = None
        self._cover: dict[tuple[int, int, int, bool], Any] = {}
        for o in orders:
            self.put(o)

    def __len__(self) -> int:
        return len(self._orders)

    def put(self, order: DispatchOrder) -> DispatchOrder | None:
        """Record this version of ``order.id``; return the valid version it replaced (or None).

        Nothing changes if the same version is already held."""
        old = self._by_id.get(order.id)
        if old == order or (old is None and not order.valid):
            return None
        if order.valid:
            self._by_id[order.id] = order
        else:
            del self._by_id[order.id]
        self._orders = sorted(self._by_id.values(), key=lambda o: o.id)
        self._compiled = None
        self._cover = {}
        return old

    def add(self, order: DispatchOrder) -> bool:
        """Add a valid order; False (and nothing changes) if invalid or this version is
        already known. A new version of a known id replaces it (see :meth:`put`)."""
        if self._by_id.get(order.id) == order or not order.valid:
            if not order.valid and order.id in self._by_id:
                self.put(order)
            return False
        self.put(order)
        return True

    def get(self, order_id: str) -> DispatchOrder | None:
        return self._by_id.get(order_id)

    def orders(self) -> list[DispatchOrder]:
        """The valid orders, by id."""
        return list(self._orders)

    # -- which order covers (vehicle, ts) ----------------------------------------------------

    def covering(self, vehicle_id: str, ts: int, pad_ms: int = 0) -> DispatchOrder | None:
        """The valid order of ``vehicle_id`` whose window (widened by ``pad_ms`` on both
        sides) holds ``ts``; of several, the one that started last (then the greatest id)."""
        best: DispatchOrder | None = None
        for o in self._orders:
            if (
                o.vehicle_id == vehicle_id
                and o.start - pad_ms <= ts <= o.end + pad_ms
                and (best is None or (o.start, o.id) > (best.start, best.id))
            ):
                best = o
        return best

    def covering_in_org(self, registry: Registry, org: int, ts: int) -> DispatchOrder | None:
        """:meth:`covering` over the orders of every vehicle of organisation ``org`` (its
        registry index, exactly that organisation, not its units)."""
        best: DispatchOrder | None = None
        for o in self._orders:
            v = registry.by_id(o.vehicle_id)
            if (
                v is not None
                and int(registry.org_index[v]) == org
                and o.start <= ts <= o.end
                and (best is None or (o.start, o.id) > (best.start, best.id))
            ):
                best = o
        return best

    def cover_index(
        self,
        registry: Registry,
        vehicle: npt.NDArray[np.int32],
        ts: npt.NDArray[np.int64],
        pad_ms: int = 0,
        *,
        by_org: bool = False,
    ) -> npt.NDArray[np.int64]:
        """:meth:`covering` for columns (vectorized): the position in :meth:`orders` of
        each row's covering order, -1 for none. ``by_org``: :meth:`covering_in_org` of
        the row vehicle's organisation instead."""
        out = np.full(vehicle.shape[0], -1, np.int64)
        if not self._orders or vehicle.shape[0] == 0:
            return out
        starts, labels = self._cover_table(registry, pad_ms, by_org)
        if starts.size == 0:
            return out
        group = registry.org_index[vehicle] if by_org else vehicle
        key = (group.astype(np.int64) << _SHIFT) + ts
        pos = np.searchsorted(starts, key, side="right") - 1
        ok = pos >= 0
        out[ok] = labels[pos[ok]]
        return out

    def _cover_table(self, registry: Registry, pad_ms: int, by_org: bool) -> Any:
        # Elementary intervals per vehicle (or organisation): between consecutive window
        # edges the covering order is constant; each interval's packed start and label.
        key = (id(registry), registry.version, pad_ms, by_org)
        got = self._cover.get(key)
        if got is not None:
            return got
        per_g: dict[int, list[tuple[int, int, int, str]]] = {}
        for k, o in enumerate(self._orders):
            v = registry.by_id(o.vehicle_id)
            if v is not None:
                g = int(registry.org_index[v]) if by_org else v
                per_g.setdefault(g, []).append((o.start - pad_ms, o.end + pad_ms, k, o.id))
        starts: list[int] = []
        labels: list[int] = []
        for g in sorted(per_g):
            spans = per_g[g]
            edges = sorted({a for a, _, _, _ in spans} | {b + 1 for _, b, _, _ in spans})
            for e in edges:
                best: tuple[tuple[int, str], int] | None = None
                for a, b, k, oid in spans:
                    if a <= e <= b and (best is None or (a, oid) > best[0]):
                        best = ((a, oid), k)
                starts.append((g << _SHIFT) + e)
                labels.append(best[1] if best is not None else -1)
        table = (np.array(starts, np.int64), np.array(labels, np.int64))
        if len(self._cover) > 8:
            self._cover.clear()
        self._cover[key] = table
        return table

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
