"""The configuration that matches a simulated city: organisations, vehicles, fences, rules.

The fences come from the same :class:`~simulator.city.City` the fleet drives
in, so FleetWatch is configured to catch exactly what the simulator injects:
the city boundary (``allowed_region``: Guang'an's real outline, from the district
boundaries the package ships), one lot per unit (``lot``), and the banned places
(``forbidden``). The lots, places and the road grid are generated.
"""

from __future__ import annotations

import secrets
from typing import Any

from simulator.city import City, build_city
from simulator.fleet import FleetSpec, terminal_id, vehicle_id

__all__ = ["DEMO_ORGS", "DEMO_TOKEN", "demo_config", "fleet_config", "plate"]

DEMO_TOKEN = "demo-room-token"
_PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ"

DEMO_ORGS = build_city(30.456, 106.633, 15.0, 8).orgs


def plate(i: int) -> str:
    """A unique licence plate (车牌号) for simulated vehicle i: 川X + letter + 4 digits..."""
    return f"川X{_PLATE_CHARS[(i // 10_000) % 24]}{i % 10_000:04d}"


def _fences(city: City) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "id": "city",
            "name": "广安市行政区域",
            "use": "allowed_region",
            "org": "ga",
            "shape": "polygon",
            "ring": [list(p) for p in city.boundary_ring],
        }
    ]
    for lot in city.lots:
        s = lot.half_m
        out.append(
            {
                "id": f"lot-{lot.org}",
                "name": f"{lot.org} 停车场 (模拟)",
                "use": "lot",
                "org": lot.org,
                "shape": "polygon",
                "ring": city.ring(
                    [
                        (lot.x - s, lot.y - s),
                        (lot.x + s, lot.y - s),
                        (lot.x + s, lot.y + s),
                        (lot.x - s, lot.y + s),
                    ]
                ),
            }
        )
    for p in city.places:
        lat, lon = city.to_latlon(p.x, p.y)
        out.append(
            {
                "id": p.id,
                "name": p.name,
                "use": "forbidden",
                "org": "ga",
                "shape": "circle",
                "center": [round(lon, 7), round(lat, 7)],
                "radius_m": p.radius_m,
            }
        )
    return out


def fleet_config(
    spec: FleetSpec,
    *,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
    web_port: int = 8080,
    db_path: str = "fleetwatch.db",
    token: str = DEMO_TOKEN,
    topic_prefix: str = "",
    client_id: str = "fleetwatch-sim",
    gateway_secret: str | None = None,
) -> dict[str, Any]:
    """A complete configuration document (as parsed TOML) for the simulated city of ``spec``.

    ``gateway_secret`` keys the JT/T 808 auth codes; without one a fresh random secret is
    written (``check-config`` refuses a gateway without it).
    """
    city = build_city(spec.center_lat, spec.center_lon, spec.radius_km, 8)
    leaves = city.leaf_orgs
    office = spec.schedule == "office"
    windows = (
        {"summer": list(spec.windows_summer), "winter": list(spec.windows_winter)}
        if office
        # The demo's city drives round the clock: no working hours to break.
        else {"summer": ["00:00-24:00"], "winter": ["00:00-24:00"]}
    )
    return {
        "service": {
            "name": "广安市公务用车监控平台 (模拟)",
            "timezone": "Asia/Shanghai",
            "public_url": f"http://127.0.0.1:{web_port}",
        },
        "mqtt": {
            "host": mqtt_host,
            "port": mqtt_port,
            "client_id": client_id,
            "json_topic": f"{topic_prefix}fleet/+/position",
            "jt808_topic": f"{topic_prefix}jt808/+/up",
            "ack": "on_receive",
            "protocol": "3.1.1",
            "persistent_session": False,
        },
        "gateway": {"auth_secret": gateway_secret or secrets.token_hex(32)},
        "store": {"kind": "sqlite", "sqlite_path": db_path},
        "live": {"kind": "memory"},
        "web": {
            "host": "127.0.0.1",
            "port": web_port,
            "tokens": [{"token": token, "org": "ga", "role": "operator", "name": "监控室"}],
            # Demo accounts (plain passwords are accepted for demos only; see web.config).
            "users": [
                {
                    "username": "demo",
                    "password": "demo",
                    "org": "ga",
                    "role": "operator",
                    "duties": ["requester", "dispatcher"],
                },
                {
                    "username": "admin",
                    "password": "demo",
                    "org": "ga",
                    "role": "admin",
                    "duties": ["requester", "approver", "dispatcher"],
                },
                {"username": "wusheng", "password": "demo", "org": "ga-ws", "role": "viewer"},
                # #16: a unit's staff member files requests; the county office approves them
                {
                    "username": "keyuan",
                    "password": "demo",
                    "org": "ga-yc-nyj",
                    "role": "viewer",
                    "duties": ["requester"],
                },
                {
                    "username": "chuzhang",
                    "password": "demo",
                    "org": "ga-yc",
                    "role": "operator",
                    "duties": ["approver"],
                },
            ],
            # one approval step in the demo: an approver of an organisation above the unit
            "orders": {"chains": {"ga": ["office"]}},
            "center": [spec.center_lat, spec.center_lon],
        },
        "rules": {
            "speeding": {
                "min_duration_s": 10,
                "close_after_s": 30,
                "default_limit_kmh": spec.limit_kmh,
            },
            "off_hours": {
                "min_duration_s": 60,
                "close_after_s": 300,
                "working_hours": {
                    "summer_start": spec.summer[0],
                    "summer_end": spec.summer[1],
                    "default": windows,
                },
            },
            "out_of_area": {"min_duration_s": 60, "close_after_s": 60},
            "forbidden_zone": {"min_duration_s": 30, "close_after_s": 60},
            "parking_violation": {
                "grace_s": 1800,
                "close_after_s": 120,
                "night_start": "22:00",
                "night_end": "06:00",
            },
            "offline": {"after_s": 600},
            "terminal_alarm": {"bits": ["sos"], "critical": ["sos"], "close_after_s": 30},
        },
        "orgs": [{"id": i, "name": n, **({"parent": p} if p else {})} for i, n, p in city.orgs],
        "vehicles": [
            {
                "id": vehicle_id(i),
                "plate": plate(i),
                "terminal": terminal_id(i),
                "org": leaves[i % len(leaves)],
                "type": "car",
            }
            for i in range(spec.vehicles)
        ],
        "fences": _fences(city),
    }


def demo_config(spec: FleetSpec, *, mqtt_port: int, web_port: int, db_path: str) -> dict[str, Any]:
    """A complete configuration document (as parsed TOML) for ``fleetwatch demo``."""
    return fleet_config(
        spec,
        mqtt_port=mqtt_port,
        web_port=web_port,
        db_path=db_path,
        client_id="fleetwatch-demo",
    )
