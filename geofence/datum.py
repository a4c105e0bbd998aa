"""GCJ-02 ↔ WGS-84 conversion.

GCJ-02 is the obfuscated datum Chinese web maps (AMap/Gaode, Tencent) publish
their tiles and boundary files in. FleetWatch keeps WGS-84 everywhere inside:
GCJ-02 fences are converted with :func:`gcj02_to_wgs84` on import, and positions
are converted with :func:`wgs84_to_gcj02` only for display on AMap tiles.

The forward transform is the published closed form (Krasovsky 1940 ellipsoid
constants plus a polynomial-and-sine offset). It has no closed-form inverse, so
:func:`gcj02_to_wgs84` iterates ``w ← w − (forward(w) − g)``, a contraction
because the offset changes by well under 1 % per degree; after 12 steps the
residual is below 1e-12 degrees (≈ 0.1 µm).

Outside mainland China's rough bounding box the transform is the identity, as
in the published form; both directions agree on that box.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "gcj02_to_wgs84",
    "gcj02_to_wgs84_scalar",
    "wgs84_to_gcj02",
    "wgs84_to_gcj02_scalar",
]

_A = 6378245.0  # semi-major axis of the Krasovsky 1940 ellipsoid used by GCJ-02
_EE = 0.00669342162296594323  # its first eccentricity squared
_LON_MIN, _LON_MAX = 72.004, 137.8347
_LAT_MIN, _LAT_MAX = 0.8293, 55.8271
_ITERATIONS = 12

FloatArray = npt.NDArray[np.float64]


def _in_china(lon: Any, lat: Any) -> Any:
    return (lon >= _LON_MIN) & (lon <= _LON_MAX) & (lat >= _LAT_MIN) & (lat <= _LAT_MAX)


def _offset(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(dlon, dlat) in degrees that GCJ-02 adds to a WGS-84 position."""
    x = lon - 105.0
    y = lat - 35.0
    pi = np.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    sx = np.sqrt(np.abs(x))
    t_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx + common
    t_lat += (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    t_lat += (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    t_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx + common
    t_lon += (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    t_lon += (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (t_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * pi)
    dlon = (t_lon * 180.0) / (_A / sqrt_magic * np.cos(rad) * pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS-84 → GCJ-02, element-wise. NaN stays NaN; outside China unchanged."""
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    x, y = np.broadcast_arrays(x, y)
    dlon, dlat = _offset(x, y)
    inside = _in_china(x, y)
    return np.where(inside, x + dlon, x), np.where(inside, y + dlat, y)


def gcj02_to_wgs84(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 → WGS-84 by fixed-point iteration of the forward transform (µm accuracy)."""
    gx = np.asarray(lon, dtype=np.float64)
    gy = np.asarray(lat, dtype=np.float64)
    gx, gy = np.broadcast_arrays(gx, gy)
    wx, wy = gx.copy(), gy.copy()
    for _ in range(_ITERATIONS):
        fx, fy = wgs84_to_gcj02(wx, wy)
        wx = wx - (fx - gx)
        wy = wy - (fy - gy)
    return wx, wy


def _offset_scalar(lon: float, lat: float) -> tuple[float, float]:
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    common = (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    sx = math.sqrt(abs(x))
    t_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx + common
    t_lat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    t_lat += (160.0 * math.sin(y / 12.0 * pi) + 320.0 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    t_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx + common
    t_lon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    t_lon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1.0 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (t_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * pi)
    dlon = (t_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * pi)
    return dlon, dlat


def wgs84_to_gcj02_scalar(lon: float, lat: float) -> tuple[float, float]:
    """Scalar reference of :func:`wgs84_to_gcj02`."""
    if not (_LON_MIN <= lon <= _LON_MAX and _LAT_MIN <= lat <= _LAT_MAX):
        return lon, lat
    dlon, dlat = _offset_scalar(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84_scalar(lon: float, lat: float) -> tuple[float, float]:
    """Scalar reference of :func:`gcj02_to_wgs84`."""
    wx, wy = lon, lat
    for _ in range(_ITERATIONS):
        fx, fy = wgs84_to_gcj02_scalar(wx, wy)
        wx, wy = wx - (fx - lon), wy - (fy - lat)
    return wx, wy
