"""The shipped district boundaries: rebuilt from the DataV source, WGS-84, in the package."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import shape

from geofence.boundaries import DISTRICTS_PATH, _dump, city_outline, convert_datav, districts
from geofence.datum import wgs84_to_gcj02
from tests.geofence.conftest import DATAV

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_file_is_the_conversion_of_the_source() -> None:
    source = json.loads(DATAV.read_text(encoding="utf-8"))
    assert DISTRICTS_PATH.read_text(encoding="utf-8") == _dump(convert_datav(source))


def test_shipped_coordinates_are_wgs84() -> None:
    """Converting the shipped vertices back to GCJ-02 lands on the source's (within 1e-6°)."""
    source = json.loads(DATAV.read_text(encoding="utf-8"))
    shipped = json.loads(DISTRICTS_PATH.read_text(encoding="utf-8"))
    for src, out in zip(source["features"], shipped["features"], strict=True):
        assert out["properties"]["name"] == src["properties"]["name"]
        assert out["properties"]["adcode"] == src["properties"]["adcode"]
        c = shapely.get_coordinates(shape(out["geometry"]))
        g = shapely.get_coordinates(shape(src["geometry"]))
        gx, gy = wgs84_to_gcj02(c[:, 0], c[:, 1])
        assert np.abs(gx - g[:, 0]).max() < 1e-6 and np.abs(gy - g[:, 1]).max() < 1e-6
        # and they moved: GCJ-02 is offset by a few hundred metres around Guang'an
        assert np.abs(c - g).max() > 1e-3


def test_six_districts_and_one_city() -> None:
    names = {d.name for d in districts()}
    assert names == {"广安区", "前锋区", "岳池县", "武胜县", "邻水县", "华蓥市"}
    outline = city_outline()
    assert not outline.interiors
    # Guang'an covers 6,344 km² (official figure); the simplified outline is within 1 %.
    km2 = shapely.area(shapely.transform(outline, _local_km))
    assert 6280 < km2 < 6410
    for d in districts():
        assert outline.covers(d.geometry.representative_point())


def _local_km(c: np.ndarray) -> np.ndarray:
    return np.column_stack(
        ((c[:, 0] - 106.6) * 111.32 * np.cos(np.radians(30.45)), (c[:, 1] - 30.45) * 110.57)
    )


def test_package_data_config_carries_the_boundaries() -> None:
    """pyproject's package-data globs match every file of geofence/data (an installed
    package carries the boundaries)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["geofence"]
    files = [p.relative_to(ROOT / "geofence").as_posix() for p in DISTRICTS_PATH.parent.iterdir()]
    assert "data/guangan_districts.geojson" in files
    for rel in files:
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
