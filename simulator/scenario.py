"""The demo city: organisations and vehicles of a simulated Guang'an (广安) fleet.

The demo ships no real map data (publishing map data in China needs
approval); its fences are simple shapes generated here.
"""

from __future__ import annotations

import math
from typing import Any

from simulator.fleet import FleetSpec, terminal_id

__all__ = ["DEMO_ORGS", "demo_config"]

# (id, name, parent) — the city, its districts and counties, one unit each.
DEMO_ORGS: tuple[tuple[str, str, str | None], ...] = (
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

_PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def _plate(i: int) -> str:
    a = _PLATE_CHARS[i % 24]
    return f"川X{a}{i:04d}"[:8]


def _circle_ring(lat: float, lon: float, radius_m: float, n: int = 48) -> list[list[float]]:
    out = []
    for k in range(n + 1):
        a = 2 * math.pi * (k % n) / n
        out.append(
            [
                lon + radius_m * math.sin(a) / (111_320.0 * math.cos(math.radians(lat))),
                lat + radius_m * math.cos(a) / 111_320.0,
            ]
        )
    return out


def demo_config(spec: FleetSpec, *, mqtt_port: int, web_port: int, db_path: str) -> dict[str, Any]:
    """A complete configuration document (as parsed TOML) for ``fleetwatch demo``."""
    orgs = [{"id": i, "name": n, **({"parent": p} if p else {})} for i, n, p in DEMO_ORGS]
    leaf_orgs = [o[0] for o in DEMO_ORGS if o[2] is not None]
    vehicles = [
        {
            "id": f"v{i:05d}",
            "plate": _plate(i),
            "terminal": terminal_id(i),
            "org": leaf_orgs[i % len(leaf_orgs)],
            "type": "car",
        }
        for i in range(spec.vehicles)
    ]
    lat, lon = spec.center_lat, spec.center_lon
    return {
        "service": {
            "name": "广安市公务用车监控平台 (演示)",
            "public_url": f"http://127.0.0.1:{web_port}",
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "client_id": "fleetwatch-demo",
            "ack": "on_receive",
            "persistent_session": False,
        },
        "store": {"kind": "sqlite", "sqlite_path": db_path},
        "live": {"kind": "memory"},
        "web": {
            "host": "127.0.0.1",
            "port": web_port,
            "tokens": [
                {"token": "demo-room-token", "org": "ga", "role": "operator", "name": "监控室"}
            ],
        },
        "rules": {
            "speeding": {
                "min_duration_s": 10,
                "close_after_s": 20,
                "default_limit_kmh": spec.limit_kmh,
            }
        },
        "orgs": orgs,
        "vehicles": vehicles,
        "fences": [
            {
                "id": "demo-city",
                "name": "广安市 (演示边界)",
                "use": "allowed_region",
                "org": "ga",
                "shape": "circle",
                "center": [lon, lat],
                "radius_m": spec.radius_km * 1000 * 1.6,
            },
            {
                "id": "demo-ktv",
                "name": "某娱乐场所 (演示)",
                "use": "forbidden",
                "org": "ga",
                "shape": "circle",
                "center": [lon + 0.03, lat + 0.02],
                "radius_m": 300,
            },
            {
                "id": "demo-lot",
                "name": "市机关停车场 (演示)",
                "use": "lot",
                "org": "ga",
                "shape": "polygon",
                "ring": _circle_ring(lat, lon, 250, 8),
            },
        ],
    }
