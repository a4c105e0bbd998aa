"""Waiting with a time-out without losing a cancel.

On Python 3.11 ``asyncio.wait_for(aw, t)`` runs ``aw`` in an inner task; when the outer task
is cancelled just as the inner one finishes (an event set in the same loop turn, a message
arriving), ``wait_for`` returns the result and the ``CancelledError`` is gone. A background
loop of the form ``while True: ... await asyncio.wait_for(event.wait(), t)`` then never
stops, and whatever awaits it after ``cancel()`` — an app's shutdown, a TaskGroup — hangs
(seen in the test suite: the downlink bridge's publisher held the web app's shutdown for 300 s).
:func:`wait_for` is Python 3.12's: ``asyncio.timeout`` around a plain ``await``, no inner task,
so a cancel always arrives. ``asyncio.wait_for`` is banned in the product code (ruff TID251).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_event", "wait_for"]

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, or :class:`TimeoutError` after ``timeout`` seconds (None: no limit)."""
    async with asyncio.timeout(timeout):
        return await aw


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; whether it is set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
