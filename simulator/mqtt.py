"""Publish a simulated fleet to an MQTT broker (the JSON contract).

Each vehicle reports once per ``interval_s`` of simulated time; reports are
spread over the interval in slices so the map moves smoothly. ``speedup``
runs simulated time faster than the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiomqtt
import numpy as np
import orjson

from simulator.fleet import Fleet, FleetSpec, terminal_id

__all__ = ["publish_fleet"]

log = logging.getLogger(__name__)

_SLICES = 10


def _payloads(cols: dict[str, np.ndarray], idx: np.ndarray) -> list[tuple[str, bytes]]:
    out = []
    ts, lat, lon = cols["ts"].tolist(), cols["lat"].tolist(), cols["lon"].tolist()
    speed, heading = cols["speed"].tolist(), cols["heading"].tolist()
    acc, mileage = cols["acc"].tolist(), cols["mileage"].tolist()
    for i in idx.tolist():
        body = {
            "ts": ts[i],
            "lat": round(lat[i], 6),
            "lon": round(lon[i], 6),
            "speed": round(speed[i], 1),
            "heading": heading[i],
            "acc": acc[i],
            "status": 1 if acc[i] else 0,
            "mileage": round(mileage[i], 1),
        }
        out.append((f"fleet/{terminal_id(i)}/position", orjson.dumps(body)))
    return out


async def publish_fleet(
    spec: FleetSpec,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    speedup: float = 1.0,
    qos: int = 0,
    duration_s: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Publish until ``stop`` is set (or ``duration_s`` of wall time); return messages sent."""
    start_wall = clock()
    sim_start_ms = int(start_wall * 1000)
    fleet = Fleet(spec, sim_start_ms)
    slices = np.array_split(np.arange(spec.vehicles), _SLICES)
    tick_wall = spec.interval_s / _SLICES / speedup
    sent = 0
    k = 0
    async with aiomqtt.Client(host, port, identifier=f"fleetwatch-sim-{spec.seed}") as client:
        while not stop.is_set():
            if duration_s is not None and clock() - start_wall >= duration_s:
                break
            sim_now = sim_start_ms + int((clock() - start_wall) * speedup * 1000)
            cols = fleet.step(sim_now)
            for topic, body in _payloads(cols, slices[k % _SLICES]):
                await client.publish(topic, body, qos=qos)
                sent += 1
            k += 1
            if on_progress is not None:
                on_progress(sent)
            next_at = start_wall + k * tick_wall
            delay = next_at - clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    return sent
