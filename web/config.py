"""Typed configuration of the web server and live feed (``[web]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from geofence.config import PlaceConfig

__all__ = ["TileConfig", "TokenConfig", "UserConfig", "WebConfig"]

Role = Literal["viewer", "operator", "admin"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TileConfig(_Frozen):
    """A base-map tile source. ``url`` empty means no tiles (a sealed intranet)."""

    name: str = "OpenStreetMap"
    url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    attribution: str = "© OpenStreetMap contributors"
    datum: Literal["wgs84", "gcj02"] = "wgs84"
    max_zoom: int = Field(default=18, ge=1, le=22)
    subdomains: str = Field(default="abc", description="letters substituted for {s} in url")


class TokenConfig(_Frozen):
    """A static API/feed token (for the demo and machine clients)."""

    token: str = Field(min_length=8)
    org: str
    role: Role = "viewer"
    name: str = ""


class UserConfig(_Frozen):
    """A user created at start-up when missing (the first admin, demo users).

    ``password`` is an argon2 hash (``$argon2id$...``, made with
    ``python -c "from web.auth import hash_password; print(hash_password('...'))"``)
    or, for demos only, the password itself.
    """

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1)
    org: str
    role: Role = "viewer"


class WebConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    feed_interval_ms: int = Field(default=500, ge=20, le=60_000)
    feed_client_buffer: int = Field(
        default=256, ge=1, description="frames queued for one slow client before it is disconnected"
    )
    feed_alarm_ring: int = Field(
        default=4096, ge=1, description="alarm frames kept for clients that reconnect"
    )
    tiles: list[TileConfig] = Field(default_factory=lambda: [TileConfig()])
    tokens: list[TokenConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)
    token_ttl_s: int = Field(default=12 * 3600, ge=60, description="lifetime of a login token")
    login_attempts_per_min: int = Field(
        default=10, ge=1, description="failed logins allowed per user name and per address"
    )
    establishment: dict[str, int] = Field(
        default_factory=dict,
        description="authorised vehicles (编制数) by organisation id; the board shows them",
    )
    accounts_path: str = Field(
        default="",
        description="SQLite file for users, tokens and audit; empty: the store's sqlite_path",
    )
    language: Literal["zh", "en"] = "zh"
    center: tuple[float, float] = Field(
        default=(30.456, 106.633), description="initial map centre (lat, lon), WGS-84"
    )
    zoom: int = Field(default=11, ge=1, le=20)
    places: PlaceConfig = PlaceConfig()
    export_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="rows one alarm export (CSV/XLSX) holds at most; a longer one says it was cut",
    )
