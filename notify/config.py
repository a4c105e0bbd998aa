"""Typed configuration of alarm notifications (``[notify]``, ``[[notify.channels]]``,
``[[notify.routes]]``).

A *channel* is one place a message can go (a webhook, a WeCom or DingTalk group
robot, a list of e-mail addresses). A *route* says which alarms go to which
channels: by organisation subtree, kind and severity, with quiet hours, a storm
threshold and an escalation route for alarms nobody acknowledged in time.
Local times (``quiet_hours``) are in the fleet's time zone (``[service] timezone``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from notify.message import ORDER_KIND_NAMES
from rules.events import KINDS

__all__ = [
    "SEVERITIES",
    "ChannelConfig",
    "DingTalkChannel",
    "EmailChannel",
    "NotifyConfig",
    "RouteConfig",
    "SmsChannel",
    "WeComChannel",
    "WebhookChannel",
]

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):([0-5]\d)|24:00)$")
_NAME = r"^[A-Za-z0-9_.-]{1,48}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookChannel(_Frozen):
    """Another system: a JSON POST signed with HMAC-SHA256 (see ``notify.channels``)."""

    type: Literal["webhook"]
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key shared with the receiver")
    timeout_s: float = Field(10.0, gt=0, le=120)


class WeComChannel(_Frozen):
    """A WeCom (企业微信) group robot: the robot's webhook address, ``...send?key=...``."""

    type: Literal["wecom"]
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(10.0, gt=0, le=120)


class DingTalkChannel(_Frozen):
    """A DingTalk (钉钉) group robot: ``...robot/send?access_token=...`` and its 加签 secret."""

    type: Literal["dingtalk"]
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = Field(None, description="the robot's signing secret, SEC...")
    at_mobiles: list[str] = Field(default_factory=list)
    at_all: bool = False
    timeout_s: float = Field(10.0, gt=0, le=120)


class EmailChannel(_Frozen):
    """E-mail over SMTP (STARTTLS or implicit TLS when the server offers it)."""

    type: Literal["email"]
    name: str = Field(pattern=_NAME)
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(min_length=3, description="From: address")
    to: list[str] = Field(min_length=1)
    timeout_s: float = Field(30.0, gt=0, le=300)


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What notify.sms.placeholder_values fills in (kept here so the config is checked at load).
SMS_PLACEHOLDERS = frozenset(
    {
        "text",
        "plate",
        "kind",
        "org",
        "time",
        "severity",
        "alarm_id",
        "link",
        "phones",
        "phones_json",
        "phones_e164_json",
        "key",
        "timestamp",
        "nonce",
    }
)


class SmsChannel(_Frozen):
    """SMS through a provider's HTTP API: a request template with ``${placeholders}`` and a
    signature scheme (Aliyun and Tencent Cloud documented in the README; see ``notify.sms``)."""

    type: Literal["sms"]
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://", description="the provider's endpoint")
    method: Literal["GET", "POST"] = "POST"
    query: dict[str, str] = Field(default_factory=dict, description="query parameters")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, description="request body template")
    body_format: Literal["json", "form", "text"] = "json"
    phones: list[str] = Field(min_length=1, max_length=100, description="who gets the SMS")
    signature: Literal["none", "hmac_sha256", "aliyun_rpc", "tencent_tc3"] = "none"
    access_key_id: str | None = Field(None, description="Aliyun AccessKeyId / Tencent SecretId")
    access_key_secret: SecretStr | None = Field(
        None, description="Aliyun AccessKeySecret / Tencent SecretKey / the HMAC key"
    )
    success_field: str = Field(
        "", description='dotted path in the JSON answer, e.g. "Code"; empty: HTTP status only'
    )
    success_values: list[str] = Field(default_factory=lambda: ["OK"])
    max_chars: int = Field(70, ge=10, le=500, description="${text} is cut to this many characters")
    timeout_s: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _check(self) -> SmsChannel:
        for where, text in [
            ("url", self.url),
            ("body", self.body or ""),
            *((f"query.{k}", v) for k, v in self.query.items()),
            *((f"headers.{k}", v) for k, v in self.headers.items()),
        ]:
            for name in _PLACEHOLDER.findall(text):
                if name not in SMS_PLACEHOLDERS:
                    raise ValueError(
                        f"{where}: unknown placeholder ${{{name}}}; "
                        f"known: {', '.join(sorted(SMS_PLACEHOLDERS))}"
                    )
        if self.signature in ("aliyun_rpc", "tencent_tc3") and not (
            self.access_key_id and self.access_key_secret
        ):
            raise ValueError(
                f"signature {self.signature} needs access_key_id and access_key_secret"
            )
        if self.signature == "hmac_sha256" and self.access_key_secret is None:
            raise ValueError("signature hmac_sha256 needs access_key_secret (the HMAC key)")
        return self


