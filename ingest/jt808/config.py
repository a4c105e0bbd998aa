"""Typed configuration of the JT/T 808 gateway (``[gateway]`` table)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MIN_SECRET_CHARS", "CommandsConfig", "GatewayConfig", "gateway_problems"]

# An HMAC key shorter than this is guessable from a few auth codes offline.
MIN_SECRET_CHARS = 16


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
    heartbeat_s: float = Field(
        60.0, gt=0, description="terminal heartbeat interval; closed after 3x without a frame"
    )
    first_frame_timeout_s: float = Field(
        30.0, gt=0, description="a connection with no accepted frame this long is closed"
    )
    max_frame_bytes: int = Field(4096, ge=64, le=1 << 20, description="escaped, with delimiters")
    max_junk_bytes: int = Field(
        4096, ge=0, description="bytes outside any frame (no 0x7E) before closing"
    )
    max_connections: int = Field(20_000, ge=1)
    rate_per_s: float = Field(50.0, gt=0, description="frames per second per connection")
    rate_burst: int = Field(200, ge=1, description="frames a connection may send at once")
    max_bad_frames: int = Field(
        20, ge=1, description="consecutive bad or refused frames before closing"
    )
    write_timeout_s: float = Field(10.0, gt=0, description="a terminal that reads no replies")
    split_max_pending: int = Field(
        16, ge=1, le=4096, description="unfinished split messages per connection"
    )
    split_max_bytes: int = Field(
        256 * 1024, ge=4096, description="bytes of unfinished split messages per connection"
    )
    split_max_age_s: float = Field(
        60.0, gt=0, description="an unfinished split message older than this is dropped"
    )
    require_auth: bool = Field(True, description="positions only after 0x0102 authentication")
    auth_secret: str | None = Field(
        None,
        min_length=MIN_SECRET_CHARS,
        description="HMAC key for auth codes, the same on every gateway node; "
        "required by `fleetwatch gateway` (None = random per process: tests, demo)",
    )
    registrations: str = Field(
        "sqlite:var/gateway/registrations.sqlite3",
        description="where registered terminals are kept: sqlite:PATH (one host) "
        "or redis://HOST:PORT/DB (several gateway nodes)",
    )
    registrations_prefix: str = Field(
        "fleetwatch:gateway:", min_length=1, description="Redis key prefix of registrations"
    )
    registration_match: tuple[Literal["plate", "vin", "maker"], ...] = Field(
        (),
        description="what a 0x0100 must carry as provisioned, besides a known phone: "
        "plate, vin (plate colour 0), maker (manufacturer id)",
    )
    command_reply_timeout_s: float = Field(
        10.0,
        gt=0,
        description="downlink: how long the first transmission of a command waits for its "
        "reply (JT/T 808-2019 table 12, parameter 0x0002)",
    )
    command_retransmissions: int = Field(
        2,
        ge=0,
        le=10,
        description="downlink: retransmissions before a command times out; the n-th waits "
        "T(n) = T(n-1) x (n+1) (JT/T 808-2019 §7.5.1, parameter 0x0003)",
    )
    command_queue_per_terminal: int = Field(
        32, ge=1, le=10_000, description="downlink: commands kept for one offline terminal"
    )
    command_queue_total: int = Field(
        20_000, ge=1, description="downlink: commands kept for offline terminals on one node"
    )
    metrics_host: str = Field("127.0.0.1", description="where the gateway serves /metrics")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port of the gateway's Prometheus /metrics (its GatewayStats counters); "
        "none: not served",
    )
    lenient_terminals: tuple[str, ...] = Field(
        (), description="phones whose quirks are accepted (bad checksum, raw 0x7D, ...)"
    )

    @field_validator("registrations")
    @classmethod
    def _known_store(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "redis://", "rediss://", "unix://")):
            raise ValueError(f"registrations must be sqlite:PATH or redis://..., got {v!r}")
        if v.startswith("sqlite:") and not v.removeprefix("sqlite:").lstrip("/"):
            raise ValueError("registrations = sqlite:PATH needs a path")
        return v

    def is_lenient(self, phone: str) -> bool:
        """Whether ``phone`` is listed in ``lenient_terminals`` (leading zeros ignored)."""
        return phone.lstrip("0") in self._lenient

    @property
    def _lenient(self) -> frozenset[str]:
        return frozenset(p.lstrip("0") for p in self.lenient_terminals)

    @property
    def idle_timeout_s(self) -> float:
        return 3 * self.heartbeat_s


class CommandsConfig(BaseModel):
    """Commands to terminals from the web API (``[commands]``): limits and what is allowed.

    Commands travel over the broker of ``[mqtt]`` on ``{gateway.topic_prefix}/{phone}/down``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="operators may send commands to terminals")
    default_expiry_s: int = Field(
        600, ge=10, description="a command not delivered within this long expires"
    )
    max_expiry_s: int = Field(86_400, ge=10, description="the longest expiry a request may ask")
    max_open_per_vehicle: int = Field(
        20, ge=1, le=1000, description="commands not yet done per vehicle; more answer 429"
    )
    text_max_chars: int = Field(200, ge=1, le=512, description="longest text (0x8300)")
    allow_cut: bool = Field(
        False,
        description="allow cutting and restoring oil/power (a vendor 0x8105 command word); "
        "each needs a second operator's confirmation",
    )
    cut_command_word: int = Field(
        0x64, ge=0, le=255, description="the terminal vendor's 0x8105 word to cut oil/power"
    )
    restore_command_word: int = Field(
        0x65, ge=0, le=255, description="the terminal vendor's 0x8105 word to restore oil/power"
    )
    confirm_on_ack: bool = Field(
        False,
        description="acknowledging a terminal alarm also sends the manual alarm "
        "confirmation 0x8203 (clears the latched SOS)",
    )
    expire_sweep_s: float = Field(
        5.0, gt=0, le=3600, description="how often commands past their expiry are marked"
    )
    republish_s: float = Field(
        30.0,
        ge=0,
        description="a command still queued this long after it was published is published "
        "again (a gateway that was restarting missed it; gateways drop repeats); 0: never",
    )


def gateway_problems(cfg: GatewayConfig) -> list[str]:
    """What ``fleetwatch check-config`` reports as errors for a production gateway."""
    out: list[str] = []
    if cfg.require_auth and cfg.auth_secret is None:
        out.append(
            "gateway.auth_secret: 未设置；网关重启后终端鉴权码失效 / not set: auth codes would not "
            "survive a gateway restart and differ between nodes — fix: set a random string of "
            f"at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`), "
            "the same on every gateway node"
        )
    return out
