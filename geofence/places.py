"""Place names without a map service: district/county from the shipped boundaries, and the
nearest configured lot or banned place with its distance.

::

    gaz = Gazetteer.build(districts(), fences)          # once per fence-set version
    found = gaz.lookup(lon, lat)                         # arrays in, columns out
    gaz.text(found, 0)  ->  "武胜县 · 距 某KTV 300 米"

:meth:`Gazetteer.lookup` is vectorized over the points (numpy); :func:`lookup_scalar` is its
point-by-point reference. A point inside no district (the source's borders leave slivers
between neighbours) takes the nearest district within ``district_snap_m``; beyond that it is
outside the city. Distances are ellipsoidal metres (:mod:`geofence.distance`) to the fence
itself: 0 inside a lot or banned place, else to its outline (a circle: to its rim).

No township (乡镇/街道) boundaries ship (see ``geofence/data/README.md``): ``township`` is
always ``None`` until a township file is configured.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Point

from geofence.boundaries import District
from geofence.config import PlaceConfig
from geofence.distance import metres_per_degree, segment_distance_m, segment_distance_m_scalar
from geofence.fence import Fence

__all__ = [
    "LANDMARK_USES",
    "Found",
    "Gazetteer",
    "district_text",
    "lookup_scalar",
    "place_text",
]

# Fences named as landmarks: where a car belongs and where it must not go.
LANDMARK_USES = ("lot", "forbidden")
CITY_NAME = {"zh": "广安市", "en": "Guang'an"}
DISTRICT_EN = {
    "广安区": "Guang'an District",
    "前锋区": "Qianfeng District",
    "岳池县": "Yuechi County",
    "武胜县": "Wusheng County",
    "邻水县": "Linshui County",
    "华蓥市": "Huaying City",
}
_PAIRS_PER_CHUNK = 2_000_000  # point × segment distances held at once (16 MB of float64)

Lang = Literal["zh", "en"]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Found:
    """Columns, one row per point: district index (-1: outside the city), nearest landmark
    index (-1: none within ``near_max_m``) and its distance in metres (NaN when none)."""

    district: I64
    near: I64
    near_m: F64


@dataclass(frozen=True, slots=True)
class _Segments:
    """Every outline segment of a set of shapes, grouped by shape (``start[k]`` first one)."""

    ax: F64
    ay: F64
    bx: F64
    by: F64
    start: I64
    offset: F64  # metres subtracted from the distance (circle radius, corridor half-width)

    @classmethod
    def of(cls, rings: Sequence[list[tuple[float, float, float, float]]], offset: F64) -> _Segments:
        counts = np.array([len(r) for r in rings], dtype=np.int64)
        flat = np.array([s for r in rings for s in r], dtype=np.float64).reshape(-1, 4)
        start = np.concatenate(([0], np.cumsum(counts)))[:-1].astype(np.int64)
        return cls(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3], start, offset)

    def distance(self, lon: F64, lat: F64) -> F64:
        """(points × shapes) metres from each point to each shape's outline, minus offset."""
        n, s = len(lon), len(self.ax)
        out = np.empty((n, len(self.start)), dtype=np.float64)
        step = max(1, _PAIRS_PER_CHUNK // max(1, s))
        for i in range(0, n, step):
            x, y = lon[i : i + step, None], lat[i : i + step, None]
            d = segment_distance_m(x, y, self.ax, self.ay, self.bx, self.by)
            out[i : i + step] = np.minimum.reduceat(d, self.start, axis=1)
        res: F64 = np.maximum(out - self.offset, 0.0)
        return res


def _polygon_edges(geom: Any) -> list[tuple[float, float, float, float]]:
    out: list[tuple[float, float, float, float]] = []
    for part in shapely.get_parts(geom):
        for ring in (part.exterior, *part.interiors):
            c = np.asarray(ring.coords)
            out.extend(zip(c[:-1, 0], c[:-1, 1], c[1:, 0], c[1:, 1], strict=True))
    return out


def _fence_outline(f: Fence) -> tuple[list[tuple[float, float, float, float]], float]:
    if f.shape == "circle":
        assert f.center is not None and f.radius_m is not None
        return [(*f.center, *f.center)], f.radius_m
    if f.shape == "corridor":
        assert f.half_width_m is not None
        return list(f.segments), f.half_width_m
    return _polygon_edges(f.geometry), 0.0


@dataclass(frozen=True)
class Gazetteer:
    """Districts and landmarks ready for :meth:`lookup`. Build with :meth:`build`."""

    districts: tuple[District, ...]
    landmarks: tuple[Fence, ...]
    config: PlaceConfig
    _district_geoms: npt.NDArray[Any]
    _district_union: Any  # for the cheap "near any district at all?" test before snapping
    _snap_deg: float  # degrees that surely exceed district_snap_m (see build)
    _district_segs: _Segments
    _landmark_segs: _Segments | None
    _polygonal: tuple[int, ...]  # landmarks tested for "inside" by shapely

    @classmethod
    def build(
        cls,
        districts: Sequence[District],
        fences: Sequence[Fence],
        config: PlaceConfig | None = None,
    ) -> Gazetteer:
        cfg = config or PlaceConfig()
        ds = tuple(districts)
        marks = tuple(f for f in fences if f.use in LANDMARK_USES)
        geoms = np.array([d.geometry for d in ds], dtype=object)
        shapely.prepare(geoms)
        union = shapely.union_all(geoms) if len(ds) else shapely.Point()
        shapely.prepare(union)
        # A degree of longitude is the shortest degree; at the poleward edge of the districts
        # (plus a degree) it is shortest of all: so many degrees are more than snap metres.
        top = max(abs(union.bounds[1]), abs(union.bounds[3])) + 1.0 if len(ds) else 0.0
        kx, _ = metres_per_degree(min(top, 89.0))
        snap_deg = cfg.district_snap_m / float(kx)
        dsegs = _Segments.of([_polygon_edges(d.geometry) for d in ds], np.zeros(len(ds)))
        lsegs = None
        if marks:
            outlines = [_fence_outline(f) for f in marks]
            lsegs = _Segments.of([o[0] for o in outlines], np.array([o[1] for o in outlines]))
        poly = tuple(k for k, f in enumerate(marks) if f.shape == "polygon")
        return cls(ds, marks, cfg, geoms, union, snap_deg, dsegs, lsegs, poly)

    def lookup(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> Found:
        x = np.asarray(lon, dtype=np.float64).ravel()
        y = np.asarray(lat, dtype=np.float64).ravel()
        n = len(x)
        district = np.full(n, -1, dtype=np.int64)
        for k in range(len(self.districts) - 1, -1, -1):  # the first district that covers wins
            district[shapely.intersects_xy(self._district_geoms[k], x, y)] = k
        miss = np.flatnonzero(district < 0)
        if miss.size and len(self.districts):
            near_any = shapely.dwithin(
                self._district_union, shapely.points(x[miss], y[miss]), self._snap_deg
            )
            miss = miss[near_any]
        if miss.size:
            d = self._district_segs.distance(x[miss], y[miss])
            best = np.argmin(d, axis=1)
            close = d[np.arange(len(miss)), best] <= self.config.district_snap_m
            district[miss[close]] = best[close]
        near = np.full(n, -1, dtype=np.int64)
        near_m = np.full(n, np.nan)
        if self._landmark_segs is not None and n:
            d = self._landmark_segs.distance(x, y)
            for k in self._polygonal:
                d[shapely.intersects_xy(self.landmarks[k].geometry, x, y), k] = 0.0
            best = np.argmin(d, axis=1)
            dist = d[np.arange(n), best]
            ok = dist <= self.config.near_max_m
            near[ok] = best[ok]
            near_m[ok] = dist[ok]
        return Found(district, near, near_m)

    def district_name(self, found: Found, i: int) -> str | None:
        k = int(found.district[i])
        return self.districts[k].name if k >= 0 else None

    def near(self, found: Found, i: int) -> dict[str, Any] | None:
        k = int(found.near[i])
        if k < 0:
            return None
        return {"name": self.landmarks[k].name, "distance_m": round(float(found.near_m[i]))}

    def text(self, found: Found, i: int, lang: Lang = "zh") -> str:
        near = self.near(found, i)
        return place_text(
            self.district_name(found, i),
            None,
            near["name"] if near else None,
            float(found.near_m[i]) if near else None,
            lang,
        )

    def place(self, found: Found, i: int, lang: Lang = "zh") -> dict[str, Any]:
        """The API's place object (``GET /api/geo/place``)."""
        return {
            "text": self.text(found, i, lang),
            "district": self.district_name(found, i),
            "township": None,
            "near": self.near(found, i),
        }

    def texts(self, lon: npt.ArrayLike, lat: npt.ArrayLike, lang: Lang = "zh") -> list[str]:
        found = self.lookup(lon, lat)
        return [self.text(found, i, lang) for i in range(len(found.district))]


@functools.cache
def _districts_only() -> Gazetteer:
    from geofence.boundaries import districts

    return Gazetteer.build(districts(), ())


def district_text(lon: float, lat: float, lang: Lang = "zh") -> str:
    """The district of one point from the shipped boundaries alone (no fences): what a
    message says when it was queued without a place name."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return ""
    gaz = _districts_only()
    return gaz.text(gaz.lookup([lon], [lat]), 0, lang)


def _distance_text(m: float, lang: Lang) -> str:
    if m < 1000:
        v = round(m / 10) * 10 if m >= 100 else round(m)
        return f"{v} 米" if lang == "zh" else f"{v} m"
    km = f"{m / 1000:.1f}".rstrip("0").rstrip(".")
    return f"{km} 公里" if lang == "zh" else f"{km} km"


def place_text(
    district: str | None,
    township: str | None,
    near: str | None,
    near_m: float | None,
    lang: Lang = "zh",
) -> str:
    """``武胜县 沿口镇 · 距 某KTV 300 米`` (zh) / ``Wusheng County · 300 m from 某KTV`` (en).

    Inside a landmark (0 m): ``· 某KTV 内`` / ``· in 某KTV``. Outside every district:
    ``广安市外`` / ``outside Guang'an``. Landmark names stay as configured (Chinese).
    """
    if lang == "zh":
        head = " ".join(p for p in (district, township) if p) or f"{CITY_NAME['zh']}外"
    else:
        en = DISTRICT_EN.get(district, district) if district else None
        head = " ".join(p for p in (en, township) if p) or f"outside {CITY_NAME['en']}"
    if near is None or near_m is None:
        return head
    if near_m <= 0.0:
        tail = f"{near} 内" if lang == "zh" else f"in {near}"
    elif lang == "zh":
        tail = f"距 {near} {_distance_text(near_m, lang)}"
    else:
        tail = f"{_distance_text(near_m, lang)} from {near}"
    return f"{head} · {tail}"


def lookup_scalar(
    districts: Sequence[District],
    fences: Sequence[Fence],
    lon: float,
    lat: float,
    config: PlaceConfig | None = None,
) -> tuple[int, int, float]:
    """Reference of :meth:`Gazetteer.lookup` for one point: (district, near, near_m)."""
    cfg = config or PlaceConfig()
    p = Point(lon, lat)
    district = next((k for k, d in enumerate(districts) if d.geometry.covers(p)), -1)
    if district < 0:
        best, best_d = -1, math.inf
        for k, d in enumerate(districts):
            m = min(segment_distance_m_scalar(lon, lat, *s) for s in _polygon_edges(d.geometry))
            if m < best_d:
                best, best_d = k, m
        if best_d <= cfg.district_snap_m:
            district = best
    marks = [f for f in fences if f.use in LANDMARK_USES]
    near, near_m = -1, math.inf
    for k, f in enumerate(marks):
        segs, offset = _fence_outline(f)
        if f.shape == "polygon" and f.geometry.covers(p):
            m = 0.0
        else:
            m = max(0.0, min(segment_distance_m_scalar(lon, lat, *s) for s in segs) - offset)
        if m < near_m:
            near, near_m = k, m
    if near_m > cfg.near_max_m:
        return district, -1, math.nan
    return district, near, near_m
