"""The configuration that matches a simulated city: organisations, vehicles, fences, rules.

The fences come from the same :class:`~simulator.city.City` the fleet drives
in, so FleetWatch is configured to catch exactly what the simulator injects:
the city boundary (``allowed_region``: Guang'an's real outline, from the district
boundaries the package ships), one lot per unit (``lot``), and the banned places
(``forbidden``). The lots, places and the road grid are generated.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from simulator.city import City, build_city
from simulator.fleet import FleetSpec, terminal_id, vehicle_id

__all__ = [
    "DEMO_DRIVERS",
    "DEMO_ORGS",
    "DEMO_TOKEN",
    "demo_config",
    "demo_orders",
    "fleet_config",
    "plate",
]

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
        "vehicle_state": {"moving_speed_kmh": 5.0, "offline_after_s": 600},
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
            "terminal_alarm": {"bits": ["sos"], "critical": ["sos"], "close_after_s": 30},
            # The units that dispatch by order (FleetSpec.ordered_orgs) check no_order. The
            # wrong-car check is off: a car out with no order while a colleague's order runs
            # would raise it too, and the scenario's ground truth does not model that.
            "no_order": {"orgs": list(city.childless_orgs[: spec.ordered_orgs])},
            "order_mismatch": {"region_tolerance_km": 0.5, "vehicle_check": False},
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
    """A complete configuration document (as parsed TOML) for ``fleetwatch demo``.

    Its ``[web] establishment`` gives every unit an 编制数 equal to the cars it holds, but
    one unit two short (超编), so that the board and the quota report have figures from the
    first minute (it seeds the quota store once; the office changes it there)."""
    doc = fleet_config(
        spec,
        mqtt_port=mqtt_port,
        web_port=web_port,
        db_path=db_path,
        client_id="fleetwatch-demo",
    )
    held = Counter(str(v["org"]) for v in doc["vehicles"])
    establishment = dict(held)
    if establishment:
        over = sorted(establishment)[0]
        establishment[over] = max(0, establishment[over] - 2)
    doc["web"]["establishment"] = establishment
    return doc


#: The demo's drivers (驾驶员档案, with their licence numbers — 驾驶证号), a few per
#: organisation the demo accounts dispatch for, so that ``fleetwatch demo`` can dispatch:
#: (id, name, org, licence_no, licence_class, phone).
DEMO_DRIVERS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("D-GA-01", "张建国", "ga", "511602197803150012", "A1", "13800000001"),
    ("D-GA-02", "李明", "ga", "511602198511020034", "B2", "13800000002"),
    ("D-GA-03", "王强", "ga", "511602199006180056", "C1", "13800000003"),
    ("D-YC-01", "刘德华", "ga-yc", "511621198209090071", "C1", "13800000004"),
    ("D-YC-02", "陈志远", "ga-yc-nyj", "511621198712250095", "C1", "13800000005"),
    ("D-WS-01", "赵勇", "ga-ws", "511622198104300018", "B2", "13800000006"),
    ("D-GAQ-01", "周平", "ga-gaq", "511602198908080037", "C1", "13800000007"),
)


def demo_orders(day: str, start_ms: int) -> list[dict[str, Any]]:
    """Two approved requests waiting to be dispatched (集中调度) on the demo's day ``day``
    (YYYY-MM-DD), from ``start_ms`` on: keyuan's (approved by chuzhang, the county
    office) and demo's (approved by admin). Fields as a requested order's (#16); the
    ids carry the day, so a demo started on another day gets its own."""
    h = 3_600_000
    plans = (
        (
            "1",
            "ga-yc-nyj",
            "keyuan",
            "chuzhang",
            "到九龙镇农业示范园检查春耕备耕",
            3,
            "岳池县九龙镇农业示范园",
            0,
        ),
        ("2", "ga", "demo", "admin", "接送参加全市安全生产工作会议的代表", 4, "广安市会议中心", 2),
    )
    out = []
    for n, org, requester, approver, purpose, passengers, place, offset in plans:
        start = start_ms + offset * h
        out.append(
            {
                "id": f"DEMO-{day}-{n}",
                "org": org,
                "state": "approved",
                "source": "request",
                "type": "local",
                "purpose": purpose,
                "reason": purpose,
                "passengers": passengers,
                "passenger_names": "",
                "destination": {"kind": "place", "text": place, "place": None, "city": None},
                "region": None,
                "start": start,
                "end": start + 3 * h,
                "vehicle_preferred": None,
                "vehicle": None,
                "driver": None,
                "driver_name": None,
                "requester": requester,
                "created_by": requester,
                "created_at": start_ms - h,
                "chain": ["office"],
                "approvals": [
                    {
                        "by": approver,
                        "at": start_ms - h // 2,
                        "decision": "approve",
                        "reason": "",
                        "step": "office",
                    }
                ],
                "approved": True,
                "approved_by": approver,
                "approved_at": start_ms - h // 2,
                "dispatched_by": None,
                "dispatched_at": None,
                "out_at": None,
                "back_at": None,
                "km": None,
                "trip_source": None,
                "late": False,
                "cancel_reason": None,
                "reject_reason": None,
            }
        )
    return out
