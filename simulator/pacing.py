"""Pacing shared by the simulator's publishers (MQTT and TCP terminals).

Simulated time runs ``speedup`` times the wall clock in ticks of ``TICK_S``; an
optional ``max_rate`` caps messages per wall second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fleet import aio

__all__ = ["TICK_S", "hold_rate", "sim_window", "wait_tick"]

log = logging.getLogger(__name__)

TICK_S = 0.05  # wall seconds between fleet steps


def sim_window(
    wall0_s: float,
    speedup: float,
    duration_s: float | None,
    start_ms: int | None,
    end_ms: int | None,
) -> tuple[int, int | None]:
    """(simulated start, simulated end) in epoch ms for a run starting at ``wall0_s``.

    Accelerated time must not run into the future (ingest rejects positions more than
    ``ingest.max_future_s`` ahead): without an explicit start it starts in the past and
    ends at the present — ``duration_s × (speedup − 1)`` back, or a day back when the
    run has no duration.
    """
    if start_ms is not None:
        return start_ms, end_ms
    if speedup <= 1:
        return int(wall0_s * 1000), end_ms
    behind_s = duration_s * (speedup - 1) if duration_s is not None else 86_400.0
    log.info("accelerated x%g: simulated time starts %.0f s ago, ends now", speedup, behind_s)
    return int((wall0_s - behind_s) * 1000), int(wall0_s * 1000) if end_ms is None else end_ms


async def hold_rate(
    sent: int, max_rate: float | None, wall0_s: float, clock: Callable[[], float]
) -> None:
    """Sleep while ``sent`` messages are ahead of ``max_rate`` per wall second."""
    if max_rate is not None:
        ahead = sent / max_rate - (clock() - wall0_s)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def wait_tick(
    stop: asyncio.Event, wall0_s: float, tick: int, clock: Callable[[], float]
) -> None:
    """Wait for the wall time of tick number ``tick`` (or ``stop``)."""
    delay = wall0_s + tick * TICK_S - clock()
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(stop.wait(), delay)
