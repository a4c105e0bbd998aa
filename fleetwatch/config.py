"""The one TOML configuration file, loaded once, validated, passed in.

Each stage owns the model of its own table (``ingest.config``,
``store.config``, ``rules.config``, ``geofence.config``, ``web.config``); this
module assembles them, adds organisations and vehicles, checks what spans
tables (a vehicle's organisation exists, terminal ids are unique, ...) and
turns every problem into a :class:`~fleet.errors.ConfigError` that names
the file, the key and the fix.
"""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.cluster import ClusterConfig
from fleet.errors import ConfigError
from fleet.model import VEHICLE_ID_PATTERN, OrgConfig, ServiceConfig, VehicleConfig
from fleet.vehicle_state import VehicleStateConfig
from geofence.config import FenceConfig, FenceFileConfig
from ingest.config import IngestConfig, MqttConfig
from ingest.jt808.config import CommandsConfig, GatewayConfig
from notify.config import NotifyConfig
from rules.config import RulesConfig
from store.config import LiveConfig, StoreConfig
from web.config import WebConfig

__all__ = [
    "VEHICLE_ID_PATTERN",
    "Config",
    "OrgConfig",
    "ServiceConfig",
    "VehicleConfig",
    "load_config",
    "parse_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Config(_Frozen):
    service: ServiceConfig = ServiceConfig()
    vehicle_state: VehicleStateConfig = VehicleStateConfig()
    mqtt: MqttConfig = MqttConfig()
    ingest: IngestConfig = IngestConfig()
    gateway: GatewayConfig = GatewayConfig()
    commands: CommandsConfig = CommandsConfig()
    store: StoreConfig = StoreConfig()
    live: LiveConfig = LiveConfig()
    web: WebConfig = WebConfig()
    rules: RulesConfig = RulesConfig()
    notify: NotifyConfig = NotifyConfig()
    cluster: ClusterConfig = ClusterConfig()
    orgs: list[OrgConfig] = Field(default_factory=list)
    vehicles: list[VehicleConfig] = Field(default_factory=list)
    vehicles_csv: str | None = Field(
        None, description="CSV with columns id,plate,terminal,org,type,speed_limit_kmh"
    )
    fence_files: list[FenceFileConfig] = Field(default_factory=list)
    fences: list[FenceConfig] = Field(default_factory=list)
    source: str = Field("<memory>", exclude=True, description="where this config was read from")


# Hints for the person fixing the file, by the last element of the key path.
_FIXES: dict[str, str] = {
    "port": "use a TCP port number between 1 and 65535",
    "timezone": "use an IANA zone name such as Asia/Shanghai",
    "kind": "see the README's configuration reference for the allowed values",
    "terminal": "use the terminal id or SIM number, at most 20 characters",
    "plate": "use the licence plate, e.g. 川X12345",
    "org": "use the id of an organisation listed under [[orgs]]",
    "speed_limit_kmh": "use a positive number of km/h",
}


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


#: Keys that moved: old key path → the key that replaced it (issue #13: one vehicle state).
MOVED_KEYS: dict[tuple[str, ...], str] = {
    ("live", "moving_kmh"): "vehicle_state.moving_speed_kmh",
    ("live", "offline_after_s"): "vehicle_state.offline_after_s",
    ("rules", "offline", "after_s"): "vehicle_state.offline_after_s",
    ("rules", "off_hours", "moving_speed_kmh"): "vehicle_state.moving_speed_kmh",
    ("rules", "fatigue", "moving_speed_kmh"): "vehicle_state.moving_speed_kmh",
    ("rules", "sealed_moving", "moving_speed_kmh"): "vehicle_state.moving_speed_kmh",
}


def _check_moved(data: dict[str, Any], source: str) -> None:
    for path, new in MOVED_KEYS.items():
        node: Any = data
        for part in path:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            table, key = new.split(".")
            raise ConfigError(
                source,
                ".".join(path),
                f"this key was replaced by {new} (one definition of moving/offline for the "
                "map, the live state, the rules and the board)",
                f"remove it and set {key} under [{table}]",
            )


def parse_config(data: dict[str, Any], *, source: str = "<memory>") -> Config:
    """Validate an already-parsed TOML document. Raises :class:`ConfigError`."""
    _check_moved(data, source)
    base = Path(source).parent if source != "<memory>" else Path.cwd()
    data = dict(data)
    csv_path = data.get("vehicles_csv")
    if csv_path:
        path = (base / csv_path).resolve()
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = [
                    {k: v for k, v in row.items() if v not in (None, "")}
                    for row in csv.DictReader(fh)
                ]
        except OSError as exc:
            raise ConfigError(
                source,
                "vehicles_csv",
                f"cannot read {path}: {exc}",
                "give a path relative to the configuration file",
            ) from exc
        data["vehicles"] = [*data.get("vehicles", []), *rows]
    try:
        cfg = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        key = _key(loc)
        last = next((p for p in reversed(loc) if isinstance(p, str)), "")
        fix = _FIXES.get(last, "")
        if err["type"] == "extra_forbidden":
            fix = "remove it or check its spelling against the configuration reference"
        elif err["type"] == "missing":
            fix = "add this key"
        elif err["type"] == "string_pattern_mismatch" and loc[:1] == ("vehicles",):
            fix = (
                "use only letters, digits and . _ ~ - (the id goes in URLs); keep the plate,"
                " e.g. 川X12345, in plate and give an id such as GA-12345"
            )
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise ConfigError(source, key, err["msg"] + more, fix) from None
    _check_references(cfg)
    return cfg


def _check_references(cfg: Config) -> None:
    src = cfg.source
    orgs: dict[str, OrgConfig] = {}
    for i, org in enumerate(cfg.orgs):
        if org.id in orgs:
            raise ConfigError(
                src,
                f"orgs[{i}].id",
                f"duplicate organisation id {org.id!r}",
                "give every organisation its own id",
            )
        orgs[org.id] = org
    for i, org in enumerate(cfg.orgs):
        if org.parent is not None and org.parent not in orgs:
            raise ConfigError(
                src,
                f"orgs[{i}].parent",
                f"unknown parent {org.parent!r}",
                "use the id of another [[orgs]] entry, or leave it out for the root",
            )
        seen = {org.id}
        p = org.parent
        while p is not None:
            if p in seen:
                raise ConfigError(
                    src,
                    f"orgs[{i}].parent",
                    f"cycle through {p!r}",
                    "organisations must form a tree",
                )
            seen.add(p)
            p = orgs[p].parent
    ids: set[str] = set()
    terminals: set[str] = set()
    plates: set[str] = set()
    for i, v in enumerate(cfg.vehicles):
        if v.org not in orgs:
            raise ConfigError(
                src, f"vehicles[{i}].org", f"unknown organisation {v.org!r}", _FIXES["org"]
            )
        for value, pool, what in (
            (v.id, ids, "id"),
            (v.terminal, terminals, "terminal"),
            (v.plate, plates, "plate"),
        ):
            if value in pool:
                raise ConfigError(
                    src,
                    f"vehicles[{i}].{what}",
                    f"duplicate {what} {value!r}",
                    f"every vehicle needs its own {what}",
                )
            pool.add(value)
    for i, t in enumerate(cfg.web.tokens):
        if t.org not in orgs:
            raise ConfigError(
                src, f"web.tokens[{i}].org", f"unknown organisation {t.org!r}", _FIXES["org"]
            )
    for i, f in enumerate(cfg.fences):
        if f.org not in orgs:
            raise ConfigError(
                src, f"fences[{i}].org", f"unknown organisation {f.org!r}", _FIXES["org"]
            )
    for i, r in enumerate(cfg.notify.routes):
        for j, o in enumerate(r.orgs):
            if o not in orgs:
                raise ConfigError(
                    src,
                    f"notify.routes[{i}].orgs[{j}]",
                    f"unknown organisation {o!r}",
                    _FIXES["org"],
                )
    if cfg.notify.enabled and cfg.store.kind == "memory":
        raise ConfigError(
            src,
            "notify.enabled",
            "notifications need a history store",
            'set [store] kind = "sqlite" or "postgres"',
        )
    for i, ff in enumerate(cfg.fence_files):
        if ff.org not in orgs:
            raise ConfigError(
                src, f"fence_files[{i}].org", f"unknown organisation {ff.org!r}", _FIXES["org"]
            )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(
            str(p), "<file>", f"cannot read: {exc.strerror}", "check the path given to --config"
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), "<file>", "not UTF-8", "save the file as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            str(p), "<file>", f"not valid TOML: {exc}", "fix the syntax at the line named"
        ) from exc
    return parse_config(data, source=str(p))
