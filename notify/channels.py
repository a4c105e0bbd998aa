"""The four channels as pure functions: what to send, how it is signed, what counts as success.

No I/O here: each builder returns an :class:`HttpRequest` or an
:class:`~email.message.EmailMessage`; ``notify.http`` and ``notify.smtp`` send
them. Every request carries the idempotency key of its outbox row (or digest)
so a receiver can drop a redelivery.

Generic webhook — ``POST`` JSON, headers::

    Idempotency-Key:          fw-…            (same on every redelivery)
    X-FleetWatch-Timestamp:   1764034200      (unix seconds)
    X-FleetWatch-Signature:   sha256=<hex>    HMAC-SHA256(secret, timestamp + "." + body)

WeCom group robot — ``POST {"msgtype": "markdown", "markdown": {"content": …}}`` to
the robot address; success is HTTP 200 with ``errcode`` 0.

DingTalk group robot — ``POST {"msgtype": "markdown", "markdown": {"title", "text"}}``
to the robot address plus ``&timestamp=<ms>&sign=<s>`` where ``s`` is the
URL-encoded base64 of HMAC-SHA256(secret, ``"{timestamp}\\n{secret}"``); success
is HTTP 200 with ``errcode`` 0.

E-mail — a UTF-8 text message whose ``Message-ID`` is derived from the
idempotency key (mail systems drop a second copy with the same id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import quote_plus

import orjson

from fleetwatch.errors import ServiceUnavailable
from notify.config import DingTalkChannel, EmailChannel, WebhookChannel, WeComChannel
from notify.message import Notice

__all__ = [
    "DeliveryFailed",
    "HttpRequest",
    "check_http_response",
    "dingtalk_request",
    "dingtalk_sign",
    "email_message",
    "sign_webhook",
    "verify_dingtalk",
    "verify_webhook",
    "webhook_body",
    "webhook_request",
    "wecom_request",
]

# WeCom robots reject markdown content over 4096 bytes (UTF-8); DingTalk allows about 20,000.
WECOM_MAX_BYTES = 4096


class DeliveryFailed(ServiceUnavailable):
    """The far end did not take the message. ``permanent``: retrying cannot help."""

    def __init__(self, channel: str, detail: str, *, permanent: bool = False) -> None:
        super().__init__(channel, detail)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    body: bytes
    timeout_s: float
    channel: str  # the channel name, for errors
    expect: Literal["status", "errcode", "json_field"] = "status"
    headers: Mapping[str, str] = field(default_factory=dict)
    method: Literal["GET", "POST"] = "POST"
    # expect "json_field": the answer's JSON at this dotted path (list items by index,
    # e.g. "Response.SendStatusSet.0.Code") must be one of success_values
    success_field: str = ""
    success_values: tuple[str, ...] = ()


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver checks: the signature, and a timestamp close to its clock (replays)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), signature)


def webhook_body(key: str, notices: Sequence[Notice], text: str, digest: bool) -> bytes:
    """The JSON the webhook receives; byte-identical for every redelivery of one key."""
    event = "alarm.digest" if digest else f"alarm.{notices[0].purpose}"
    if not digest and notices[0].purpose == "order":  # order.pending, order.approved, …
        event = "order." + notices[0].kind.removeprefix("order_")
    doc: dict[str, Any] = {
        "event": event,
        "idempotency_key": key,
        "alarms": [n.to_json() for n in notices],
        "text": text,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def webhook_request(ch: WebhookChannel, body: bytes, key: str, now_ms: int) -> HttpRequest:
    ts = str(now_ms // 1000)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Idempotency-Key": key,
        "X-FleetWatch-Timestamp": ts,
    }
    if ch.secret is not None:
        secret = ch.secret.get_secret_value().encode()
        headers["X-FleetWatch-Signature"] = sign_webhook(secret, ts, body)
    return HttpRequest(ch.url, body, ch.timeout_s, ch.name, "status", headers)


def _clip_utf8(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 6].decode(errors="ignore") + "\n……"


def wecom_request(ch: WeComChannel, markdown: str, key: str) -> HttpRequest:
    doc: dict[str, Any] = {
        "msgtype": "markdown",
        "markdown": {"content": _clip_utf8(markdown, WECOM_MAX_BYTES)},
    }
    body = orjson.dumps(doc)
    headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": key}
    return HttpRequest(ch.url, body, ch.timeout_s, ch.name, "errcode", headers)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query parameter of a DingTalk robot with 加签 (already URL-encoded)."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    mac = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(mac).decode())


def verify_dingtalk(
    secret: str, timestamp_ms: int, sign: str, now_ms: int, tolerance_ms: int = 3_600_000
) -> bool:
    """The robot's check: ``sign`` is the *decoded* query value; within an hour of its clock."""
    if abs(now_ms - timestamp_ms) > tolerance_ms:
        return False
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), sign)


