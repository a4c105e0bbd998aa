"""Typed configuration of the JT/T 808 gateway (``[gateway]`` table)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GatewayConfig"]


class GatewayConfig(BaseModel):
    """Where the gateway listens, where it publishes, and its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(6808, ge=0, le=65535, description="0 picks a free port (tests)")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_client_id: str = Field("fleetwatch-gateway", min_length=1, max_length=64)
    topic_prefix: str = Field("jt808", min_length=1, description="publishes to PREFIX/{phone}/up")
    mqtt_max_inflight: int = Field(1000, ge=1, le=65535, description="QoS 1 publishes in flight")
    heartbeat_s: float = Field(60.0, gt=0, description="terminal heartbeat interval; idle = 3x")
    max_frame_bytes: int = Field(4096, ge=64, le=1 << 20, description="escaped, with delimiters")
    max_connections: int = Field(20_000, ge=1)
    rate_per_s: float = Field(50.0, gt=0, description="frames per second per connection")
    rate_burst: int = Field(200, ge=1, description="frames a connection may send at once")
    max_bad_frames: int = Field(20, ge=1, description="consecutive bad frames before closing")
    write_timeout_s: float = Field(10.0, gt=0, description="a terminal that reads no replies")
    require_auth: bool = Field(True, description="positions only after 0x0102 authentication")
    auth_secret: str | None = Field(
        None,
        description="HMAC key for auth codes; None = random per process",
    )
    lenient_terminals: tuple[str, ...] = Field(
        (), description="phones whose quirks are accepted (bad checksum, raw 0x7D, ...)"
    )

    def is_lenient(self, phone: str) -> bool:
        """Whether ``phone`` is listed in ``lenient_terminals`` (leading zeros ignored)."""
        return phone.lstrip("0") in self._lenient

    @property
    def _lenient(self) -> frozenset[str]:
        return frozenset(p.lstrip("0") for p in self.lenient_terminals)

    @property
    def idle_timeout_s(self) -> float:
        return 3 * self.heartbeat_s
