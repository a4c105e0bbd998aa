"""Blocking work in a worker thread under an asyncio lock — held until the thread is done.

``async with lock: await asyncio.to_thread(fn)`` has a trap: when the awaiting task is
cancelled (a shutdown, a request that went away), the ``async with`` releases the lock at once,
but the thread cannot be stopped and goes on using what the lock guards. The next holder —
often ``close()`` — then uses the same sqlite3 connection at the same moment, and sqlite3
crashes the whole process (a segmentation fault seen in the test suite: an order sweeper
cancelled mid-query while the store closed). :func:`to_thread_holding` keeps the lock until the
thread has returned, then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["to_thread_holding"]

T = TypeVar("T")


async def to_thread_holding(lock: asyncio.Lock, fn: Callable[..., T], /, *args: object) -> T:
    """``fn(*args)`` in a worker thread while holding ``lock``, until the thread finishes."""
    async with lock:
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            while not work.done():  # the thread still runs: keep the lock until it returns
                try:
                    await asyncio.wait({work})
                except asyncio.CancelledError:
                    continue
            if not work.cancelled():
                work.exception()  # retrieved: its error is not "never retrieved"
            raise
