"""The simulated city: a road grid with arterials, organisations with their lots, banned places.

Pure geometry in a local metric frame: ``x`` metres east and ``y`` metres north
of the centre. :meth:`City.to_latlon` converts to WGS-84 with the same
equirectangular formula everywhere, so fences written in the configuration and
positions sent by the fleet agree to the millimetre.

::

    ┼───┼───╋───┼───┼      ╋ arterial × arterial     block_m apart
    │ · │   ┃   │ ○ │      ┃ arterial (every 4th line)
    ┼───┼───╋───┼───┼      ○ banned place: a block centre, far from every road
    ━━━━━━━━╋━━━━━━━━━     □ lot: a square around one intersection

The allowed region (the city boundary) is a square of half-side ``radius_km``;
arterials run on beyond it so vehicles can leave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["City", "Lot", "Place", "build_city"]

_M_PER_DEG = 111_320.0

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
    half_m: float  # the allowed region is the square |x|, |y| <= half_m
    block_m: float
    arterial_every: int
    lots: tuple[Lot, ...]
    places: tuple[Place, ...]

    @property
    def orgs(self) -> tuple[tuple[str, str, str | None], ...]:
        return ORGS

    @property
    def leaf_orgs(self) -> tuple[str, ...]:
        return tuple(lot.org for lot in self.lots)

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

    def inside(self, x: float, y: float) -> bool:
        return abs(x) <= self.half_m and abs(y) <= self.half_m

    def arterial(self, i: int) -> bool:
        return i % self.arterial_every == 0

    def grid(self, i: int) -> float:
        return i * self.block_m

    @property
    def n_half(self) -> int:
        """Grid lines run from -n_half to n_half inside the city."""
        return int(self.half_m // self.block_m)


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
    return City(center_lat, center_lon, half, block_m, 4, tuple(lots), tuple(places))
