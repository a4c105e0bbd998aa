"""Run the rules over stored history: what an auditor asks ("what if the limit were 80?").

The lead's ``fleetwatch replay --from --to [--config]`` reads batches from
storage in time order and calls :func:`replay`. The engine is the live one,
fed the same batches; after each batch the offline timer is ticked at the
newest position time seen, so offline episodes get the same ids as live
(their ``started_at`` is the last report, not the detection time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from rules.calendar import WorkCalendar
from rules.config import RulesConfig
from rules.engine import RulesEngine
from rules.events import AlarmEvent
from rules.orders import DispatchOrder, OrderBook

__all__ = ["episodes", "replay"]


def replay(
    batches: Iterable[PositionBatch],
    cfg: RulesConfig,
    registry: Registry,
    *,
    fences: Callable[[], Any | None] | None = None,
    timezone: str = "Asia/Shanghai",
    calendar: WorkCalendar | None = None,
    orders: Iterable[DispatchOrder] = (),
    vehicle_state: VehicleStateConfig | None = None,
    tick: bool = True,
) -> list[AlarmEvent]:
    """Every event the engine emits over ``batches``, in emission order.

    ``orders`` are known from the start (hindsight): a trip an order covers
    opens no episode at all, where live it may have opened and later been
    marked covered. Several versions of one id may be given, oldest first: the
    last one holds (a rejected or cancelled last version excuses nothing).
    """
    book = OrderBook(orders, excuses=cfg.orders.excuses)
    engine = RulesEngine(
        cfg,
        registry,
        fences=fences,
        timezone=timezone,
        calendar=calendar,
        orders=book,
        vehicle_state=vehicle_state,
    )
    out: list[AlarmEvent] = []
    newest: int | None = None
    for batch in batches:
        out += engine.process(batch)
        if len(batch):
            top = int(batch.ts.max())
            newest = top if newest is None else max(newest, top)
        if tick and newest is not None:
            out += engine.tick(newest)
    return out


def episodes(events: Iterable[AlarmEvent]) -> list[AlarmEvent]:
    """The last event of each episode (what a store holds after upserting by id), by id."""
    last: dict[str, AlarmEvent] = {}
    for e in events:
        last[e.id] = e
    return [last[k] for k in sorted(last)]
