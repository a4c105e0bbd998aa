"""Episode bookkeeping shared by the vectorized engine and the scalar reference.

The rule cores decide *when* an episode opens, updates and closes (one raw
change per row); this module turns those changes into :class:`AlarmEvent`
objects, remembers the open episodes and the recently closed ones (so that an
order approved after the fact can cover them), and records blind-area
back-fill episodes as closed, ``backfill=True`` episodes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from fleetwatch.registry import Registry
from rules.events import AlarmEvent, episode_id
from rules.orders import TOKEN_BITS, DispatchOrder, OrderBook

__all__ = ["EpisodeBook", "Raw", "apply_order", "covers"]


@dataclass(frozen=True, slots=True)
class Raw:
    """One change found by a rule core, before it becomes an :class:`AlarmEvent`."""

    vehicle: int
    key: str  # rule key: kind, or "terminal_alarm/<bit name>"
    action: str  # open | update | close
    ts: int
    started_at: int
    ended_at: int | None
    lat: float
    lon: float
    detail: dict[str, Any]


_COVERABLE = frozenset({"off_hours", "parking_violation", "out_of_area", "no_order"})
#: Kinds any valid order of the vehicle covers, whatever its type (a 补单 filed afterwards).
ANY_ORDER = frozenset({"no_order"})


@functools.cache
def split_key(key: str) -> tuple[str, str | None]:
    """``"terminal_alarm/sos"`` → ``("terminal_alarm", "sos")``; ``"speeding"`` → (…, None)."""
    kind, _, sub = key.partition("/")
    return kind, sub or None


def excuse_token(ev: AlarmEvent) -> str | None:
    """The excuse an order must carry to cover this episode (None: cannot be covered)."""
    if ev.kind in ("off_hours", "parking_violation"):
        return f"{ev.kind}.{ev.detail.get('reason')}"
    if ev.kind == "out_of_area":
        return "out_of_area"
    return None


def covers(order: DispatchOrder, bits: int, ev: AlarmEvent) -> bool:
    """Whether ``order`` (its type's excuse ``bits``) covers episode ``ev`` after the fact:
    same vehicle, the whole episode inside the window, and the excuse the kind needs
    (any order at all for :data:`ANY_ORDER` kinds)."""
    if ev.vehicle_id != order.vehicle_id or not order.valid:
        return False
    if ev.kind not in ANY_ORDER:
        tok = excuse_token(ev)
        if tok is None or not bits & TOKEN_BITS[tok]:
            return False
    end = ev.ended_at if ev.ended_at is not None else ev.ts
    return order.start <= ev.started_at and end <= order.end


class EpisodeBook:
    def __init__(
        self, registry: Registry, *, critical: frozenset[str] = frozenset(), backfill: bool = False
    ) -> None:
        self.registry = registry
        self.critical = critical
        self.backfill = backfill
        self.open: dict[tuple[int, str], AlarmEvent] = {}
        self.closed: list[AlarmEvent] = []

    def severity(self, key: str) -> str:
        kind, sub = split_key(key)
        if kind == "terminal_alarm":
            return "critical" if sub in self.critical else "warning"
        if kind == "offline":
            return "info"
        if kind == "sealed_moving":  # a sealed car moving: CONTRACTS.md, critical
            return "critical"
        return "warning"

    def apply(self, raw: Raw) -> AlarmEvent:
        v, key = raw.vehicle, raw.key
        if raw.action == "open":
            kind, sub = split_key(key)
            vid = self.registry.ids[v]
            ev = AlarmEvent(
                id=episode_id(vid, kind, raw.started_at, sub=sub, backfill=self.backfill),
                vehicle=v,
                vehicle_id=vid,
                kind=kind,
                action="open",
                started_at=raw.started_at,
                ts=raw.ts,
                lat=raw.lat,
                lon=raw.lon,
                severity=self.severity(key),  # type: ignore[arg-type]
                backfill=self.backfill,
                detail=dict(raw.detail),
            )
            self.open[(v, key)] = ev
            return ev
        prev = self.open[(v, key)]
        detail = {**prev.detail, **raw.detail}
        if raw.action == "close":
            assert raw.ended_at is not None
            detail["duration_s"] = (raw.ended_at - prev.started_at) / 1000
            ev = AlarmEvent(
                prev.id,
                v,
                prev.vehicle_id,
                prev.kind,
                "close",
                prev.started_at,
                raw.ts,
                raw.lat,
                raw.lon,
                raw.ended_at,
                prev.severity,
                prev.backfill,
                prev.covered,
                detail,
            )
            del self.open[(v, key)]
            if prev.kind in _COVERABLE:
                self.closed.append(ev)
            return ev
        ev = AlarmEvent(
            prev.id,
            v,
            prev.vehicle_id,
            prev.kind,
            "update",
            prev.started_at,
            raw.ts,
            raw.lat,
            raw.lon,
            None,
            prev.severity,
            prev.backfill,
            prev.covered,
            detail,
        )
        self.open[(v, key)] = ev
        return ev

    def close_all(self, last: dict[int, tuple[int, float, float]]) -> list[AlarmEvent]:
        """Close every open episode at its vehicle's last row (back-fill chunks end so)."""
        out = []
        for v, key in sorted(self.open, key=lambda k: (k[0], k[1])):
            ts, lat, lon = last[v]
            out.append(self.apply(Raw(v, key, "close", ts, 0, ts, lat, lon, {"truncated": True})))
        return out

    def cover(self, order: DispatchOrder, bits: int) -> list[AlarmEvent]:
        """Mark the episodes ``order`` covers; return their updated events.

        A covered episode names its order in ``detail["order"]``."""
        out: list[AlarmEvent] = []

        def stamp(ev: AlarmEvent, **kw: Any) -> AlarmEvent:
            return dataclasses.replace(
                ev,
                covered=True,
                ts=max(ev.ts, order.approved_at or ev.ts),
                detail={**ev.detail, "order": order.id},
                **kw,
            )

        for k, ev in sorted(self.open.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if not ev.covered and covers(order, bits, ev):
                new = stamp(ev, action="update")
                self.open[k] = new
                out.append(new)
        for i, ev in enumerate(self.closed):
            if not ev.covered and covers(order, bits, ev):
                new = stamp(ev)
                self.closed[i] = new
                out.append(new)
        return out

    def withdraw(self, order_id: str, others: list[tuple[DispatchOrder, int]]) -> list[AlarmEvent]:
        """The episodes covered by ``order_id`` lose that cover (the order was rejected,
        cancelled or changed); one that another of ``others`` (order, type bits) covers
        names that order instead. Returns the changed events."""
        out: list[AlarmEvent] = []

        def redo(ev: AlarmEvent) -> AlarmEvent | None:
            if not ev.covered or ev.detail.get("order") != order_id:
                return None
            by = next((o for o, b in others if covers(o, b, ev)), None)
            detail = {k: v for k, v in ev.detail.items() if k != "order"}
            if by is not None:
                detail["order"] = by.id
            new = dataclasses.replace(ev, covered=by is not None, detail=detail)
            return None if new == ev else new

        for k, ev in sorted(self.open.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            new = redo(ev)
            if new is not None:
                new = dataclasses.replace(new, action="update")
                self.open[k] = new
                out.append(new)
        for i, ev in enumerate(self.closed):
            new = redo(ev)
            if new is not None:
                self.closed[i] = new
                out.append(new)
        return out

    def prune(self, before_ms: int) -> None:
        """Forget closed episodes that ended before ``before_ms``."""
        self.closed = [e for e in self.closed if (e.ended_at or 0) >= before_ms]

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "open": [[v, k, dataclasses.asdict(e)] for (v, k), e in self.open.items()],
            "closed": [dataclasses.asdict(e) for e in self.closed],
        }

    def load_json(self, doc: dict[str, Any], index_of: dict[str, int]) -> None:
        """Load :meth:`to_json`; ``index_of`` maps vehicle ids to today's dense indices
        (episodes of vehicles no longer registered are dropped)."""
        self.open = {}
        for _, k, e in doc["open"]:
            if e["vehicle_id"] in index_of:
                v = index_of[e["vehicle_id"]]
                self.open[(v, str(k))] = AlarmEvent(**{**e, "vehicle": v})
        self.closed = [
            AlarmEvent(**{**e, "vehicle": index_of[e["vehicle_id"]]})
            for e in doc["closed"]
            if e["vehicle_id"] in index_of
        ]


def apply_order(orders: OrderBook, book: EpisodeBook, order: DispatchOrder) -> list[AlarmEvent]:
    """Record a version of an order (new, changed, approved, rejected, cancelled) in
    ``orders`` and bring the covers of ``book``'s episodes in line with it; return the
    changed events. The same version twice changes nothing."""
    old = orders.get(order.id)
    if old == order or (old is None and not order.valid):
        return []
    orders.put(order)
    out: list[AlarmEvent] = []
    if old is not None:
        others = [(o, orders.type_bits[o.type]) for o in orders.orders()]
        out += book.withdraw(order.id, others)
    if order.valid:
        out += book.cover(order, orders.type_bits[order.type])
    return out
