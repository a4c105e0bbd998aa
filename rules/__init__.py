"""Rules of official-vehicle use, evaluated on columnar batches, emitted as alarm episodes.

The engine and its helpers are imported lazily, so that loading the configuration
(``fleetwatch.config`` imports ``rules.config``) does not load the engine and the calendar.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rules.config import RulesConfig
from rules.events import KINDS, AlarmEvent, episode_id

if TYPE_CHECKING:
    from rules.calendar import DayInfo, WorkCalendar
    from rules.engine import RulesEngine
    from rules.orders import DispatchOrder, OrderBook, load_orders_csv, parse_orders_csv
    from rules.replay import replay

__all__ = [
    "KINDS",
    "AlarmEvent",
    "DayInfo",
    "DispatchOrder",
    "OrderBook",
    "RulesConfig",
    "RulesEngine",
    "WorkCalendar",
    "episode_id",
    "load_orders_csv",
    "parse_orders_csv",
    "replay",
]

_LAZY = {
    "DayInfo": "rules.calendar",
    "WorkCalendar": "rules.calendar",
    "RulesEngine": "rules.engine",
    "DispatchOrder": "rules.orders",
    "OrderBook": "rules.orders",
    "load_orders_csv": "rules.orders",
    "parse_orders_csv": "rules.orders",
    "replay": "rules.replay",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'rules' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
