"""Typed configuration of fences (``[[fences]]`` and ``[[fence_files]]`` tables)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FenceConfig", "FenceFileConfig", "FenceUse", "PlaceConfig"]

FenceUse = Literal["allowed_region", "forbidden", "lot", "speed_zone"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FenceFileConfig(_Frozen):
    """A GeoJSON FeatureCollection (DataV/AMap administrative files included)."""

    path: str
    use: FenceUse
    org: str
    datum: Literal["wgs84", "gcj02"] = "wgs84"
    name_property: str = "name"
    id_property: str = "adcode"
    speed_limit_kmh: float | None = Field(None, gt=0)


class FenceConfig(_Frozen):
    """One fence written inline: a circle, a corridor or a polygon ring (lon, lat pairs)."""

    id: str
    name: str
    use: FenceUse
    org: str
    shape: Literal["circle", "corridor", "polygon"]
    center: tuple[float, float] | None = None
    radius_m: float | None = Field(None, gt=0)
    path: list[tuple[float, float]] | None = None
    half_width_m: float | None = Field(None, gt=0)
    ring: list[tuple[float, float]] | None = None
    speed_limit_kmh: float | None = Field(None, gt=0)
    # Datum of the coordinates written above; gcj02 ones are converted to WGS-84 on load.
    datum: Literal["wgs84", "gcj02"] = "wgs84"


class PlaceConfig(_Frozen):
    """Place names (geofence.places): how far a landmark or a district is still named."""

    near_max_m: float = Field(
        5000.0, gt=0, description="name the nearest lot or banned place only within this distance"
    )
    district_snap_m: float = Field(
        1000.0,
        ge=0,
        description="a point in no district takes the nearest one within this distance",
    )
    max_points: int = Field(
        200, ge=1, le=10_000, description="points one GET /api/geo/places request may ask for"
    )
