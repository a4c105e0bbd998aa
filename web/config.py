"""Typed configuration of the web server and live feed (``[web]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TileConfig", "TokenConfig", "WebConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TileConfig(_Frozen):
    """A base-map tile source. ``url`` empty means no tiles (a sealed intranet)."""

    name: str = "OpenStreetMap"
    url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    attribution: str = "© OpenStreetMap contributors"
    datum: Literal["wgs84", "gcj02"] = "wgs84"
    max_zoom: int = Field(18, ge=1, le=22)


class TokenConfig(_Frozen):
    """A static API/feed token (for the demo and machine clients)."""

    token: str = Field(min_length=8)
    org: str
    role: Literal["viewer", "operator", "admin"] = "viewer"
    name: str = ""


class WebConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    feed_interval_ms: int = Field(500, ge=20, le=60_000)
    feed_client_buffer: int = Field(
        256, ge=1, description="frames queued for one slow client before it is disconnected"
    )
    tiles: list[TileConfig] = Field(default_factory=lambda: [TileConfig()])
    tokens: list[TokenConfig] = Field(default_factory=list)
