"""A simulated fleet: vehicles moving plausibly around a centre, as numpy arrays.

Pure and deterministic: the same seed and the same sequence of ``step`` calls
give the same positions. Time is passed in. The publisher adapters
(``simulator/mqtt.py``) turn each step into messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Fleet", "FleetSpec", "terminal_id"]

_EARTH_M_PER_DEG = 111_320.0


def terminal_id(i: int) -> str:
    """Terminal id (an 11-digit SIM number, as JT/T 808 terminals have) of simulated vehicle i."""
    return f"139{i:08d}"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    vehicles: int = 200
    center_lat: float = 30.456  # Guang'an (广安)
    center_lon: float = 106.633
    radius_km: float = 15.0
    interval_s: float = 10.0
    speeding_share: float = 0.05  # vehicles that speed now and then
    parked_share: float = 0.3  # vehicles parked at any moment (ACC off)
    limit_kmh: float = 80.0
    seed: int = 1


class Fleet:
    """State of every simulated vehicle; :meth:`step` advances it and returns the reports."""

    def __init__(self, spec: FleetSpec, start_ms: int) -> None:
        self.spec = spec
        n = spec.vehicles
        self.rng = np.random.default_rng(spec.seed)
        r = spec.radius_km * 1000 * np.sqrt(self.rng.random(n)) * 0.6
        theta = self.rng.random(n) * 2 * np.pi
        self.lat = spec.center_lat + r * np.cos(theta) / _EARTH_M_PER_DEG
        self.lon = spec.center_lon + r * np.sin(theta) / (
            _EARTH_M_PER_DEG * np.cos(np.radians(spec.center_lat))
        )
        self.heading = self.rng.random(n) * 360.0
        self.speed = np.zeros(n)
        self.parked = self.rng.random(n) < spec.parked_share
        self.speeder = np.zeros(n, dtype=bool)
        self.speeder[: round(n * spec.speeding_share)] = True
        self.mileage = self.rng.random(n) * 50_000
        self.now_ms = start_ms
        self.steps = 0

    def step(self, now_ms: int) -> dict[str, npt.NDArray[np.generic]]:
        """Advance to ``now_ms`` and return one report per vehicle (columns)."""
        spec = self.spec
        n = spec.vehicles
        dt = max(0.0, (now_ms - self.now_ms) / 1000.0)
        self.now_ms = now_ms
        self.steps += 1
        rng = self.rng
        # Now and then a parked car leaves and a moving car parks.
        flip = rng.random(n) < dt / 1800.0
        self.parked ^= flip
        cruise = 30.0 + 35.0 * rng.random(n)
        # Speeders speed for about 2 of every 5 minutes.
        phase = ((now_ms // 1000) + np.arange(n) * 37) % 300
        speeding_now = self.speeder & (phase < 120)
        cruise = np.where(speeding_now, spec.limit_kmh + 20.0 + 15.0 * rng.random(n), cruise)
        target = np.where(self.parked & ~speeding_now, 0.0, cruise)
        self.speed = np.clip(self.speed + (target - self.speed) * 0.7, 0.0, 160.0)
        self.speed[target == 0.0] = 0.0
        turn = rng.normal(0.0, 25.0, n)
        # Beyond the radius, head back towards the centre.
        dy = (spec.center_lat - self.lat) * _EARTH_M_PER_DEG
        dx = (spec.center_lon - self.lon) * _EARTH_M_PER_DEG * np.cos(np.radians(self.lat))
        dist = np.hypot(dx, dy)
        home = np.degrees(np.arctan2(dx, dy)) % 360.0
        away = dist > spec.radius_km * 1000
        self.heading = np.where(away, home, (self.heading + turn) % 360.0)
        step_m = self.speed / 3.6 * dt
        rad = np.radians(self.heading)
        self.lat = self.lat + step_m * np.cos(rad) / _EARTH_M_PER_DEG
        self.lon = self.lon + step_m * np.sin(rad) / (
            _EARTH_M_PER_DEG * np.cos(np.radians(self.lat))
        )
        self.mileage = self.mileage + step_m / 1000.0
        acc = ~self.parked | speeding_now
        return {
            "vehicle": np.arange(n, dtype=np.int32),
            "ts": np.full(n, now_ms, dtype=np.int64),
            "lat": self.lat.copy(),
            "lon": self.lon.copy(),
            "speed": self.speed.astype(np.float32),
            "heading": self.heading.astype(np.int16),
            "acc": acc,
            "mileage": self.mileage.astype(np.float32),
        }
