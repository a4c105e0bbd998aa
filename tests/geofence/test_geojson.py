from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from fleet.errors import ConfigError
from geofence.config import FenceConfig, FenceFileConfig
from geofence.datum import wgs84_to_gcj02
from geofence.fence import Fence
from geofence.geojson import fences_from_config, fences_from_geojson, to_geojson
from geofence.index import FenceIndex, membership_reference
from tests.geofence.conftest import DATAV


@pytest.fixture(scope="module")
def datav() -> dict:
    return json.loads(DATAV.read_text(encoding="utf-8"))


def test_datav_import_converts_gcj02(datav: dict) -> None:
    raw = fences_from_geojson(datav, use="allowed_region", org="city")
    wgs = fences_from_geojson(datav, use="allowed_region", org="city", datum="gcj02")
    assert [f.id for f in wgs] == ["511602", "511603", "511621", "511622", "511623", "511681"]
    assert wgs[0].name == "广安区"
    assert all(isinstance(f.geometry, shapely.MultiPolygon | shapely.Polygon) for f in wgs)
    for r, w in zip(raw, wgs, strict=True):
        # converting the WGS-84 geometry forward again gives back the GCJ-02 file
        fx, fy = wgs84_to_gcj02(*shapely.get_coordinates(w.geometry).T)
        back = np.column_stack([fx, fy])
        np.testing.assert_allclose(back, shapely.get_coordinates(r.geometry), atol=1e-9)
        shift = shapely.get_coordinates(r.geometry) - shapely.get_coordinates(w.geometry)
        assert 0.0005 < np.abs(shift).max() < 0.01  # hundreds of metres, as GCJ-02 does
    # District centres (GCJ-02 in the file) fall in their district once converted.
    for f, feat in zip(wgs, datav["features"], strict=True):
        c = feat["properties"]["center"]
        assert f.covers(*_gcj_to_wgs(c))


def _gcj_to_wgs(c: list[float]) -> tuple[float, float]:
    from geofence.datum import gcj02_to_wgs84_scalar

    return gcj02_to_wgs84_scalar(c[0], c[1])


def test_datav_fences_index_agrees_with_shapely(datav: dict) -> None:
    fences = fences_from_geojson(datav, use="allowed_region", org="city", datum="gcj02")
    idx = FenceIndex.build(fences)
    rng = np.random.default_rng(6)
    x = rng.uniform(106.1, 107.3, 1500)
    y = rng.uniform(30.0, 30.9, 1500)
    c = shapely.get_coordinates(shapely.GeometryCollection([f.geometry for f in fences]))[::7]
    x, y = np.r_[x, c[:, 0]], np.r_[y, c[:, 1]]
    got = idx.membership(x, y)
    want = membership_reference(fences, x, y)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_export_round_trip() -> None:
    fences = [
        Fence.polygon("p", "poly", "o", "forbidden", shapely.box(106.6, 30.5, 106.61, 30.51)),
        Fence.circle("c", "circle", "o", "lot", (106.6, 30.5), 120.0),
        Fence.corridor(
            "r",
            "route",
            "o2",
            "speed_zone",
            [(106.6, 30.5), (106.62, 30.52)],
            25.0,
            speed_limit_kmh=30.0,
        ),
    ]
    doc = json.loads(json.dumps(to_geojson(fences)))
    back = fences_from_geojson(doc, id_property="id")
    assert back == fences
    gcj = to_geojson(fences, datum="gcj02")
    again = fences_from_geojson(gcj, id_property="id", datum="gcj02")
    assert again[1].center == pytest.approx(fences[1].center, abs=1e-9)
    assert shapely.equals_exact(again[0].geometry, fences[0].geometry, tolerance=1e-9)


def test_fences_from_config(tmp_path: Path) -> None:
    (tmp_path / "d.geojson").write_text(DATAV.read_text(encoding="utf-8"), encoding="utf-8")
    files = [FenceFileConfig(path="d.geojson", use="allowed_region", org="city", datum="gcj02")]
    inline = [
        FenceConfig(
            id="lot1",
            name="lot",
            use="lot",
            org="u1",
            shape="circle",
            center=(106.63, 30.45),
            radius_m=80,
        ),
        FenceConfig(
            id="road",
            name="road",
            use="speed_zone",
            org="u1",
            shape="corridor",
            path=[(106.6, 30.4), (106.7, 30.5)],
            half_width_m=30,
            speed_limit_kmh=40,
        ),
        FenceConfig(
            id="ktv",
            name="KTV",
            use="forbidden",
            org="u1",
            shape="polygon",
            ring=[(106.6, 30.4), (106.61, 30.4), (106.61, 30.41)],
            datum="gcj02",
        ),
    ]
    fences = fences_from_config(inline, files, tmp_path)
    assert [f.id for f in fences][-3:] == ["lot1", "road", "ktv"]
    assert len(fences) == 9
    assert fences[-1].geometry.bounds[0] < 106.6  # converted from GCJ-02 (shifted west)
    with pytest.raises(ConfigError, match="duplicate"):
        fences_from_config([inline[0], inline[0]], [], tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        fences_from_config([], [FenceFileConfig(path="nope.json", use="lot", org="x")], tmp_path)
    bad = FenceConfig(id="x", name="x", use="lot", org="u", shape="circle")
    with pytest.raises(ConfigError, match="radius_m"):
        fences_from_config([bad], [], tmp_path)


def test_bad_geojson_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        fences_from_geojson({"type": "Feature"}, use="lot", org="o")
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"adcode": 1},
                "geometry": {"type": "Point", "coordinates": [1, 2]},
            }
        ],
    }
    with pytest.raises(ConfigError, match="not a fence"):
        fences_from_geojson(doc, use="lot", org="o")
    with pytest.raises(ConfigError, match="use"):
        fences_from_geojson(doc, org="o")
