"""Build the history store and live state a configuration asks for.

``[store] kind``: ``sqlite`` (a file), ``memory`` (SQLite in memory: tests, throwaway demos),
``postgres`` (wrapped in a :class:`~store.spool.SpoolingWriter`, so an outage spools to
``spool_dir``). ``[live] kind``: ``memory`` or ``redis``. Call ``open(registry)`` on what
comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.vehicle_state import VehicleStateConfig
from store.config import LiveConfig, StoreConfig
from store.history import HistoryStore
from store.live import LiveState, MemoryLiveState, RedisLiveState
from store.postgres import PostgresHistory
from store.spool import SpoolingWriter
from store.sqlite import SQLiteHistory

if TYPE_CHECKING:
    from notify.routing import Router

__all__ = ["create_history", "create_live"]


def create_history(
    config: StoreConfig,
    vehicle_state: VehicleStateConfig | None = None,
    *,
    notify_router: Router | None = None,
) -> HistoryStore:
    """The history store ``config`` names; ``vehicle_state`` is the board's "moving";
    with ``notify_router``, alarm events to notify are queued in the alarm write's own
    transaction (the notify outbox)."""
    vs, nr = vehicle_state, notify_router
    if config.kind == "postgres":
        pg = PostgresHistory(config, vehicle_state=vs, notify_router=nr)
        return SpoolingWriter(pg, config)
    if config.kind == "memory":
        return SQLiteHistory(config, path=":memory:", vehicle_state=vs, notify_router=nr)
    return SQLiteHistory(config, vehicle_state=vs, notify_router=nr)


def create_live(config: LiveConfig, vehicle_state: VehicleStateConfig | None = None) -> LiveState:
    if config.kind == "redis":
        return RedisLiveState(config, vehicle_state=vehicle_state)
    return MemoryLiveState(config, vehicle_state)
