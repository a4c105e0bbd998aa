"""Typed configuration of the web server and live feed (``[web]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geofence.config import PlaceConfig
from store.orders_core import OrderFlowConfig

__all__ = ["AuthConfig", "BodyLimits", "TileConfig", "TokenConfig", "UserConfig", "WebConfig"]

Role = Literal["viewer", "operator", "admin"]
Duty = Literal["requester", "approver", "dispatcher"]  # web.auth.DUTIES


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
    duties: list[Duty] = Field(default_factory=list, description="requester, approver, dispatcher")


class AuthConfig(_Frozen):
    """Sessions, password hashing and the login limit (``[web.auth]``).

    A login session slides: every authenticated call and every open live-feed socket
    move its expiry to ``idle_timeout_s`` from now, never past its absolute cap
    (``max_session_s`` from the login; ``room_max_session_s`` for a monitoring-room
    wall screen). Machine tokens from ``POST /api/tokens`` keep their fixed lifetime.
    """

    idle_timeout_s: int = Field(
        default=1800, ge=60, description="a session unused this long ends (sliding expiry)"
    )
    max_session_s: int = Field(
        default=12 * 3600, ge=60, description="absolute cap of a login session, however busy"
    )
    room_max_session_s: int = Field(
        default=7 * 86400,
        ge=60,
        description="absolute cap of a monitoring-room session (login with room = true)",
    )
    feed_recheck_s: float = Field(
        default=2.0,
        gt=0,
        le=4.0,
        description="how often an open live feed re-checks its session (closed within 5 s)",
    )
    hash_workers: int = Field(
        default=1, ge=1, le=8, description="threads for argon2 password hashing (its own pool)"
    )
    hash_queue: int = Field(
        default=8,
        ge=0,
        description="logins waiting for a hashing thread; more are answered 503 busy at once",
    )
    busy_retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After of a 503 busy answer to a login"
    )
    login_free_attempts: int = Field(
        default=5,
        ge=1,
        description="login attempts per (user name, address) before delays start",
    )
    login_delay_s: float = Field(
        default=1.0, gt=0, description="first delay after the free attempts; doubles each time"
    )
    login_max_delay_s: int = Field(
        default=900, ge=1, description="longest delay between attempts of one (user, address)"
    )
    login_forget_s: int = Field(
        default=3600, ge=60, description="a (user, address) with no attempt this long starts over"
    )
    login_attempts_per_address_per_min: int = Field(
        default=30,
        ge=1,
        description="unsuccessful logins from one address per minute, over all user names",
    )
    login_tracked_keys: int = Field(
        default=100_000, ge=100, description="(user, address) pairs remembered; oldest forgotten"
    )

    @model_validator(mode="after")
    def _caps(self) -> AuthConfig:
        if self.idle_timeout_s > min(self.max_session_s, self.room_max_session_s):
            raise ValueError("idle_timeout_s must not exceed max_session_s or room_max_session_s")
        return self


class BodyLimits(_Frozen):
    """Request body limits by route class (``[web.body_limits]``), checked before the
    caller is authenticated and before the body is read: a larger body gets 413."""

    login: int = Field(default=4096, ge=256, description="bytes: login and session bodies")
    api: int = Field(default=64 * 1024, ge=1024, description="bytes: other JSON bodies")
    upload: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="bytes: GeoJSON fences and CSV imports",
    )


class WebConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    feed_interval_ms: int = Field(default=500, ge=20, le=60_000)
    feed_client_buffer: int = Field(
        default=256, ge=1, description="frames queued for one slow client before it is disconnected"
    )
    # stream.feed.FeedLimits: what one live-feed client may ask for at once
    feed_max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="bytes of one message a live-feed client sends; a longer one closes its "
        "socket (1009)",
    )
    feed_max_vehicles: int = Field(
        default=5_000, ge=1, description="vehicle ids one live-feed subscription may name"
    )
    feed_max_orgs: int = Field(
        default=500, ge=1, description="organisations one live-feed subscription may name"
    )
    feed_alarm_ring: int = Field(
        default=4096, ge=1, description="alarm frames kept for clients that reconnect"
    )
    tiles: list[TileConfig] = Field(default_factory=lambda: [TileConfig()])
    tokens: list[TokenConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)
    auth: AuthConfig = AuthConfig()
    body_limits: BodyLimits = BodyLimits()
    establishment: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "authorised vehicles (编制数) by organisation id; seeds, once, the quota of"
            " organisations that have none (class 一般公务)"
        ),
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
    orders: OrderFlowConfig = OrderFlowConfig()
    export_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="rows one alarm export (CSV/XLSX) holds at most; a longer one says it was cut",
    )