def dingtalk_request(
    ch: DingTalkChannel, title: str, markdown: str, key: str, now_ms: int
) -> HttpRequest:
    url = ch.url
    if ch.secret is not None:
        sep = "&" if "?" in url else "?"
        sign = dingtalk_sign(ch.secret.get_secret_value(), now_ms)
        url = f"{url}{sep}timestamp={now_ms}&sign={sign}"
    text = markdown
    mobiles = list(ch.at_mobiles)
    if mobiles:
        # DingTalk only notifies the people @-ed in the text itself.
        text += "\n\n" + " ".join(f"@{m}" for m in mobiles)
    doc = {
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": ch.at_all},
    }
    body = orjson.dumps(doc)
    headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": key}
    return HttpRequest(url, body, ch.timeout_s, ch.name, "errcode", headers)


def email_message(ch: EmailChannel, subject: str, text: str, key: str, now_ms: int) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = ch.sender
    msg["To"] = ", ".join(ch.to)
    msg["Date"] = formatdate(now_ms / 1000, localtime=False)
    domain = ch.sender.rpartition("@")[2] or "fleetwatch.invalid"
    msg["Message-ID"] = f"<{key}@{domain}>"
    msg["X-FleetWatch-Idempotency-Key"] = key
    msg.set_content(text, charset="utf-8")
    return msg


# Client errors that a retry may fix: timeout, conflict (in flight elsewhere), too early,
# rate limited. Every other 4xx means the request or the configuration is wrong.
_RETRYABLE_4XX = {408, 409, 425, 429}
# WeCom/DingTalk errcodes that mean "slow down" (robot limit: 20 messages a minute).
_ROBOT_THROTTLED = {45009, 130101, 410100}


def check_http_response(req: HttpRequest, status: int, body: bytes) -> None:
    """Raise :class:`DeliveryFailed` unless the far end took the message."""
    snippet = body[:200].decode(errors="replace")
    if status >= 300:
        permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
        raise DeliveryFailed(req.channel, f"HTTP {status}: {snippet}", permanent=permanent)
    if req.expect == "json_field":
        try:
            value: Any = orjson.loads(body)
            for part in req.success_field.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            raise DeliveryFailed(
                req.channel, f"no {req.success_field} in the answer: {snippet}"
            ) from None
        if str(value) not in req.success_values:
            raise DeliveryFailed(req.channel, f"{req.success_field} = {value}: {snippet}")
        return
    if req.expect == "errcode":
        try:
            doc = orjson.loads(body)
            code = int(doc.get("errcode", -1))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise DeliveryFailed(req.channel, f"not a robot answer: {snippet}") from None
        if code != 0:
            # A robot error other than throttling (bad key, bad signature, keyword filter)
            # still goes through the retries: an operator may fix the robot meanwhile.
            what = "throttled" if code in _ROBOT_THROTTLED else "robot error"
            raise DeliveryFailed(req.channel, f"{what} errcode {code}: {snippet}")
