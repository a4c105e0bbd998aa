"""The SMS channel: templates, the Aliyun and Tencent Cloud signatures checked by an independent
verifier (written from the providers' documents), and delivery through the outbox to a local
receiver that fails and stalls."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.registry import Registry
from notify.config import NotifyConfig, SmsChannel
from notify.message import Notice
from notify.routing import Router
from notify.sms import sms_request, sms_text
from notify.worker import Notifier, ThreadedSQLiteOutbox
from tests.notify.conftest import event, sqlite_db, write_alarms_sqlite

KEY_ID, SECRET = "LTAI-test-id", "test-secret-value"

ALIYUN = {
    "type": "sms",
    "name": "aliyun",
    "url": "https://dysmsapi.aliyuncs.com/",
    "method": "GET",
    "query": {
        "Action": "SendSms",
        "Version": "2017-05-25",
        "RegionId": "cn-hangzhou",
        "PhoneNumbers": "${phones}",
        "SignName": "广安市机关事务管理局",
        "TemplateCode": "SMS_123456789",
        "TemplateParam": '{"plate":"${plate}","kind":"${kind}","time":"${time}"}',
    },
    "phones": ["13800000001", "13800000002"],
    "signature": "aliyun_rpc",
    "access_key_id": KEY_ID,
    "access_key_secret": SECRET,
    "success_field": "Code",
    "success_values": ["OK"],
}
TENCENT = {
    "type": "sms",
    "name": "tencent",
    "url": "https://sms.tencentcloudapi.com/",
    "method": "POST",
    "headers": {
        "X-TC-Action": "SendSms",
        "X-TC-Version": "2021-01-11",
        "X-TC-Region": "ap-guangzhou",
    },
    "body": '{"PhoneNumberSet": ${phones_e164_json}, "SmsSdkAppId": "1400000000",'
    ' "SignName": "广安公务用车", "TemplateId": "1234567",'
    ' "TemplateParamSet": ["${plate}", "${kind}"]}',
    "phones": ["13800000001"],
    "signature": "tencent_tc3",
    "access_key_id": "AKIDtest",
    "access_key_secret": SECRET,
    "success_field": "Response.SendStatusSet.0.Code",
    "success_values": ["Ok"],
}


def notice(plate: str = '川X"1<2>', **kw: Any) -> Notice:
    base: dict[str, Any] = {
        "alarm_id": "V1:speeding:1764034200000",
        "purpose": "open",
        "route": "duty",
        "kind": "speeding",
        "severity": "warning",
        "vehicle_id": "V1",
        "plate": plate,
        "org": "city",
        "org_name": "武胜县",
        "started_at": 1_764_050_580_000,  # 2025-11-25 14:03 +08:00
        "ts": 1_764_050_580_000,
        "lat": 30.4,
        "lon": 106.6,
        "tz": "Asia/Shanghai",
        "link": "http://fw.local/#alarm/V1:speeding:1764034200000",
    }
    return Notice(**{**base, **kw})


# -- independent verifiers (as the providers describe their checks) --------------------------


def aliyun_ok(method: str, query: dict[str, str], secret: str) -> bool:
    """Alibaba Cloud RPC signature v1: sort, RFC 3986-encode, ``GET&%2F&`` + encode, HMAC-SHA1."""
    params = {k: v for k, v in query.items() if k != "Signature"}

    def enc(s: str) -> str:
        # java.net.URLEncoder then "+"→%20, "*"→%2A, "%7E"→"~", as the document says
        return (
            urllib.parse.quote_plus(s, safe="")
            .replace("+", "%20")
            .replace("*", "%2A")
            .replace("%7E", "~")
        )

    canon = "&".join(f"{enc(k)}={enc(params[k])}" for k in sorted(params))
    sts = method + "&" + enc("/") + "&" + enc(canon)
    want = base64.b64encode(hmac.new((secret + "&").encode(), sts.encode(), "sha1").digest())
    return hmac.compare_digest(want.decode(), query.get("Signature", ""))


def tencent_ok(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """TC3-HMAC-SHA256 as Tencent Cloud's "Signature v3" page describes it."""
    auth = headers.get("authorization", "")
    ts = int(headers.get("x-tc-timestamp", "0"))
    if abs(time.time() - ts) > 300:
        return False
    day = time.strftime("%Y-%m-%d", time.gmtime(ts))
    host = headers.get("host", "").split(":")[0]
    ctype = headers.get("content-type", "")
    creq = (
        f"POST\n/\n\ncontent-type:{ctype}\nhost:{host}\n\ncontent-type;host\n"
        + hashlib.sha256(body).hexdigest()
    )
    scope = f"{day}/{host.split('.')[0]}/tc3_request"
    sts = f"TC3-HMAC-SHA256\n{ts}\n{scope}\n" + hashlib.sha256(creq.encode()).hexdigest()
    k = ("TC3" + secret).encode()
    for part in (day, host.split(".")[0], "tc3_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return auth.endswith(f"Signature={sig}") and f"Credential=AKIDtest/{scope}" in auth


# -- unit ---------------------------------------------------------------------------------------


def test_aliyun_request_is_signed_as_documented() -> None:
    ch = SmsChannel.model_validate(ALIYUN)
    now = int(time.time() * 1000)
    req = sms_request(ch, [notice()], "fw-1", now, nonce="n1")
    assert req.method == "GET" and req.body == b""
    parts = urllib.parse.urlsplit(req.url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert q["PhoneNumbers"] == "13800000001,13800000002"
    assert json.loads(q["TemplateParam"]) == {"plate": '川X"1<2>', "kind": "超速", "time": "14:03"}
    assert q["SignatureMethod"] == "HMAC-SHA1" and q["SignatureNonce"] == "n1"
    assert q["Timestamp"].endswith("Z") and q["AccessKeyId"] == KEY_ID
    assert aliyun_ok("GET", q, SECRET)
    assert not aliyun_ok("GET", {**q, "PhoneNumbers": "13900000000"}, SECRET)


def test_tencent_request_is_signed_as_documented() -> None:
    ch = SmsChannel.model_validate(TENCENT)
    req = sms_request(ch, [notice()], "fw-2", int(time.time() * 1000))
    doc = json.loads(req.body)
    assert doc["PhoneNumberSet"] == ["+8613800000001"]
    assert doc["TemplateParamSet"] == ['川X"1<2>', "超速"]  # JSON-escaped, still valid JSON
    h = {k.lower(): v for k, v in req.headers.items()}
    assert h["x-tc-action"] == "SendSms" and h["host"] == "sms.tencentcloudapi.com"
    assert tencent_ok(h, req.body, SECRET)
    assert not tencent_ok(h, req.body + b" ", SECRET)


def test_bad_templates_are_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        SmsChannel.model_validate({**ALIYUN, "query": {"To": "${phone}"}})
    with pytest.raises(ValidationError, match="needs access_key_id"):
        SmsChannel.model_validate({**TENCENT, "access_key_id": None})


def test_text_is_short_and_digest_lists_plates() -> None:
    assert sms_text([notice("川X10001")], 70) == "【报警】超速 川X10001（武胜县）14:03"
    assert len(sms_text([notice("川X" + "1" * 100)], 30)) == 30
    many = [notice("川X10001"), notice("川X10002"), notice("川X10001")]
    assert sms_text(many, 70) == "【报警汇总】3 条：川X10001、川X10002"


# -- through the outbox to a local provider that fails and stalls --------------------------


@dataclass
class Provider:
    """Answers like Aliyun (GET /aliyun) and Tencent (POST /tencent), failing on purpose."""

    url: str = ""
    p_fail: float = 0.0
    p_stall: float = 0.0
    always_fail: bool = False
    stall_s: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(3))
    hits: list[tuple[str, int, str]] = field(default_factory=list)  # path, status, key
    accepted: dict[str, int] = field(default_factory=dict)  # key → times accepted

    async def _outcome(self) -> str:
        r = self.rng.random()
        if self.always_fail or r < self.p_fail:
            return "fail"
        if r < self.p_fail + self.p_stall:
            await asyncio.sleep(self.stall_s)  # the client gave up meanwhile
            return "stall"
        return "ok"

    async def aliyun(self, request: Request) -> Response:
        q = dict(request.query_params)
        key = request.headers.get("idempotency-key", "")
        what = await self._outcome()
        if not aliyun_ok("GET", q, SECRET):
            self.hits.append(("/aliyun", 400, key))
            return JSONResponse({"Code": "SignatureDoesNotMatch"}, status_code=400)
        if what == "fail":
            self.hits.append(("/aliyun", 200, key))
            return JSONResponse({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发流控"})
        self.hits.append(("/aliyun", 200, key))
        self.accepted[key] = self.accepted.get(key, 0) + 1
        return JSONResponse({"Code": "OK", "Message": "OK", "BizId": "1"})

    async def tencent(self, request: Request) -> Response:
        body = await request.body()
        key = request.headers.get("idempotency-key", "")
        what = await self._outcome()
        if not tencent_ok(dict(request.headers), body, SECRET):
            self.hits.append(("/tencent", 200, key))
            return JSONResponse({"Response": {"Error": {"Code": "AuthFailure.SignatureFailure"}}})
        if what == "fail":
            self.hits.append(("/tencent", 503, key))
            return Response(status_code=503)
        self.hits.append(("/tencent", 200, key))
        self.accepted[key] = self.accepted.get(key, 0) + 1
        return JSONResponse({"Response": {"SendStatusSet": [{"Code": "Ok"}], "RequestId": "r"}})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    prov = Provider()
    app = Starlette(
        routes=[
            Route("/aliyun", prov.aliyun, methods=["GET"]),
            Route("/tencent", prov.tencent, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    prov.url = f"http://127.0.0.1:{port}"
    yield prov
    prov.p_stall = 0.0
    await asyncio.sleep(prov.stall_s + 0.2)
    server.should_exit = True
    await task
    sock.close()


def sms_config(prov: Provider, **extra: Any) -> NotifyConfig:
    # The receiver's host header is 127.0.0.1: Tencent's service name comes from it.
    return NotifyConfig.model_validate(
        {
            "enabled": True,
            "channels": [
                {**ALIYUN, "url": f"{prov.url}/aliyun", "timeout_s": 0.4},
                {**TENCENT, "url": f"{prov.url}/tencent", "timeout_s": 0.4},
            ],
            "routes": [{"name": "leaders", "channels": ["aliyun", "tencent"]}],
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.3,
            "poll_interval_s": 0.05,
            **extra,
        }
    )


async def until(cond: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sms_once_per_episode_through_failures_and_stalls(
    registry: Registry, tmp_path: Path, provider: Provider
) -> None:
    provider.p_fail, provider.p_stall = 0.3, 0.2
    cfg = sms_config(provider)
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    t0 = int(time.time() * 1000)
    evs = [event(registry, i, started_at=t0 + i) for i in range(4)]
    # an update of the same episode adds no message: once per episode
    evs.append(event(registry, 0, action="update", started_at=t0))
    assert write_alarms_sqlite(db, evs, Router(cfg, registry)) == 8
    n = Notifier(cfg, ThreadedSQLiteOutbox(path))
    task = asyncio.create_task(n.run())

    async def sent() -> bool:
        return (await n.counts()).get("sent", 0) == 8

    await until(sent)
    n.stop()
    await task
    assert len(provider.accepted) == 8  # each message accepted, under its own key
    # The failures and stalls really happened and were retried. A stalled request the
    # provider still carried out is sent again (at least once: SMS APIs keep no key).
    assert len(provider.hits) - sum(provider.accepted.values()) >= 1
    assert n.stats["failed"] >= 2


@pytest.mark.slow
async def test_sms_dead_letter_after_the_attempts(
    registry: Registry, tmp_path: Path, provider: Provider
) -> None:
    provider.always_fail = True
    cfg = sms_config(provider, max_attempts=3)
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    write_alarms_sqlite(
        db, [event(registry, 0, started_at=int(time.time() * 1000))], Router(cfg, registry)
    )
    n = Notifier(cfg, ThreadedSQLiteOutbox(path))
    task = asyncio.create_task(n.run())

    async def dead() -> bool:
        return (await n.counts()).get("dead", 0) == 2

    await until(dead)
    n.stop()
    await task
    listed = await n.list_dead()
    errors = {d["channel"]: d["last_error"] for d in listed}
    assert "isv.BUSINESS_LIMIT_CONTROL" in errors["aliyun"] and "HTTP 503" in errors["tencent"]
    assert len(provider.hits) == 6 and not provider.accepted


def test_the_readme_examples_are_valid_channels() -> None:
    import tomllib

    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = text[text.index("# Alibaba Cloud SMS") :]
    block = block[: block.index("```")]
    channels = tomllib.loads(block)["notify"]["channels"]
    cfg = NotifyConfig.model_validate({"channels": channels})
    assert [c.type for c in cfg.channels] == ["sms", "sms"]
    aliyun, tencent = cfg.channels
    assert isinstance(aliyun, SmsChannel) and aliyun.signature == "aliyun_rpc"
    assert isinstance(tencent, SmsChannel) and tencent.signature == "tencent_tc3"
    req = sms_request(tencent, [notice("川X10001")], "fw-9", int(time.time() * 1000))
    assert json.loads(req.body)["TemplateParamSet"] == ["川X10001", "超速"]
