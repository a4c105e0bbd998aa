"""The fence value object.

A fence is a place a rule asks about: an allowed region (city or county
boundary), a forbidden place, a designated lot or a speed zone. Three shapes:

``polygon``
    a shapely Polygon or MultiPolygon (holes allowed) in WGS-84 lon/lat.
    Membership is shapely's ``covers``: interior **and boundary** count as in.
    Invalid input (self-intersections, overlapping parts) is repaired with
    ``shapely.make_valid`` on construction; membership is exact for the
    repaired geometry.
``circle``
    ``center`` (lon, lat) and ``radius_m``; in when the ellipsoidal distance
    to the centre is ≤ ``radius_m`` (see :mod:`geofence.distance`).
``corridor``
    ``path`` (a polyline of lon, lat) and ``half_width_m``; in when the
    distance to the polyline is ≤ ``half_width_m``.

Circles and corridors are tested by distance, never through a polygon; their
``geometry`` is a polygon outline kept for display, export and the index's
bounding box only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from fleet.errors import Misuse
from geofence.config import FenceUse
from geofence.distance import MAX_SEGMENT_M, metres_per_degree, segment_distance_m_scalar

__all__ = ["USES", "Fence", "FenceShape"]

FenceShape = Literal["polygon", "circle", "corridor"]
USES: tuple[FenceUse, ...] = ("allowed_region", "forbidden", "lot", "speed_zone")
_OUTLINE_SEGMENTS = 64


@dataclass(frozen=True, slots=True)
class Fence:
    """One fence. Build with :meth:`polygon`, :meth:`circle` or :meth:`corridor`."""

    id: str
    name: str
    org: str
    use: FenceUse
    geometry: Polygon | MultiPolygon
    speed_limit_kmh: float | None = None
    shape: FenceShape = "polygon"
    center: tuple[float, float] | None = None
    radius_m: float | None = None
    path: tuple[tuple[float, float], ...] | None = None
    half_width_m: float | None = None
    _segments: tuple[tuple[float, float, float, float], ...] = field(
        default=(), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.id:
            raise Misuse("a fence needs a non-empty id")
        if self.use not in USES:
            raise Misuse(f"fence {self.id}: use {self.use!r} is not one of {USES}")
        if self.speed_limit_kmh is not None and not self.speed_limit_kmh > 0:
            raise Misuse(f"fence {self.id}: speed_limit_kmh must be > 0")
        if not isinstance(self.geometry, Polygon | MultiPolygon) or self.geometry.is_empty:
            raise Misuse(f"fence {self.id}: geometry must be a non-empty Polygon or MultiPolygon")

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def polygon(
        cls,
        id: str,
        name: str,
        org: str,
        use: FenceUse,
        geometry: Polygon | MultiPolygon,
        speed_limit_kmh: float | None = None,
    ) -> Fence:
        """A polygon fence; invalid geometry is repaired (``make_valid``, polygonal part)."""
        geom = _valid_polygonal(geometry, id)
        return cls(id, name, org, use, geom, speed_limit_kmh)

    @classmethod
    def circle(
        cls,
        id: str,
        name: str,
        org: str,
        use: FenceUse,
        center: tuple[float, float],
        radius_m: float,
        speed_limit_kmh: float | None = None,
    ) -> Fence:
        lon, lat = float(center[0]), float(center[1])
        if not (math.isfinite(lon) and math.isfinite(lat) and -90 < lat < 90):
            raise Misuse(f"fence {id}: bad circle centre {center!r}")
        if not (radius_m > 0 and math.isfinite(radius_m)):
            raise Misuse(f"fence {id}: radius_m must be > 0")
        kx, ky = (float(v) for v in metres_per_degree(lat))
        ang = np.linspace(0.0, 2.0 * np.pi, _OUTLINE_SEGMENTS, endpoint=False)
        outline = Polygon(
            np.column_stack([lon + radius_m * np.cos(ang) / kx, lat + radius_m * np.sin(ang) / ky])
        )
        seg = ((lon, lat, lon, lat),)
        return cls(
            id,
            name,
            org,
            use,
            outline,
            speed_limit_kmh,
            "circle",
            center=(lon, lat),
            radius_m=float(radius_m),
            _segments=seg,
        )

    @classmethod
    def corridor(
        cls,
        id: str,
        name: str,
        org: str,
        use: FenceUse,
        path: list[tuple[float, float]] | tuple[tuple[float, float], ...],
        half_width_m: float,
        speed_limit_kmh: float | None = None,
    ) -> Fence:
        pts = tuple((float(x), float(y)) for x, y in path)
        if len(pts) < 2 or not all(math.isfinite(x) and math.isfinite(y) for x, y in pts):
            raise Misuse(f"fence {id}: a corridor needs at least two finite (lon, lat) points")
        if not (half_width_m > 0 and math.isfinite(half_width_m)):
            raise Misuse(f"fence {id}: half_width_m must be > 0")
        segs: list[tuple[float, float, float, float]] = []
        for (ax, ay), (bx, by) in itertools.pairwise(pts):
            length = segment_distance_m_scalar(ax, ay, bx, by, bx, by)
            # Long segments are split so the local-plane segment stays on the geodesic.
            n = max(1, math.ceil(length / MAX_SEGMENT_M))
            for k in range(n):
                t0, t1 = k / n, (k + 1) / n
                segs.append(
                    (
                        ax + (bx - ax) * t0,
                        ay + (by - ay) * t0,
                        ax + (bx - ax) * t1,
                        ay + (by - ay) * t1,
                    )
                )
        kx, ky = (float(v) for v in metres_per_degree(pts[0][1]))
        # Outline for display: buffer in a locally scaled plane, then back to degrees.
        line = LineString([((x - pts[0][0]) * kx, (y - pts[0][1]) * ky) for x, y in pts])
        buf = line.buffer(half_width_m, quad_segs=8)
        outline = shapely.transform(
            buf, lambda c: np.column_stack([c[:, 0] / kx + pts[0][0], c[:, 1] / ky + pts[0][1]])
        )
        return cls(
            id,
            name,
            org,
            use,
            outline,
            speed_limit_kmh,
            "corridor",
            path=pts,
            half_width_m=float(half_width_m),
            _segments=tuple(segs),
        )

    # -- queries ------------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[tuple[float, float, float, float], ...]:
        """Circle/corridor centre-line segments (lon_a, lat_a, lon_b, lat_b); empty for polygons."""
        return self._segments

    @property
    def distance_m(self) -> float:
        """Circle radius or corridor half-width, metres (``nan`` for polygons)."""
        if self.shape == "circle":
            assert self.radius_m is not None
            return self.radius_m
        if self.shape == "corridor":
            assert self.half_width_m is not None
            return self.half_width_m
        return math.nan

    def covers(self, lon: float, lat: float) -> bool:
        """Scalar reference membership: is (lon, lat) inside or on the boundary?"""
        if not (math.isfinite(lon) and math.isfinite(lat)):
            return False
        if self.shape == "polygon":
            return bool(self.geometry.covers(Point(lon, lat)))
        w = self.distance_m
        return any(segment_distance_m_scalar(lon, lat, *s) <= w for s in self._segments)


def _valid_polygonal(geometry: Polygon | MultiPolygon, fence_id: str) -> Polygon | MultiPolygon:
    if not isinstance(geometry, Polygon | MultiPolygon):
        raise Misuse(
            f"fence {fence_id}: expected Polygon or MultiPolygon, got {geometry.geom_type}"
        )
    if geometry.is_valid:
        return geometry
    fixed = shapely.make_valid(geometry)
    polys = [
        p
        for p in shapely.get_parts(fixed)
        if isinstance(p, Polygon | MultiPolygon) and not p.is_empty
    ]
    if not polys:
        raise Misuse(f"fence {fence_id}: geometry has no area after repair")
    merged = shapely.union_all(polys)
    if not isinstance(merged, Polygon | MultiPolygon):
        raise Misuse(f"fence {fence_id}: geometry has no area after repair")
    return merged
