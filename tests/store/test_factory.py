"""The configuration picks the stores; the in-memory history is SQLite in memory."""

from __future__ import annotations

from fleet.batch import PositionBatch
from fleet.registry import Registry
from store.config import LiveConfig, StoreConfig
from store.factory import create_history, create_live
from store.live import MemoryLiveState, RedisLiveState
from store.postgres import PostgresHistory
from store.spool import SpoolingWriter
from store.sqlite import SQLiteHistory


async def test_memory_history_works(registry: Registry) -> None:
    store = create_history(StoreConfig(kind="memory"))
    assert isinstance(store, SQLiteHistory)
    await store.open(registry)
    b = PositionBatch.from_columns(vehicle=[0, 0], ts=[1, 2], lat=[30.0, 30.1], lon=[106.0] * 2)
    assert await store.write_positions(b) == 2
    assert (await store.track(registry.ids[0], 0, 10))["lat"].tolist() == [30.0, 30.1]
    await store.close()


def test_kinds() -> None:
    pg = create_history(StoreConfig(kind="postgres"))
    assert isinstance(pg, SpoolingWriter) and isinstance(pg.inner, PostgresHistory)
    assert isinstance(create_live(LiveConfig()), MemoryLiveState)
    assert isinstance(create_live(LiveConfig(kind="redis")), RedisLiveState)
