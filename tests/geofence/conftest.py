"""Fixtures for the geofence tests: a mixed fence set with holes, multipolygons,
grid-aligned rectangles, circles and corridors around Guang'an."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from geofence.fence import Fence

DATAV = Path(__file__).resolve().parents[1] / "data" / "guangan_districts_datav_gcj02.geojson"


def make_fences(seed: int = 7, n: int = 24) -> list[Fence]:
    rng = np.random.default_rng(seed)
    out: list[Fence] = []
    for i in range(n):
        cx, cy = 106.6 + rng.uniform(-0.05, 0.05), 30.5 + rng.uniform(-0.05, 0.05)
        k = int(rng.integers(3, 40))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(0.002, 0.02, k)
        poly: Polygon | MultiPolygon = Polygon(np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)])
        if i % 4 == 0:  # a hole
            poly = poly.difference(Point(cx, cy).buffer(0.0015))
        if i % 6 == 1:  # two parts
            poly = MultiPolygon(
                [box(cx, cy, cx + 0.004, cy + 0.003), box(cx + 0.01, cy, cx + 0.02, cy + 0.01)]
            )
        out.append(Fence.polygon(f"p{i}", f"polygon {i}", f"org{i % 3}", "forbidden", poly))
    # Rectangles with edges on round coordinates (likely on grid lines and cell centres).
    out.append(Fence.polygon("rect1", "rect", "org0", "lot", box(106.58, 30.48, 106.62, 30.52)))
    out.append(
        Fence.polygon(
            "rect2",
            "rect",
            "org1",
            "lot",
            box(106.6, 30.5, 106.65, 30.55).difference(box(106.61, 30.51, 106.62, 30.52)),
        )
    )
    out.append(Fence.circle("c1", "circle", "org0", "lot", (106.6, 30.5), 800.0))
    out.append(Fence.circle("c2", "small circle", "org1", "forbidden", (106.63, 30.47), 35.0))
    out.append(
        Fence.corridor(
            "r1",
            "route",
            "org2",
            "speed_zone",
            [(106.55, 30.45), (106.6, 30.5), (106.65, 30.48), (106.66, 30.53)],
            50.0,
            speed_limit_kmh=40.0,
        )
    )
    return out


@pytest.fixture(scope="session")
def fences() -> list[Fence]:
    return make_fences()


def special_points(fences: list[Fence]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices, exact midpoints of axis-aligned edges, near-edge points, hole centres."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    rng = np.random.default_rng(3)
    for f in fences:
        if f.shape != "polygon":
            continue
        c = shapely.get_coordinates(f.geometry.boundary)
        xs.append(c[:, 0])
        ys.append(c[:, 1])
        t = rng.uniform(0, 1, len(c) - 1)
        xs.append(c[:-1, 0] + t * (c[1:, 0] - c[:-1, 0]))
        ys.append(c[:-1, 1] + t * (c[1:, 1] - c[:-1, 1]))
        xs.append((c[:-1, 0] + c[1:, 0]) / 2)
        ys.append((c[:-1, 1] + c[1:, 1]) / 2)
        for poly in shapely.get_parts(f.geometry):
            for hole in poly.interiors:
                p = Polygon(hole).representative_point()
                xs.append(np.array([p.x]))
                ys.append(np.array([p.y]))
    return np.concatenate(xs), np.concatenate(ys)
