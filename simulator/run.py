"""The scenario and options of ``fleetwatch simulate --verify``; the run itself drives the
whole service, so it lives in the composition root (:func:`fleetwatch.verify.verify_run`).

The service runs in this process with the configuration the scenario writes
(:func:`simulator.scenario.fleet_config`), on the broker given. The day runs
``speedup`` times faster than the wall clock, so the service's timer (the
offline rule's ``now``) is given the simulated clock: the time up to which the
simulator has published. Alarms are read back from the HTTP API
(``/api/alarms`` with the scenario's token) and from the live feed (when each
was first seen, for the delay), then matched with the ground truth
(:func:`simulator.verify.match`).
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import orjson
import websockets

from simulator.fleet import TZ_OFFSET_MS, FleetSpec, is_workday
from simulator.plan import DAY

__all__ = ["DEFAULT_SCENARIO", "VerifyOptions", "VerifyRun", "default_day", "scenario_spec"]

# The default scenario: 40 vehicles, two of each violation, a few blind areas.
DEFAULT_SCENARIO = FleetSpec(
    vehicles=40,
    schedule="office",
    speeding_share=0.05,
    off_hours_share=0.05,
    out_of_area_share=0.05,
    forbidden_share=0.05,
    no_return_share=0.05,
    offline_share=0.05,
    sos_share=0.05,
    signal_loss_share=0.1,
    ordered_orgs=2,
    order_missing_share=0.025,
    order_rejected_share=0.025,
    order_approved_share=0.025,
    order_late_share=0.025,
    order_wrong_city_share=0.025,
)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["json", "jt808"] = "json"
    speedup: float = 600.0
    day: dt.date | None = None  # None: the most recent past workday
    from_hour: float = 0.0  # simulate [day + from_hour, day + to_hour) local time
    to_hour: float = 24.0
    qos: int = 0
    topic_prefix: str | None = None  # None: a unique one
    data_dir: str | None = None  # None: a temporary directory


class VerifyRun(Protocol):
    """The verify run the composition root hands ``simulate_main`` (``fleetwatch.verify``)."""

    def __call__(
        self,
        spec: FleetSpec,
        opts: VerifyOptions,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Awaitable[dict[str, Any]]: ...


def default_day(today: dt.date) -> dt.date:
    """The most recent workday before ``today`` (a whole simulated day lies in the past)."""
    d = today - dt.timedelta(days=1)
    while not is_workday(_day_start(d)):
        d -= dt.timedelta(days=1)
    return d


def _day_start(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * DAY - TZ_OFFSET_MS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _watch_feed(url: str, seen: dict[str, int], sim_clock: Callable[[], int]) -> None:
    """Record the simulated time at which each alarm episode was first pushed on the feed."""
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame.get("type") == "alarm":
                seen.setdefault(frame["alarm"]["id"], sim_clock())


def scenario_spec(vehicles: int, seed: int, **shares: float) -> FleetSpec:
    """The default scenario resized: ``vehicles`` vehicles, the same shares unless given."""
    return replace(DEFAULT_SCENARIO, vehicles=vehicles, seed=seed, **shares)  # type: ignore[arg-type]
