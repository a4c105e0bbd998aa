"""The organisation and vehicle model every stage shares (the records' shape), and the
service's identity (``[service]``: name, time zone, public address).

An organisation is the city, a district/county (区县) or a unit (单位); a vehicle
carries one terminal and belongs to one organisation. The configuration file seeds
them (``[[orgs]]``, ``[[vehicles]]``), the records keep them; the
:class:`~fleet.registry.Registry` indexes them for the array-shaped stages.
"""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["VEHICLE_ID_PATTERN", "OrgConfig", "ServiceConfig", "VehicleConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceConfig(_Frozen):
    """The deployment's name, time zone and public address (every stage may read it)."""

    name: str = Field("FleetWatch 公务用车监控", description="shown on the page and in messages")
    timezone: str = Field(
        "Asia/Shanghai", description="working hours and holidays are evaluated here"
    )
    public_url: str = Field("http://127.0.0.1:8080", description="links in notifications")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class OrgConfig(_Frozen):
    """An organisation: the city, a district/county (区县), or a unit (单位)."""

    id: str = Field(min_length=1, max_length=64, description="stable id used by other keys")
    name: str = Field(description="e.g. 广安市, 武胜县, 县教育局")
    parent: str | None = Field(None, description="id of the parent; none for the city")


#: What a vehicle id may be made of: RFC 3986 unreserved characters, safe in a URL path.
VEHICLE_ID_PATTERN = r"^[A-Za-z0-9._~-]+$"


class VehicleConfig(_Frozen):
    """A vehicle with its terminal. ``plate`` is the licence plate (车牌号)."""

    # The id is a path segment of the API (/api/vehicles/{id}/track) and of alarm ids.
    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=VEHICLE_ID_PATTERN,
        description="stable vehicle id: letters, digits and . _ ~ - only (it goes in URLs)",
    )
    plate: str = Field(min_length=1, max_length=16, description="licence plate, 车牌号")
    terminal: str = Field(min_length=1, max_length=20, description="terminal id / SIM phone")
    org: str = Field(description="organisation id")
    type: str = Field("car", description="vehicle type (limits by type: rules.speeding)")
    speed_limit_kmh: float | None = Field(None, gt=0, le=250, description="overrides the type")
    status: Literal["在用", "封存", "待处置", "已处置"] = Field(
        "在用", description="在用 in service, 封存 sealed, 待处置 handed over, 已处置 disposed"
    )
    vehicle_class: str = Field("一般公务", description="编制类别 (the quota counts by it)")
    vin: str | None = Field(None, description="车辆识别代号 (gateway registration_match)")
    terminal_maker: str | None = Field(None, description="终端厂商 (gateway registration_match)")
