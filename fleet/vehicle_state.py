"""Vehicle state — ``moving | parked | offline | alarm`` — defined once.

The map (the live feed), the live state, the rules and the board all ask the same
two questions, with the same two numbers from ``[vehicle_state]``:

- **moving**: ACC on and speed at least ``moving_speed_kmh``. When a source has no ACC
  at all (``acc=None``: ACC unknown) the speed alone decides. A NaN speed is not moving.
  The batch always carries ACC (a JSON position without ``acc`` takes JT/T 808 status
  bit 0, see ``ingest.json_codec``), so ``acc=None`` is for callers without an ACC
  column, never a per-row "unknown".
- **offline**: no report for ``offline_after_s`` or longer (``now - ts >= offline_after``),
  or never a report at all.

A vehicle's state is the first that holds of: ``alarm`` (an alarm episode is open),
``offline``, ``moving``, ``parked``. The rules use the same *moving* for off_hours and
fatigue, and the same *offline* for the offline rule's timer; ``sealed_moving`` (封存)
counts any sign of use: ACC on, or moving by speed alone.

Every function here is vectorized over numpy arrays and has a scalar twin (``*_scalar``)
beside it; ``tests/fleet/test_vehicle_state.py`` checks that they agree on random input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ALARM",
    "MOVING",
    "OFFLINE",
    "PARKED",
    "STATES",
    "VehicleStateConfig",
    "moving",
    "moving_scalar",
    "offline",
    "offline_scalar",
    "state_names",
    "state_scalar",
    "states",
]

#: State names by code; the codes are what :func:`states` returns (``int8``).
STATES: tuple[str, ...] = ("moving", "parked", "offline", "alarm")
MOVING, PARKED, OFFLINE, ALARM = 0, 1, 2, 3

Array = npt.NDArray[Any]


class VehicleStateConfig(BaseModel):
    """``[vehicle_state]``: the two numbers every stage's idea of the vehicle state uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    moving_speed_kmh: float = Field(
        5.0, ge=0, description="ACC on and at least this speed = moving (map, rules, board)"
    )
    offline_after_s: float = Field(
        600.0, gt=0, description="no report for this long or longer = offline (map, rules)"
    )

    @property
    def offline_after_ms(self) -> int:
        return round(self.offline_after_s * 1000)


def moving(speed: Array, acc: Array | None, moving_speed_kmh: float) -> npt.NDArray[np.bool_]:
    """Per row: ACC on (or ``acc is None``) and ``speed >= moving_speed_kmh``; NaN is not."""
    sp = np.asarray(speed, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fast = sp >= np.float64(moving_speed_kmh)
    if acc is None:
        return fast
    return np.asarray(acc, dtype=bool) & fast


def moving_scalar(speed: float, acc: bool | None, moving_speed_kmh: float) -> bool:
    """Scalar twin of :func:`moving`."""
    if math.isnan(speed) or speed < moving_speed_kmh:
        return False
    return acc is None or bool(acc)


def offline(
    ts: Array, now_ms: int, offline_after_ms: int, has: Array | None = None
) -> npt.NDArray[np.bool_]:
    """Per vehicle: silent for ``offline_after_ms`` or longer, or (``has`` False) never seen.

    Written as ``ts <= now - after`` so that a "never" sentinel (``int64`` min) in ``ts``
    cannot overflow."""
    t = np.asarray(ts, dtype=np.int64)
    silent = t <= np.int64(now_ms - offline_after_ms)
    if has is None:
        return silent
    return np.asarray(silent | ~np.asarray(has, dtype=bool), dtype=np.bool_)


def offline_scalar(ts: int | None, now_ms: int, offline_after_ms: int) -> bool:
    """Scalar twin of :func:`offline` (``ts`` None: never seen)."""
    return ts is None or now_ms - ts >= offline_after_ms


def states(
    ts: Array,
    speed: Array,
    acc: Array | None,
    open_alarms: Array,
    now_ms: int,
    cfg: VehicleStateConfig,
    has: Array | None = None,
) -> npt.NDArray[np.int8]:
    """State code per vehicle (:data:`STATES`): alarm, else offline, else moving, else parked."""
    st = np.where(moving(speed, acc, cfg.moving_speed_kmh), MOVING, PARKED).astype(np.int8)
    st[offline(ts, now_ms, cfg.offline_after_ms, has)] = OFFLINE
    st[np.asarray(open_alarms) > 0] = ALARM
    return st


def state_scalar(
    ts: int | None,
    speed: float,
    acc: bool | None,
    open_alarms: int,
    now_ms: int,
    cfg: VehicleStateConfig,
) -> str:
    """Scalar twin of :func:`states`, by name."""
    if open_alarms > 0:
        return "alarm"
    if offline_scalar(ts, now_ms, cfg.offline_after_ms):
        return "offline"
    return "moving" if moving_scalar(speed, acc, cfg.moving_speed_kmh) else "parked"


def state_names(codes: Array) -> list[str]:
    """The names of state codes."""
    return [STATES[c] for c in np.asarray(codes).tolist()]
