"""A cancel that arrives as the awaited event is set must stop the loop (Python 3.11's
``asyncio.wait_for`` loses it; :mod:`fleet.aio` must not)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fleet import aio


def _loop_on(wait: Callable[[asyncio.Event], Awaitable[Any]]) -> Callable[..., Any]:
    async def loop(ev: asyncio.Event, turns: list[int]) -> None:
        while True:
            turns.append(1)
            await wait(ev)
            ev.clear()

    return loop


async def _cancel_as_set(wait: Callable[[asyncio.Event], Awaitable[Any]]) -> bool:
    """Whether the loop stopped after a cancel given in the same turn as the event."""
    ev, turns = asyncio.Event(), []
    task = asyncio.create_task(_loop_on(wait)(ev, turns))
    await asyncio.sleep(0.01)
    ev.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    if not done:
        task.cancel()  # the lost cancel, given again so the test ends
        await asyncio.wait({task}, timeout=0.5)
    return bool(done)


async def test_a_cancel_as_the_event_is_set_stops_the_loop() -> None:
    assert await _cancel_as_set(lambda ev: aio.wait_for(ev.wait(), 10.0))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the loss is Python 3.11's")
async def test_asyncio_wait_for_loses_that_cancel_on_311() -> None:
    # The reason the helper exists: if this ever passes on 3.11, the ban can go.
    assert not await _cancel_as_set(lambda ev: asyncio.wait_for(ev.wait(), 10.0))


async def test_timeouts_and_results() -> None:
    assert await aio.wait_for(asyncio.sleep(0, "x"), 1.0) == "x"
    with pytest.raises(TimeoutError):
        await aio.wait_for(asyncio.sleep(1.0), 0.01)
    assert await aio.wait_for(asyncio.sleep(0, 3), None) == 3


async def test_cancel_and_wait_cancels_again_what_swallowed_the_first() -> None:
    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # a library's wait_for, on 3.11
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    done = asyncio.Event()

    async def never_ends() -> None:  # swallows every cancel, until the test lets it go
        while not done.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    a = asyncio.create_task(swallows_once(), name="a")
    await asyncio.sleep(0)
    assert await aio.cancel_and_wait([a], give_up_s=5.0) == []
    assert a.cancelled()
    b = asyncio.create_task(never_ends(), name="b")
    await asyncio.sleep(0)
    assert await aio.cancel_and_wait([b], give_up_s=0.2) == [b]
    assert not b.done()
    done.set()
    await b
