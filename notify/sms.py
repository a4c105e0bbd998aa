"""The SMS channel: a provider's HTTP API described by a template, signed by a named scheme.

Pure, like :mod:`notify.channels`: :func:`sms_request` turns a channel's template and
one message into an :class:`~notify.channels.HttpRequest`; ``notify.http`` sends it
and :func:`~notify.channels.check_http_response` judges the answer (HTTP status, then
``success_field`` of the JSON answer must be one of ``success_values``).

Placeholders, written ``${name}`` in ``url``, ``query``, ``headers`` and ``body``:

==================  ============================================================
``text``            the message (``【报警】超速 川X12345（武胜县）14:03``), cut to ``max_chars``
``plate kind org``  plate, alarm kind name (超速…), organisation name
``time``            local start time ``HH:MM``; ``severity``: 严重 / 警告 / 提示
``alarm_id link``   the alarm's id and its address on the page
``phones``          the numbers, comma-separated; ``phones_json``: a JSON array of
                    them; ``phones_e164_json``: the same with ``+86`` in front
``key``             the outbox idempotency key (the same on every redelivery)
``timestamp``       unix seconds now; ``nonce``: a fresh random hex string
==================  ============================================================

In a JSON ``body``, and in a query value that starts with ``{`` or ``[`` (Aliyun's
``TemplateParam``), every value is inserted JSON-escaped (without quotes), so
``"${plate}"`` stays valid JSON for any plate; ``*_json`` values are inserted as
JSON. ``body_format = "form"`` sends ``body`` as given (URL-encode it yourself).

Signature schemes (``signature``):

- ``none``.
- ``hmac_sha256``: ``X-FleetWatch-Timestamp`` and ``X-FleetWatch-Signature:
  sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>`` (as the webhook).
- ``aliyun_rpc``: Alibaba Cloud SMS (dysmsapi ``SendSms``, RPC style, signature
  version 1.0): the common parameters ``AccessKeyId, Format=JSON,
  SignatureMethod=HMAC-SHA1, SignatureNonce, SignatureVersion=1.0, Timestamp``
  (ISO 8601 UTC) join ``query``; the string to sign is ``METHOD&%2F&`` + the
  percent-encoded, sorted, RFC 3986 percent-encoded query; ``Signature`` is
  base64(HMAC-SHA1(secret + "&", it)).
- ``tencent_tc3``: Tencent Cloud API 3.0 (``TC3-HMAC-SHA256``): canonical request
  ``METHOD\\n/\\n<query>\\ncontent-type:…\\nhost:…\\n\\ncontent-type;host\\n<sha256 of
  body>``; string to sign ``TC3-HMAC-SHA256\\n<ts>\\n<date>/<service>/tc3_request\\n
  <sha256 of the canonical request>``; the key is HMAC-SHA256 chained over
  ``"TC3" + secret`` → date → service → ``tc3_request``; sent as ``Authorization``
  with ``X-TC-Timestamp`` (the service is the first label of the host: ``sms``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

from notify.channels import HttpRequest, sign_webhook
from notify.config import SMS_PLACEHOLDERS, SmsChannel
from notify.message import SEVERITY_NAMES, Notice

__all__ = [
    "PLACEHOLDERS",
    "aliyun_signature",
    "placeholder_values",
    "sms_request",
    "sms_text",
    "tencent_authorization",
]

PLACEHOLDERS = SMS_PLACEHOLDERS


def sms_text(notices: Sequence[Notice], max_chars: int) -> str:
    """The message: one alarm in a line, or a count and the first plates for a digest."""
    if len(notices) == 1:
        n = notices[0]
        head = {"open": "报警", "close": "解除", "escalate": "升级", "order": "派车单"}.get(
            n.purpose, "报警"
        )
        text = (
            f"【{head}】{n.kind_name} {n.plate}（{n.org_name}）{n.local_time(n.started_at)[11:16]}"
        )
    else:
        plates = "、".join(dict.fromkeys(n.plate for n in notices))
        text = f"【报警汇总】{len(notices)} 条：{plates}"
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def placeholder_values(
    ch: SmsChannel, notices: Sequence[Notice], key: str, now_ms: int, nonce: str
) -> dict[str, str]:
    n = notices[0]
    phones = list(ch.phones)
    return {
        "text": sms_text(notices, ch.max_chars),
        "plate": n.plate,
        "kind": n.kind_name,
        "org": n.org_name,
        "time": n.local_time(n.started_at)[11:16],
        "severity": SEVERITY_NAMES.get(n.severity, n.severity),
        "alarm_id": n.alarm_id,
        "link": n.link,
        "phones": ",".join(phones),
        "phones_json": json.dumps(phones),
        "phones_e164_json": json.dumps([p if p.startswith("+") else f"+86{p}" for p in phones]),
        "key": key,
        "timestamp": str(now_ms // 1000),
        "nonce": nonce,
    }


def _fill(template: str, values: Mapping[str, str], *, json_escape: bool) -> str:
    if json_escape:
        values = {
            k: (v if k.endswith("_json") else json.dumps(v, ensure_ascii=False)[1:-1])
            for k, v in values.items()
        }
    return string.Template(template).substitute(values)


def _rfc3986(s: str) -> str:
    return quote(s, safe="-_.~")


def aliyun_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Alibaba Cloud RPC signature v1.0 of ``params`` (without ``Signature``)."""
    canonical = "&".join(f"{_rfc3986(k)}={_rfc3986(params[k])}" for k in sorted(params))
    to_sign = f"{method.upper()}&{_rfc3986('/')}&{_rfc3986(canonical)}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def tencent_authorization(
    secret_id: str,
    secret_key: str,
    *,
    method: str,
    host: str,
    query: str,
    content_type: str,
    body: bytes,
    timestamp: int,
) -> str:
    """The ``Authorization`` header of Tencent Cloud API 3.0 (TC3-HMAC-SHA256)."""
    service = host.split(".", 1)[0]
    date = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")
    signed = "content-type;host"
    canonical = "\n".join(
        [
            method.upper(),
            "/",
            query,
            f"content-type:{content_type}\nhost:{host}\n",
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )

    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = h(h(h(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


def sms_request(
    ch: SmsChannel,
    notices: Sequence[Notice],
    key: str,
    now_ms: int,
    *,
    nonce: str | None = None,
) -> HttpRequest:
    """The provider request for one message (or digest) of the outbox row ``key``."""
    values = placeholder_values(ch, notices, key, now_ms, nonce or secrets.token_hex(16))
    url = _fill(ch.url, values, json_escape=False)
    query = {
        k: _fill(v, values, json_escape=v.lstrip().startswith(("{", "[")))
        for k, v in ch.query.items()
    }
    headers = {k: _fill(v, values, json_escape=False) for k, v in ch.headers.items()}
    headers.setdefault("Idempotency-Key", key)
    body = b""
    if ch.body is not None:
        body = _fill(ch.body, values, json_escape=ch.body_format == "json").encode()
        headers.setdefault(
            "Content-Type",
            {
                "json": "application/json; charset=utf-8",
                "form": "application/x-www-form-urlencoded",
                "text": "text/plain; charset=utf-8",
            }[ch.body_format],
        )
    key_id = ch.access_key_id or ""
    secret = ch.access_key_secret.get_secret_value() if ch.access_key_secret else ""
    ts = now_ms // 1000
    if ch.signature == "hmac_sha256":
        headers["X-FleetWatch-Timestamp"] = str(ts)
        headers["X-FleetWatch-Signature"] = sign_webhook(secret.encode(), str(ts), body)
    elif ch.signature == "aliyun_rpc":
        query.update(
            AccessKeyId=key_id,
            Format="JSON",
            SignatureMethod="HMAC-SHA1",
            SignatureNonce=values["nonce"],
            SignatureVersion="1.0",
            Timestamp=dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        query["Signature"] = aliyun_signature(secret, ch.method, query)
    qs = urlencode(sorted(query.items()), quote_via=quote, safe="-_.~") if query else ""
    if ch.signature == "tencent_tc3":
        host = urlsplit(url).hostname or ""
        content_type = headers.get("Content-Type", "application/json; charset=utf-8")
        headers["Content-Type"] = content_type
        headers["Host"] = host
        headers["X-TC-Timestamp"] = str(ts)
        headers["Authorization"] = tencent_authorization(
            key_id,
            secret,
            method=ch.method,
            host=host,
            query=qs,
            content_type=content_type,
            body=body,
            timestamp=ts,
        )
    if qs:
        url = f"{url}{'&' if '?' in url else '?'}{qs}"
    return HttpRequest(
        url,
        body,
        ch.timeout_s,
        ch.name,
        "json_field" if ch.success_field else "status",
        headers,
        method=ch.method,
        success_field=ch.success_field,
        success_values=tuple(ch.success_values),
    )
