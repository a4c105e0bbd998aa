"""Geography routes: the city's district boundaries and place names, with no map service.

``GET /api/geo/boundaries`` serves the boundaries shipped in the package
(:mod:`geofence.boundaries`, WGS-84); ``GET /api/geo/place`` and ``GET /api/geo/places``
name points with :class:`geofence.places.Gazetteer`, built from those boundaries and the
fences in force (rebuilt when the fence set changes). :func:`place_texts` is what the
alarm and track handlers use to put a ``place`` on what they return.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from starlette.requests import Request

from geofence.boundaries import districts, load_districts
from geofence.places import Gazetteer, Lang
from web.api import ApiState, fail
from web.auth import Principal
from web.routes import RouteTable

__all__ = ["gazetteer", "place_texts"]

ROUTES = RouteTable()
route = ROUTES.route

_lock = threading.Lock()
_cache: dict[int, tuple[Any, Gazetteer]] = {}  # id(ApiState) -> (fence index, gazetteer)


def gazetteer(st: ApiState) -> Gazetteer:
    """The gazetteer for the fences in force now (one per fence-index snapshot)."""
    index = st.ctx.fences.index if st.ctx.fences is not None else None
    hit = _cache.get(id(st))
    if hit is not None and hit[0] is index:
        return hit[1]
    with _lock:
        fences = index.fences if index is not None else ()
        gaz = Gazetteer.build(districts(), fences, st.ctx.config.web.places)
        if len(_cache) >= 16:  # one entry per app; tests build many apps in one process
            _cache.clear()
        _cache[id(st)] = (index, gaz)
    return gaz


def _lang(request: Request, st: ApiState) -> Lang:
    lang = request.query_params.get("lang") or st.ctx.config.web.language
    if lang not in ("zh", "en"):
        raise fail(400, "lang must be zh or en")
    return "en" if lang == "en" else "zh"


def place_texts(st: ApiState, lat: list[float], lon: list[float], lang: Lang = "zh") -> list[str]:
    """Place text of each point (``""`` for a point without coordinates)."""
    if not lat:
        return []
    y, x = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    out = [""] * len(x)
    if ok.any():
        gaz = gazetteer(st)
        idx = np.flatnonzero(ok)
        found = gaz.lookup(x[idx], y[idx])
        for j, i in enumerate(idx.tolist()):
            out[i] = gaz.text(found, j, lang)
    return out


def _coord(text: str, what: str, lo: float, hi: float) -> float:
    try:
        v = float(text)
    except ValueError:
        raise fail(400, f"{what} must be a number of degrees") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise fail(400, f"{what} must be within [{lo:g}, {hi:g}]")
    return v


@route(
    "GET",
    "/api/geo/boundaries",
    "viewer",
    "The city's districts and counties as GeoJSON (WGS-84), for a base layer without tiles",
    tag="geo",
)
async def boundaries(request: Request, st: ApiState, p: Principal) -> Any:
    return load_districts()


@route(
    "GET",
    "/api/geo/place",
    "viewer",
    "The place name of one point: district, nearest lot or banned place and its distance",
    params=(
        ("lat", "number", "WGS-84 latitude"),
        ("lon", "number", "WGS-84 longitude"),
        ("lang", "string", "zh|en (default: the page's language)"),
    ),
    tag="geo",
)
async def place(request: Request, st: ApiState, p: Principal) -> Any:
    q = request.query_params
    if "lat" not in q or "lon" not in q:
        raise fail(400, "need lat and lon")
    lat = _coord(q["lat"], "lat", -90.0, 90.0)
    lon = _coord(q["lon"], "lon", -180.0, 180.0)
    gaz = gazetteer(st)
    return gaz.place(gaz.lookup([lon], [lat]), 0, _lang(request, st))


@route(
    "GET",
    "/api/geo/places",
    "viewer",
    "Place names of many points at once (points=lat,lon;lat,lon;…)",
    params=(
        ("points", "string", "lat,lon pairs separated by ';' (at most web.places.max_points)"),
        ("lang", "string", "zh|en (default: the page's language)"),
    ),
    tag="geo",
)
async def places(request: Request, st: ApiState, p: Principal) -> Any:
    raw = request.query_params.get("points") or ""
    pairs = [s for s in raw.split(";") if s.strip()]
    limit = st.ctx.config.web.places.max_points
    if len(pairs) > limit:
        raise fail(400, f"at most {limit} points per request, got {len(pairs)}")
    lat: list[float] = []
    lon: list[float] = []
    for k, pair in enumerate(pairs):
        parts = pair.split(",")
        if len(parts) != 2:
            raise fail(400, f"point {k + 1} ({pair!r}) is not lat,lon")
        lat.append(_coord(parts[0], f"point {k + 1} lat", -90.0, 90.0))
        lon.append(_coord(parts[1], f"point {k + 1} lon", -180.0, 180.0))
    lang = _lang(request, st)
    if not pairs:
        return {"places": []}
    gaz = gazetteer(st)
    found = gaz.lookup(lon, lat)
    return {"places": [gaz.place(found, i, lang) for i in range(len(pairs))]}
