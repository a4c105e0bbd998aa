"""The latest position per vehicle, as arrays by dense registry index (a pure core).

Feed it batches (:meth:`LatestPositions.apply`), ask it for live-feed vehicle
items (:meth:`LatestPositions.items`) with ``now`` passed in. A row never
replaces a newer one: a blind-area back-fill arriving late does not move a
vehicle back in time on the map.

Vehicle state (ARCHITECTURE "Live feed"): :mod:`fleet.vehicle_state`, the one
definition the feed and the rules use too (``[vehicle_state]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.batch import PositionBatch, latest_rows
from fleet.registry import Registry, grown
from fleet.vehicle_state import VehicleStateConfig, state_names, states

__all__ = ["LatestPositions", "latest_rows", "latest_rows_reference", "vehicle_states"]

NEVER = np.iinfo(np.int64).min
Array = npt.NDArray[Any]


def latest_rows_reference(vehicle: Array, ts: Array) -> Array:
    """Scalar twin of :func:`latest_rows`."""
    best: dict[int, tuple[int, int]] = {}
    for i, (v, t) in enumerate(zip(vehicle.tolist(), ts.tolist(), strict=True)):
        if v not in best or t >= best[v][0]:
            best[v] = (t, i)
    return np.array([best[v][1] for v in sorted(best)], dtype=np.int64)


def vehicle_states(
    ts: Array,
    speed: Array,
    acc: Array,
    open_alarms: Array,
    now_ms: int,
    vehicle_state: VehicleStateConfig,
) -> list[str]:
    """State name per vehicle (:func:`fleet.vehicle_state.states`), vectorized."""
    return state_names(states(ts, speed, acc, open_alarms, now_ms, vehicle_state))


class LatestPositions:
    """Latest point per vehicle, by dense index."""

    def __init__(self, registry: Registry, *, vehicle_state: VehicleStateConfig) -> None:
        n = len(registry)
        self.registry = registry
        self.vehicle_state = vehicle_state
        self.ts = np.full(n, NEVER, dtype=np.int64)
        self.lat = np.zeros(n)
        self.lon = np.zeros(n)
        self.speed = np.zeros(n, dtype=np.float32)
        self.heading = np.zeros(n, dtype=np.int16)
        self.acc = np.zeros(n, dtype=bool)
        self.open_alarms = np.zeros(n, dtype=np.int32)

    def follow_registry(self) -> None:
        """Grow to a registry that gained vehicles (registered live, the records issue)."""
        n = len(self.registry)
        if n > self.ts.shape[0]:
            self.ts = grown(self.ts, n, NEVER)
            for name in ("lat", "lon", "speed", "heading", "acc", "open_alarms"):
                setattr(self, name, grown(getattr(self, name), n, 0))

    def apply(self, batch: PositionBatch) -> Array:
        """Take the batch's latest row per vehicle where it is newer; returns those vehicles."""
        self.follow_registry()
        idx = latest_rows(batch.vehicle, batch.ts)
        v = batch.vehicle[idx]
        newer = batch.ts[idx] >= self.ts[v]
        idx, v = idx[newer], v[newer]
        self.ts[v] = batch.ts[idx]
        self.lat[v] = batch.lat[idx]
        self.lon[v] = batch.lon[idx]
        self.speed[v] = batch.speed[idx]
        self.heading[v] = batch.heading[idx]
        self.acc[v] = batch.acc[idx]
        return np.asarray(v, dtype=np.int64)

    def seen(self) -> Array:
        self.follow_registry()
        return np.flatnonzero(self.ts != NEVER)

    def positions(self, vehicles: Array | Sequence[int]) -> list[dict[str, Any]]:
        """Stored fields of these vehicles (no state: that depends on ``now``)."""
        v = np.asarray(vehicles, dtype=np.int64)
        reg = self.registry
        return [
            {
                "vehicle": reg.ids[i],
                "plate": reg.plates[i],
                "org": reg.org_of(i),
                "ts": t,
                "lat": la,
                "lon": lo,
                "speed": round(sp, 1),
                "heading": h,
                "acc": a,
            }
            for i, t, la, lo, sp, h, a in zip(
                v.tolist(),
                self.ts[v].tolist(),
                self.lat[v].tolist(),
                self.lon[v].tolist(),
                self.speed[v].astype(np.float64).tolist(),
                self.heading[v].tolist(),
                self.acc[v].tolist(),
                strict=True,
            )
        ]

    def items(self, vehicles: Array | Sequence[int], now_ms: int) -> list[dict[str, Any]]:
        """Live-feed vehicle items with their state at ``now_ms``."""
        v = np.asarray(vehicles, dtype=np.int64)
        states = vehicle_states(
            self.ts[v],
            self.speed[v],
            self.acc[v],
            self.open_alarms[v],
            now_ms,
            self.vehicle_state,
        )
        out = self.positions(v)
        for item, state in zip(out, states, strict=True):
            item["state"] = state
        return out
