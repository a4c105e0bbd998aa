"""A cancelled caller must not release the lock while its worker thread still runs.

The defect: ``async with lock: await asyncio.to_thread(fn)`` let ``close()`` close the sqlite3
connection under a query still running in its thread — a segmentation fault of the whole test
process (the order sweeper cancelled at shutdown). Both tests fail with the old pattern.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fleet.threads import to_thread_holding
from store.config import StoreConfig
from store.records import RecordStore, _Conn


async def test_lock_is_held_until_the_thread_returns() -> None:
    lock = asyncio.Lock()
    events: list[str] = []

    def slow() -> int:
        events.append("start")
        time.sleep(0.3)
        events.append("end")
        return 1

    task = asyncio.create_task(to_thread_holding(lock, slow))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["start", "end"]  # the cancellation came through only after the thread
    assert not lock.locked()
    assert await to_thread_holding(lock, slow) == 1  # and the lock works afterwards


async def test_records_close_waits_for_a_cancelled_query(tmp_path: Path) -> None:
    store = RecordStore(StoreConfig(kind="sqlite", sqlite_path=str(tmp_path / "r.sqlite3")))
    await store.open()
    events: list[str] = []

    def slow(c: _Conn) -> None:
        events.append("start")
        time.sleep(0.3)
        c.execute("SELECT 1")  # the old pattern: close() has set c.db = None meanwhile
        events.append("end")

    task = asyncio.create_task(store._run(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    closing = asyncio.create_task(store.close())
    with pytest.raises(asyncio.CancelledError):
        await task
    await closing
    assert events == ["start", "end"]


async def test_an_error_in_the_thread_still_reaches_the_caller() -> None:
    lock = asyncio.Lock()

    def bad() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await to_thread_holding(lock, bad)
