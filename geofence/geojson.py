"""GeoJSON import and export of fences.

Import reads a FeatureCollection: Polygon/MultiPolygon features become polygon fences;
a Point feature with a ``radius_m`` property becomes a circle and a LineString with
``half_width_m`` a corridor (the shapes :func:`to_geojson` writes). DataV/AMap
administrative-boundary files (properties ``adcode``, ``name``) are read as they are,
with ``datum="gcj02"`` to convert their GCJ-02 coordinates to WGS-84.

Properties read from each feature, each overridable by the caller: id (``id_property``,
else ``fence_id``/``id``, else the feature's ``id``), name, ``use``, ``org``,
``speed_limit_kmh``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from fleet.errors import ConfigError, Misuse
from geofence.config import FenceConfig, FenceFileConfig, FenceUse
from geofence.datum import gcj02_to_wgs84, wgs84_to_gcj02
from geofence.fence import USES, Fence

__all__ = ["fences_from_config", "fences_from_geojson", "to_geojson"]

Datum = Literal["wgs84", "gcj02"]


def _to_wgs84(geom: Any, datum: Datum) -> Any:
    if datum == "wgs84":
        return geom
    return shapely.transform(geom, lambda c: np.column_stack(gcj02_to_wgs84(c[:, 0], c[:, 1])))


def _from_wgs84(geom: Any, datum: Datum) -> Any:
    if datum == "wgs84":
        return geom
    return shapely.transform(geom, lambda c: np.column_stack(wgs84_to_gcj02(c[:, 0], c[:, 1])))


def fences_from_geojson(
    data: Mapping[str, Any],
    *,
    use: FenceUse | None = None,
    org: str | None = None,
    datum: Datum = "wgs84",
    id_property: str = "adcode",
    name_property: str = "name",
    speed_limit_kmh: float | None = None,
    source: str = "<geojson>",
) -> list[Fence]:
    """Fences from a GeoJSON FeatureCollection (a parsed ``dict``).

    ``use``/``org``/``speed_limit_kmh`` given here apply to every feature; otherwise each
    feature must carry them as properties. Raises :class:`ConfigError` naming ``source``.
    """
    if data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        raise ConfigError(source, "type", "not a GeoJSON FeatureCollection")
    out: list[Fence] = []
    for i, feat in enumerate(data["features"]):
        key = f"features[{i}]"
        props = feat.get("properties") or {}
        fid = props.get(id_property, props.get("fence_id", props.get("id", feat.get("id"))))
        if fid is None or fid == "":
            raise ConfigError(
                source,
                f"{key}.properties.{id_property}",
                "missing fence id",
                f"give each feature an '{id_property}' or 'id' property",
            )
        name = str(props.get(name_property, fid))
        f_use = use or props.get("use")
        if f_use not in USES:
            raise ConfigError(
                source, f"{key}.properties.use", f"bad use {f_use!r}", f"one of {', '.join(USES)}"
            )
        f_org = org or props.get("org")
        if not f_org:
            raise ConfigError(source, f"{key}.properties.org", "missing organisation")
        limit = speed_limit_kmh if speed_limit_kmh is not None else props.get("speed_limit_kmh")
        try:
            geom = shape(feat["geometry"])
        except Exception as exc:  # shapely raises several types for bad GeoJSON
            raise ConfigError(source, f"{key}.geometry", f"unreadable geometry: {exc}") from exc
        geom = _to_wgs84(geom, datum)
        try:
            out.append(
                _fence(str(fid), name, str(f_org), cast(FenceUse, f_use), geom, props, limit)
            )
        except Misuse as exc:
            raise ConfigError(source, f"{key}", str(exc)) from exc
    return out


def _fence(
    fid: str,
    name: str,
    org: str,
    use: FenceUse,
    geom: Any,
    props: Mapping[str, Any],
    limit: float | None,
) -> Fence:
    if isinstance(geom, Polygon | MultiPolygon):
        return Fence.polygon(fid, name, org, use, geom, limit)
    if geom.geom_type == "Point" and props.get("radius_m") is not None:
        return Fence.circle(fid, name, org, use, (geom.x, geom.y), float(props["radius_m"]), limit)
    if geom.geom_type == "LineString" and props.get("half_width_m") is not None:
        return Fence.corridor(
            fid, name, org, use, list(geom.coords), float(props["half_width_m"]), limit
        )
    raise Misuse(
        f"fence {fid}: {geom.geom_type} is not a fence (Polygon, MultiPolygon, Point with "
        "radius_m, LineString with half_width_m)"
    )


def to_geojson(fences: Sequence[Fence], *, datum: Datum = "wgs84") -> dict[str, Any]:
    """A FeatureCollection that :func:`fences_from_geojson` reads back to the same fences.

    ``datum="gcj02"`` writes GCJ-02 coordinates for display on AMap tiles.
    """
    features = []
    for f in fences:
        props: dict[str, Any] = {
            "id": f.id,
            "name": f.name,
            "org": f.org,
            "use": f.use,
            "shape": f.shape,
        }
        if f.speed_limit_kmh is not None:
            props["speed_limit_kmh"] = f.speed_limit_kmh
        if f.shape == "circle":
            assert f.center is not None
            geom: Any = shapely.Point(f.center)
            props["radius_m"] = f.radius_m
        elif f.shape == "corridor":
            assert f.path is not None
            geom = shapely.LineString(f.path)
            props["half_width_m"] = f.half_width_m
        else:
            geom = f.geometry
        features.append(
            {
                "type": "Feature",
                "id": f.id,
                "properties": props,
                "geometry": mapping(_from_wgs84(geom, datum)),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def fences_from_config(
    fences: Sequence[FenceConfig],
    files: Sequence[FenceFileConfig],
    base_dir: Path,
    *,
    source: str = "config",
) -> list[Fence]:
    """Every fence of the configuration: ``[[fence_files]]`` then inline ``[[fences]]``.

    Relative file paths are resolved against ``base_dir``. Ids must be unique across all.
    """
    out: list[Fence] = []
    for i, ff in enumerate(files):
        path = Path(ff.path)
        if not path.is_absolute():
            path = base_dir / path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                source,
                f"fence_files[{i}].path",
                f"cannot read {path}: {exc}",
                "give a GeoJSON file path relative to the config file",
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), "(file)", f"not JSON: {exc}") from exc
        out.extend(
            fences_from_geojson(
                data,
                use=ff.use,
                org=ff.org,
                datum=ff.datum,
                id_property=ff.id_property,
                name_property=ff.name_property,
                speed_limit_kmh=ff.speed_limit_kmh,
                source=str(path),
            )
        )
    for i, fc in enumerate(fences):
        key = f"fences[{i}]"
        try:
            out.append(_inline(fc))
        except Misuse as exc:
            raise ConfigError(source, key, str(exc)) from exc
    seen: set[str] = set()
    for f in out:
        if f.id in seen:
            raise ConfigError(
                source,
                "fences",
                f"duplicate fence id {f.id!r}",
                "fence ids must be unique across inline fences and fence files",
            )
        seen.add(f.id)
    return out


def _inline(fc: FenceConfig) -> Fence:
    datum: Datum = fc.datum

    def conv(pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if datum == "gcj02":
            x, y = gcj02_to_wgs84(arr[:, 0], arr[:, 1])
            arr = np.column_stack([x, y])
        return [(float(a), float(b)) for a, b in arr]

    if fc.shape == "circle":
        if fc.center is None or fc.radius_m is None:
            raise Misuse(f"fence {fc.id}: a circle needs center and radius_m")
        return Fence.circle(
            fc.id, fc.name, fc.org, fc.use, conv([fc.center])[0], fc.radius_m, fc.speed_limit_kmh
        )
    if fc.shape == "corridor":
        if fc.path is None or fc.half_width_m is None:
            raise Misuse(f"fence {fc.id}: a corridor needs path and half_width_m")
        return Fence.corridor(
            fc.id, fc.name, fc.org, fc.use, conv(fc.path), fc.half_width_m, fc.speed_limit_kmh
        )
    if not fc.ring or len(fc.ring) < 3:
        raise Misuse(f"fence {fc.id}: a polygon needs a ring of at least 3 (lon, lat) points")
    ring = conv(fc.ring)
    if not all(math.isfinite(v) for p in ring for v in p):
        raise Misuse(f"fence {fc.id}: ring has non-finite coordinates")
    return Fence.polygon(fc.id, fc.name, fc.org, fc.use, Polygon(ring), fc.speed_limit_kmh)
