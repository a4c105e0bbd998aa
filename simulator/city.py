"""The simulated city: a road grid with arterials inside the real city boundary, organisations
with their lots, banned places.

Pure geometry in a local metric frame: ``x`` metres east and ``y`` metres north
of the centre. :meth:`City.to_latlon` converts to WGS-84 with the same
equirectangular formula everywhere, so fences written in the configuration and
positions sent by the fleet agree to the millimetre.

::

    ┼───┼───╋───┼───┼      ╋ arterial × arterial     block_m apart
    │ · │   ┃   │ ○ │      ┃ arterial (every 4th line)
    ┼───┼───╋───┼───┼      ○ banned place: a block centre, far from every road
    ━━━━━━━━╋━━━━━━━━━     □ lot: a square around one intersection

The allowed region is Guang'an's real boundary (the outline of the district boundaries the
package ships, :func:`geofence.boundaries.city_outline`), expressed in the same local frame.
The road grid is generated (no road network can be carried offline): it covers the square of
half-side ``radius_km`` around the centre, and a trip only uses the parts of it that stay
``ROAD_MARGIN_M`` inside the boundary; arterials run on beyond the boundary so that the
out-of-area trip can leave. A centre outside Guang'an (a synthetic city elsewhere) gets the
square itself as its boundary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon, box

__all__ = ["ROAD_MARGIN_M", "City", "Lot", "Place", "build_city"]

_M_PER_DEG = 111_320.0
# Ordinary trips keep this far inside the boundary: GPS noise (metres) and the rule's
# debounce never see a vehicle that only brushes the border.
ROAD_MARGIN_M = 300.0

# (id, name, parent): the city, its districts and counties, and the units that own vehicles.
ORGS: tuple[tuple[str, str, str | None], ...] = (
    ("ga", "广安市", None),
    ("ga-gaq", "广安区", "ga"),
    ("ga-qfq", "前锋区", "ga"),
    ("ga-hys", "华蓥市", "ga"),
    ("ga-yc", "岳池县", "ga"),
    ("ga-ws", "武胜县", "ga"),
    ("ga-ls", "邻水县", "ga"),
    ("ga-gaq-jyj", "广安区教育局", "ga-gaq"),
    ("ga-yc-nyj", "岳池县农业农村局", "ga-yc"),
)
PLACE_NAMES = ("某KTV (演示)", "某洗浴中心 (演示)", "某景区 (演示)", "某高尔夫球场 (演示)")


@dataclass(frozen=True, slots=True)
class Lot:
    """The designated lot (停车场) of one organisation: a square around an intersection."""

    org: str
    x: float
    y: float
    half_m: float


@dataclass(frozen=True, slots=True)
class Place:
    """A banned place (禁入区域): a circle around a block centre."""

    id: str
    name: str
    x: float
    y: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class City:
    center_lat: float
    center_lon: float
    half_m: float  # the road grid covers the square |x|, |y| <= half_m
    block_m: float
    arterial_every: int
    lots: tuple[Lot, ...]
    places: tuple[Place, ...]
    boundary: Polygon  # the allowed region in the local frame (metres)
    boundary_ring: tuple[tuple[float, float], ...]  # the same, (lon, lat) WGS-84, closed
    inner: Polygon  # the boundary shrunk by ROAD_MARGIN_M: where ordinary trips stay
    safe_m: float  # the disk of this radius round the centre lies inside ``inner``
    _exits: dict[str, list[tuple[float, float]]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def orgs(self) -> tuple[tuple[str, str, str | None], ...]:
        return ORGS

    @property
    def leaf_orgs(self) -> tuple[str, ...]:
        return tuple(lot.org for lot in self.lots)

    @property
    def childless_orgs(self) -> tuple[str, ...]:
        """The lot-holding organisations with no unit under them (in :attr:`leaf_orgs`
        order): a per-organisation rule switched on for one of them reaches no other."""
        parents = {p for _, _, p in self.orgs if p}
        return tuple(o for o in self.leaf_orgs if o not in parents)

    def lot_of(self, org: str) -> Lot:
        for lot in self.lots:
            if lot.org == org:
                return lot
        raise KeyError(org)

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.center_lat + y / _M_PER_DEG
        lon = self.center_lon + x / (_M_PER_DEG * math.cos(math.radians(self.center_lat)))
        return lat, lon

    def ring(self, pts: list[tuple[float, float]]) -> list[list[float]]:
        """A closed (lon, lat) ring for the configuration from local points."""
        out = []
        for x, y in [*pts, pts[0]]:
            lat, lon = self.to_latlon(x, y)
            out.append([round(lon, 7), round(lat, 7)])
        return out

    def to_local(self, lat: float, lon: float) -> tuple[float, float]:
        """Inverse of :meth:`to_latlon`."""
        x = (lon - self.center_lon) * (_M_PER_DEG * math.cos(math.radians(self.center_lat)))
        return x, (lat - self.center_lat) * _M_PER_DEG

    def inside(self, x: float, y: float) -> bool:
        """In the allowed region (its border counts as in, as the fence's ``covers``)."""
        return bool(shapely.intersects_xy(self.boundary, x, y))

    def route_inside(self, pts: Sequence[tuple[float, float]]) -> bool:
        """A route along ``pts`` stays ROAD_MARGIN_M inside the boundary all the way."""
        # The disk is convex: a polyline whose vertices are in it stays in it (most trips).
        if all(x * x + y * y <= self.safe_m * self.safe_m for x, y in pts):
            return True
        if len(pts) == 1:
            return bool(self.inner.covers(Point(pts[0])))
        return bool(self.inner.covers(LineString(pts)))

    def crossings(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, bool]]:
        """Where the segment (x0, y0) → (x1, y1) crosses the boundary: (fraction along it,
        inside after the crossing), in order. A touch that does not cross is left out."""
        seg = LineString([(x0, y0), (x1, y1)])
        hit = seg.intersection(self.boundary.exterior)
        if hit.is_empty:
            return []
        length = seg.length
        fs = sorted({seg.project(Point(c)) / length for c in shapely.get_coordinates(hit)})
        out: list[tuple[float, bool]] = []
        state = self.inside(x0, y0)
        ends = [*fs, 1.0]
        for k, f in enumerate(fs):
            mid = 0.5 * (f + ends[k + 1])
            after = self.inside(x0 + (x1 - x0) * mid, y0 + (y1 - y0) * mid)
            if after != state:
                out.append((f, after))
                state = after
        return out

    def arterial(self, i: int) -> bool:
        return i % self.arterial_every == 0

    def grid(self, i: int) -> float:
        return i * self.block_m

    @property
    def n_half(self) -> int:
        """Grid lines run from -n_half to n_half inside the city."""
        return int(self.half_m // self.block_m)

    def exit_path(self, org: str, beyond_m: float = 3000.0) -> list[tuple[float, float]]:
        """The shortest way out of the city from ``org``'s lot along the road grid: to the
        lot's arterial row, along it to an arterial (or straight on), then along that road
        until ``beyond_m`` past the boundary. The road crosses the boundary once, and runs
        ROAD_MARGIN_M inside it until shortly before (the out-of-area trip's route)."""
        if org in self._exits:
            return self._exits[org]
        lot = self.lot_of(org)
        a = self.arterial_every * self.block_m
        ry = round(lot.y / a) * a
        reach = 80_000.0
        best: list[tuple[float, float]] | None = None
        best_len = math.inf
        n = int(self.half_m // a)
        options: list[tuple[float, float, float, float]] = [  # (x, y) turn, (dx, dy) heading
            (lot.x, ry, 1.0, 0.0),
            (lot.x, ry, -1.0, 0.0),
        ]
        for i in range(-n, n + 1):
            options += [(i * a, ry, 0.0, 1.0), (i * a, ry, 0.0, -1.0)]
        for tx, ty, dx, dy in options:
            lead = [(lot.x, lot.y), (lot.x, ry), (tx, ty)]
            lead = [p for k, p in enumerate(lead) if k == 0 or p != lead[k - 1]]
            if not self.route_inside(lead):
                continue
            far = (tx + dx * reach, ty + dy * reach)
            cross = self.crossings(tx, ty, *far)
            if not cross or cross[0][1]:
                continue
            exit_m = cross[0][0] * reach
            if len(cross) > 1 and cross[1][0] * reach < exit_m + beyond_m + ROAD_MARGIN_M:
                continue  # back in too soon
            before = (
                tx + dx * (exit_m - 2 * ROAD_MARGIN_M),
                ty + dy * (exit_m - 2 * ROAD_MARGIN_M),
            )
            if exit_m <= 2 * ROAD_MARGIN_M or not self.route_inside([(tx, ty), before]):
                continue
            end = (tx + dx * (exit_m + beyond_m), ty + dy * (exit_m + beyond_m))
            pts = [*lead, end]
            length = sum(math.dist(p, q) for p, q in itertools.pairwise(pts))
            if length < best_len:
                best, best_len = pts, length
        if best is None:
            raise ValueError(f"no road out of the city from the lot of {org}")
        self._exits[org] = best
        return best


def build_city(
    center_lat: float, center_lon: float, radius_km: float, n_lots: int, block_m: float = 500.0
) -> City:
    """Lay out the city deterministically from its size (no randomness: the same city always)."""
    half = radius_km * 1000.0
    n = max(4, int(half // block_m))
    lots = []
    leaves = [o[0] for o in ORGS if o[2] is not None][: max(1, n_lots)]
    # Lots on a ring at ~35 % of the radius, on intersections off the arterials.
    for k, org in enumerate(leaves):
        a = 2 * math.pi * k / len(leaves)
        ix = round(0.35 * n * math.cos(a))
        iy = round(0.35 * n * math.sin(a))
        if ix % 4 == 0:
            ix += 1
        if iy % 4 == 0:
            iy += 1
        lots.append(Lot(org, ix * block_m, iy * block_m, 120.0))
    places = []
    for k, name in enumerate(PLACE_NAMES):
        a = 2 * math.pi * (k + 0.5) / len(PLACE_NAMES)
        ix = round(0.55 * n * math.cos(a))
        iy = round(0.55 * n * math.sin(a))
        # A block centre is block_m / 2 from every road; the fence keeps 100 m clear of them.
        places.append(
            Place(f"ban-{k + 1}", name, (ix + 0.5) * block_m, (iy + 0.5) * block_m, 150.0)
        )
    ring = _boundary_ring(center_lat, center_lon, half)
    kx = _M_PER_DEG * math.cos(math.radians(center_lat))
    xy = np.array([((lon - center_lon) * kx, (lat - center_lat) * _M_PER_DEG) for lon, lat in ring])
    boundary = Polygon(xy)
    inner = boundary.buffer(-ROAD_MARGIN_M)
    if inner.geom_type != "Polygon":  # keep the part around the centre
        inner = next(p for p in shapely.get_parts(inner) if p.covers(Point(0.0, 0.0)))
    shapely.prepare(boundary)
    shapely.prepare(inner)
    centre = Point(0.0, 0.0)
    safe = float(inner.exterior.distance(centre)) if inner.covers(centre) else 0.0
    return City(
        center_lat,
        center_lon,
        half,
        block_m,
        4,
        tuple(lots),
        tuple(places),
        boundary,
        ring,
        inner,
        safe,
    )


def _boundary_ring(
    center_lat: float, center_lon: float, half: float
) -> tuple[tuple[float, float], ...]:
    """The city outline as a closed (lon, lat) ring rounded to 7 decimals (the numbers the
    configuration carries, so that the fence and the simulator agree exactly); the square
    of half-side ``half`` when the centre is not in Guang'an."""
    from geofence.boundaries import city_outline

    outline = city_outline()
    if outline.covers(Point(center_lon, center_lat)):
        c = np.round(np.asarray(outline.exterior.coords), 7)
        return tuple((float(x), float(y)) for x, y in c)
    k = _M_PER_DEG * math.cos(math.radians(center_lat))
    sq = box(-half, -half, half, half).exterior.coords
    return tuple(
        (round(center_lon + x / k, 7), round(center_lat + y / _M_PER_DEG, 7)) for x, y in sq
    )
