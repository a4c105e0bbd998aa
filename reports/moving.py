"""What "moving" means for the rollup: one function, so that the definition can be swapped
for the unified one (``fleet.vehicle_state``) in one place.

Today it is the board's definition (:mod:`store.figures`): ACC on and speed at least
``moving_kmh``. NaN speed is not moving.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MOVING_KMH", "moving_mask", "moving_scalar"]

MOVING_KMH = 5.0


def moving_mask(
    speed: npt.NDArray[Any], acc: npt.NDArray[Any], moving_kmh: float = MOVING_KMH
) -> npt.NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        return np.asarray(acc, dtype=bool) & (np.asarray(speed, dtype=np.float64) >= moving_kmh)


def moving_scalar(speed: float, acc: bool, moving_kmh: float = MOVING_KMH) -> bool:
    return bool(acc) and speed >= moving_kmh
