"""Request builders and signatures, checked against independent computations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from fleet.registry import Registry
from notify.channels import (
    DeliveryFailed,
    HttpRequest,
    check_http_response,
    dingtalk_request,
    dingtalk_sign,
    email_message,
    verify_dingtalk,
    verify_webhook,
    webhook_body,
    webhook_request,
    wecom_request,
)
from notify.config import DingTalkChannel, EmailChannel, NotifyConfig, WebhookChannel, WeComChannel
from notify.message import notice_markdown
from notify.routing import Router
from tests.notify.conftest import event


def test_webhook_signature_verifies_with_the_receiver_secret(registry: Registry) -> None:
    ch = WebhookChannel(type="webhook", name="h", url="http://127.0.0.1/x", secret="s3cret")
    n = Router(NotifyConfig(), registry).notice(event(registry, 0), "open", "duty")
    body = webhook_body("fw-abc", [n], notice_markdown(n), digest=False)
    req = webhook_request(ch, body, "fw-abc", 1764034200123)
    h = req.headers
    assert h["Idempotency-Key"] == "fw-abc" and h["X-FleetWatch-Timestamp"] == "1764034200"
    expect = hmac.new(b"s3cret", b"1764034200." + body, hashlib.sha256).hexdigest()
    assert h["X-FleetWatch-Signature"] == "sha256=" + expect
    assert verify_webhook(b"s3cret", "1764034200", body, h["X-FleetWatch-Signature"], 1764034260)
    assert not verify_webhook(b"wrong", "1764034200", body, h["X-FleetWatch-Signature"], 1764034260)
    assert not verify_webhook(
        b"s3cret", "1764034200", body + b" ", h["X-FleetWatch-Signature"], 1764034260
    )
    assert not verify_webhook(  # replayed long after
        b"s3cret", "1764034200", body, h["X-FleetWatch-Signature"], 1764034200 + 3600
    )
    doc = orjson.loads(body)
    assert doc["event"] == "alarm.open" and doc["alarms"][0]["plate"] == "川X00000"


def test_dingtalk_signed_url() -> None:
    secret = "SECabc"
    ts = 1764034200000
    mac = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    expect = base64.b64encode(mac).decode()
    ch = DingTalkChannel(
        type="dingtalk",
        name="d",
        url="https://oapi.dingtalk.com/robot/send?access_token=T0KEN",
        secret=secret,
        at_mobiles=["13800000000"],
    )
    req = dingtalk_request(ch, "标题", "### 报警", "fw-k", ts)
    q = parse_qs(urlsplit(req.url).query)  # decodes the URL-encoded sign
    assert q["access_token"] == ["T0KEN"] and q["timestamp"] == [str(ts)]
    assert q["sign"] == [expect]
    assert verify_dingtalk(secret, ts, q["sign"][0], ts + 1000)
    assert not verify_dingtalk("SECother", ts, q["sign"][0], ts + 1000)
    assert "%" in dingtalk_sign(secret, ts) or "+" not in expect  # URL-encoded form
    doc = orjson.loads(req.body)
    assert doc["msgtype"] == "markdown" and doc["markdown"]["title"] == "标题"
    assert doc["at"]["atMobiles"] == ["13800000000"] and "@13800000000" in doc["markdown"]["text"]


def test_wecom_markdown_is_clipped_to_4096_bytes() -> None:
    ch = WeComChannel(type="wecom", name="w", url="https://qyapi.weixin.qq.com/x?key=K")
    req = wecom_request(ch, "超" * 3000, "fw-k")
    doc = orjson.loads(req.body)
    assert doc["msgtype"] == "markdown"
    assert len(doc["markdown"]["content"].encode()) <= 4096


def test_email_message_id_from_the_key() -> None:
    ch = EmailChannel(type="email", name="m", sender="fw@gov.example.cn", to=["a@x.cn", "b@x.cn"])
    msg = email_message(ch, "【报警】超速", "正文", "fw-0123", int(time.time() * 1000))
    assert msg["Message-ID"] == "<fw-0123@gov.example.cn>"
    assert msg["To"] == "a@x.cn, b@x.cn" and msg["Subject"] == "【报警】超速"


@pytest.mark.parametrize(
    ("status", "body", "expect", "permanent"),
    [
        (200, b"", "status", None),
        (204, b"", "status", None),
        (503, b"busy", "status", False),
        (429, b"", "status", False),
        (400, b"bad", "status", True),
        (401, b"", "status", True),
        (200, b'{"errcode":0,"errmsg":"ok"}', "errcode", None),
        (200, b'{"errcode":45009,"errmsg":"api freq out of limit"}', "errcode", False),
        (200, b'{"errcode":310000,"errmsg":"sign not match"}', "errcode", False),
        (200, b"<html>", "errcode", False),
    ],
)
def test_check_http_response(status: int, body: bytes, expect: str, permanent: bool | None) -> None:
    req = HttpRequest("http://x", b"", 1.0, "c", expect)  # type: ignore[arg-type]
    if permanent is None:
        check_http_response(req, status, body)
    else:
        with pytest.raises(DeliveryFailed) as ei:
            check_http_response(req, status, body)
        assert ei.value.permanent is permanent
