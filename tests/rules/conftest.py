"""Shared helpers for the rules tests: a small fleet, fences built through the real index."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from shapely.geometry import box

from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from geofence.fence import Fence
from geofence.index import FenceIndex

SH = ZoneInfo("Asia/Shanghai")

# A made-up city around Guang'an: the city box, a forbidden spot, the unit's lot, a school zone.
CITY = box(106.0, 30.0, 107.0, 31.0)
FORBIDDEN = box(106.50, 30.50, 106.51, 30.51)
LOT = box(106.60, 30.40, 106.602, 30.402)
SCHOOL_ZONE = box(106.30, 30.30, 106.35, 30.35)


def local_ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Epoch ms of a Shanghai wall-clock time."""
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=SH).timestamp() * 1000)


def make_registry(n: int = 3, **kw: Any) -> Registry:
    orgs = [
        OrgConfig(id="city", name="广安市"),
        OrgConfig(id="bureau", name="市财政局", parent="city"),
        OrgConfig(id="county", name="岳池县", parent="city"),
    ]
    vehicles = [
        VehicleConfig(
            id=f"v{i}",
            plate=f"川X{i:05d}",
            terminal=f"1380000{i:04d}",
            org="bureau" if i % 2 == 0 else "county",
            type="bus" if i % 3 == 2 else "car",
        )
        for i in range(n)
    ]
    return Registry(
        vehicles,
        OrgTree.from_config(orgs),
        kw.get("default_kmh", 80.0),
        kw.get("by_type", {"bus": 60.0}),
    )


def make_fences() -> FenceIndex:
    return FenceIndex.build(
        [
            Fence.polygon("city", "广安市", "city", "allowed_region", CITY),
            Fence.polygon("ktv", "某KTV", "city", "forbidden", FORBIDDEN),
            Fence.polygon("lot", "财政局停车场", "bureau", "lot", LOT),
            Fence.polygon(
                "school", "学校区域", "city", "speed_zone", SCHOOL_ZONE, speed_limit_kmh=30.0
            ),
        ]
    )


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture(scope="session")
def fences() -> FenceIndex:
    return make_fences()
