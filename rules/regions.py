"""Where an order allows its trip to go: the ``region`` of a dispatch order as a shape.

``region`` (CONTRACTS.md, order JSON) is one of

* ``None`` — not checked;
* ``"county:<name>"`` — one district or county of the home city (广安区, 前锋区, 岳池县,
  武胜县, 邻水县, 华蓥市; the suffix may be left off: ``county:岳池``), from
  :mod:`geofence.boundaries`;
* ``"city"`` — the whole home city (:func:`geofence.boundaries.city_outline`);
* ``"out_of_city:<city>"`` — the home city, the destination city, and the *corridor*
  between them: the band ``corridor_km`` either side of the straight line from the home
  city's centre to the destination's centre (the expressway to Chongqing or Nanchong
  runs inside it). Destination cities come from ``rules/data/neighbour_cities.json``:
  approximate circles (centre + radius), see the source note in that file.

Every shape is widened by ``tolerance_km`` (GPS error, a road along the border). A
region naming a county or city this module does not know is not checked
(:func:`known_region` says which; the order API can warn about it).

Shapes are built in a local plane — longitude scaled by cos 30.5° — so that a buffer
of ``km / 111.32`` is the same distance in every direction around Guang'an.
:func:`inside` answers for columns of positions, :func:`inside_one` for one.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, Point, Polygon

from rules.orders import parse_region

__all__ = ["CITIES_PATH", "inside", "inside_one", "known_region", "region_shape"]

CITIES_PATH = Path(__file__).parent / "data" / "neighbour_cities.json"
_KM_PER_DEG = 111.32
_XS = math.cos(math.radians(30.5))
_SUFFIXES = ("县", "区", "市")


def _plane(geom: Any) -> Any:
    return shapely.transform(geom, lambda c: c * np.array([_XS, 1.0]))


@functools.cache
def _cities() -> dict[str, Any]:
    data = json.loads(CITIES_PATH.read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for c in data["cities"]:
        lon, lat = c["centre"]
        if "polygon" in c:
            shape = _plane(Polygon(c["polygon"]))
        else:
            shape = Point(lon * _XS, lat).buffer(c["radius_km"] / _KM_PER_DEG, 32)
        for name in (c["name"], *c.get("aliases", ())):
            out[name.casefold()] = (Point(lon * _XS, lat), shape)
    return out


@functools.cache
def _counties() -> dict[str, Any]:
    from geofence.boundaries import districts

    out: dict[str, Any] = {}
    for d in districts():
        g = _plane(d.geometry)
        out[d.name] = g
        for s in _SUFFIXES:
            if d.name.endswith(s) and len(d.name) > len(s) + 1:
                out.setdefault(d.name[: -len(s)], g)
    return out


@functools.cache
def _home() -> Any:
    from geofence.boundaries import city_outline

    return _plane(city_outline())


def known_region(region: str | None) -> bool:
    """Whether :func:`region_shape` can check ``region`` (None: nothing to check, True)."""
    parsed = parse_region(region)
    if parsed is None or parsed[0] == "city":
        return True
    kind, name = parsed
    assert name is not None
    if kind == "county":
        return name in _counties()
    return name.casefold() in _cities()


@functools.cache
def region_shape(region: str, tolerance_km: float, corridor_km: float) -> Any | None:
    """The allowed shape of ``region`` in the local plane (prepared), None if unknown."""
    parsed = parse_region(region)
    assert parsed is not None
    kind, name = parsed
    if kind == "city":
        g = _home()
    elif kind == "county":
        g = _counties().get(name or "")
        if g is None:
            return None
    else:
        got = _cities().get((name or "").casefold())
        if got is None:
            return None
        centre, city = got
        home = _home()
        parts = [home, city]
        if corridor_km > 0:
            line = LineString([home.centroid, centre])
            parts.append(line.buffer(corridor_km / _KM_PER_DEG, 16))
        g = shapely.union_all(parts)
    if tolerance_km > 0:
        g = g.buffer(tolerance_km / _KM_PER_DEG, 8)
    shapely.prepare(g)
    return g


def inside(
    region: str,
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
    tolerance_km: float,
    corridor_km: float,
) -> npt.NDArray[np.bool_]:
    """Per position: inside ``region`` (True everywhere for an unknown region; a position
    without coordinates — NaN — counts as inside: nothing is known against it)."""
    g = region_shape(region, tolerance_km, corridor_km)
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    if g is None:
        return np.ones(lon.shape[0], bool)
    unknown = np.isnan(lon) | np.isnan(lat)
    got = np.asarray(shapely.intersects_xy(g, lon * _XS, lat), dtype=bool)
    return got | unknown


def inside_one(
    region: str, lon: float, lat: float, tolerance_km: float, corridor_km: float
) -> bool:
    """:func:`inside` for one position (the scalar twin)."""
    g = region_shape(region, tolerance_km, corridor_km)
    if g is None or math.isnan(lon) or math.isnan(lat):
        return True
    return bool(g.intersects(Point(lon * _XS, lat)))
