"""The city's administrative boundaries, shipped with the package (no map service needed).

``geofence/data/guangan_districts.geojson`` holds the six districts and counties of
Guang'an (广安市, adcode 511600) in WGS-84, one Feature each with ``name``, ``adcode``
and ``level``. It is made from the DataV.GeoAtlas file (GCJ-02, as AMap/DataV publish
it; a copy is in ``tests/data/``) by :func:`convert_datav`::

    python -m geofence.boundaries tests/data/guangan_districts_datav_gcj02.geojson \\
        geofence/data/guangan_districts.geojson

and a test rebuilds it and compares. No township (乡镇/街道) boundaries ship: there is no
source for them that this project can carry (see ``geofence/data/README.md``).

:func:`city_outline` is the allowed region of the whole city: the union of the
districts with the slivers between neighbouring districts filled (the source's shared
borders do not meet exactly, which leaves holes of up to 0.2 km² in a plain union).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from geofence.datum import gcj02_to_wgs84

__all__ = [
    "DISTRICTS_PATH",
    "SOURCE",
    "District",
    "city_outline",
    "convert_datav",
    "districts",
    "load_districts",
]

DISTRICTS_PATH = Path(__file__).parent / "data" / "guangan_districts.geojson"
SOURCE = (
    "DataV.GeoAtlas 511600 (广安市) district boundaries, GCJ-02, converted to WGS-84 by "
    "geofence.boundaries.convert_datav"
)
_DECIMALS = 7  # 1e-7 degree ≈ 1 cm: below every other error of the source
_KEEP = ("name", "adcode", "level")


def convert_datav(data: Mapping[str, Any]) -> dict[str, Any]:
    """A DataV/AMap boundary FeatureCollection (GCJ-02) as WGS-84, properties kept to
    ``name``, ``adcode``, ``level``, coordinates rounded to 7 decimals."""
    if data.get("type") != "FeatureCollection":
        raise ValueError("not a GeoJSON FeatureCollection")
    features = []
    for feat in data["features"]:
        geom = shapely.transform(
            shape(feat["geometry"]),
            lambda c: np.round(np.column_stack(gcj02_to_wgs84(c[:, 0], c[:, 1])), _DECIMALS),
        )
        props = feat.get("properties") or {}
        features.append(
            {
                "type": "Feature",
                "properties": {k: props[k] for k in _KEEP if k in props},
                "geometry": shapely.geometry.mapping(geom),
            }
        )
    return {"type": "FeatureCollection", "source": SOURCE, "features": features}


def _dump(data: Mapping[str, Any]) -> str:
    # One feature per line keeps diffs of a regenerated file readable.
    head = json.dumps({k: v for k, v in data.items() if k != "features"}, ensure_ascii=False)
    feats = ",\n".join(json.dumps(f, ensure_ascii=False) for f in data["features"])
    return head[:-1] + ', "features": [\n' + feats + "\n]}\n"


@functools.cache
def load_districts() -> dict[str, Any]:
    """The shipped FeatureCollection (parsed once; treat it as read-only)."""
    data: dict[str, Any] = json.loads(DISTRICTS_PATH.read_text(encoding="utf-8"))
    return data


class District:
    """One district or county: its name, adcode, level and WGS-84 geometry."""

    __slots__ = ("adcode", "geometry", "level", "name")

    def __init__(self, name: str, adcode: int, level: str, geometry: Polygon | MultiPolygon):
        self.name, self.adcode, self.level, self.geometry = name, adcode, level, geometry


@functools.cache
def districts() -> tuple[District, ...]:
    out = []
    for f in load_districts()["features"]:
        p = f["properties"]
        out.append(District(p["name"], int(p["adcode"]), p["level"], shape(f["geometry"])))
    return tuple(out)


@functools.cache
def city_outline() -> Polygon:
    """The city boundary as one polygon without holes (the largest part of the union)."""
    union = shapely.union_all([d.geometry for d in districts()])
    main = max(shapely.get_parts(union), key=lambda g: g.area)
    return Polygon(main.exterior)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert a DataV (GCJ-02) boundary file to WGS-84")
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args(argv)
    data = json.loads(Path(a.src).read_text(encoding="utf-8"))
    Path(a.dst).write_text(_dump(convert_datav(data)), encoding="utf-8")


if __name__ == "__main__":
    main()