ChannelConfig = Annotated[
    WebhookChannel | WeComChannel | DingTalkChannel | EmailChannel | SmsChannel,
    Field(discriminator="type"),
]


class RouteConfig(_Frozen):
    """Which alarms go to which channels. Empty ``orgs``/``kinds`` mean all."""

    name: str = Field(pattern=_NAME)
    channels: list[str] = Field(min_length=1)
    orgs: list[str] = Field(
        default_factory=list, description="organisation ids; each includes its subtree"
    )
    kinds: list[str] = Field(default_factory=list)
    min_severity: Literal["info", "warning", "critical"] = "info"
    on_close: bool = Field(True, description="also send a message when the episode closes")
    escalation_only: bool = Field(
        False, description="receives nothing directly, only escalations from other routes"
    )
    quiet_hours: str | None = Field(None, description='local "HH:MM-HH:MM", may cross midnight')
    quiet_action: Literal["defer", "drop"] = Field(
        "defer", description="defer: send when quiet hours end; drop: do not send"
    )
    quiet_bypass_severity: Literal["warning", "critical"] | None = Field(
        "critical", description="alarms at least this severe ignore quiet hours"
    )
    storm_per_minute: int = Field(
        10, ge=1, description="more messages than this in a minute are sent as one digest"
    )
    escalate_to: str | None = Field(None, description="route for alarms not acknowledged in time")
    escalate_after_s: int = Field(600, ge=10, description="JT/T 796: handle within 10 minutes")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str]) -> list[str]:
        for k in v:
            if k not in KINDS and k not in ORDER_KIND_NAMES:
                raise ValueError(f"unknown alarm kind {k!r}; use one of {', '.join(KINDS)}")
        return v

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and (not _WINDOW.match(v) or v.split("-")[0] == v.split("-")[1]):
            raise ValueError(f'quiet_hours {v!r} must look like "22:00-07:00"')
        return v


class NotifyConfig(_Frozen):
    """The outbox, its delivery worker, channels and routes."""

    enabled: bool = False
    channels: list[ChannelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    max_attempts: int = Field(8, ge=1, le=100, description="then the message is a dead letter")
    backoff_initial_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(900.0, gt=0)
    lease_s: float = Field(
        120.0, gt=0, description="a claimed message not finished by then is delivered again"
    )
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    claim_batch: int = Field(100, ge=1, le=10_000)
    concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight at once")
    digest_max_items: int = Field(20, ge=1, le=200, description="alarms listed in one digest")
    keep_sent_days: int = Field(30, ge=1, description="delivered messages kept this long")

    @model_validator(mode="after")
    def _references(self) -> NotifyConfig:
        names = [c.name for c in self.channels]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate channel name(s) {sorted(dup)}")
        routes = [r.name for r in self.routes]
        dup = {n for n in routes if routes.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate route name(s) {sorted(dup)}")
        for r in self.routes:
            for c in r.channels:
                if c not in names:
                    raise ValueError(f"route {r.name!r} names unknown channel {c!r}")
            if r.escalate_to is not None:
                if r.escalate_to not in routes:
                    raise ValueError(
                        f"route {r.name!r} escalates to unknown route {r.escalate_to!r}"
                    )
                if r.escalate_to == r.name:
                    raise ValueError(f"route {r.name!r} escalates to itself")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def channel(self, name: str) -> ChannelConfig:
        for c in self.channels:
            if c.name == name:
                return c
        raise KeyError(name)

    def route(self, name: str) -> RouteConfig:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)
