"""A small fleet for live feed tests: a city, two counties, a unit under one county."""

from __future__ import annotations

import pytest

from fleet.registry import Registry
from fleetwatch.config import parse_config


def small_config() -> dict[str, object]:
    return {
        "orgs": [
            {"id": "city", "name": "广安市"},
            {"id": "wusheng", "name": "武胜县", "parent": "city"},
            {"id": "yuechi", "name": "岳池县", "parent": "city"},
            {"id": "ws-police", "name": "武胜县公安局", "parent": "wusheng"},
        ],
        "vehicles": [
            {"id": "V1", "plate": "川X10001", "terminal": "10001", "org": "city"},
            {"id": "V2", "plate": "川X10002", "terminal": "10002", "org": "wusheng"},
            {"id": "V3", "plate": "川X10003", "terminal": "10003", "org": "ws-police"},
            {"id": "V4", "plate": "川X10004", "terminal": "10004", "org": "yuechi"},
        ],
    }


@pytest.fixture
def registry() -> Registry:
    return Registry.from_config(parse_config(small_config()))
