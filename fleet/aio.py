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
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "wait_for"]

T = TypeVar("T")

log = logging.getLogger(__name__)

CANCEL_AGAIN_S = 0.5  # a task still running this long after its cancel is cancelled again


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, or :class:`TimeoutError` after ``timeout`` seconds (None: no limit)."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, give_up_s: float = 10.0
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every
    ``CANCEL_AGAIN_S`` a task that goes on (a library that swallowed the first cancel — a
    ``wait_for`` of its own — would otherwise keep a shutdown waiting for ever). After
    ``give_up_s`` the tasks still running are logged and returned, not awaited."""
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            log.error(
                "tasks still running %.0f s after their cancel: %s",
                give_up_s,
                ", ".join(sorted(t.get_name() for t in pending)),
            )
            break
        _, pending = await asyncio.wait(pending, timeout=min(CANCEL_AGAIN_S, left))
        for t in pending:
            t.cancel()
    for t in tasks:  # retrieved: an error of a cancelled task is not "never retrieved"
        if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
            log.warning("task %s had failed: %r", t.get_name(), exc)
    return sorted(pending, key=lambda t: t.get_name())
