"""The monitoring room in a real browser, fed through the real broker and the whole service.

Positions published to Mosquitto show up as markers; a speeding violation published through
MQTT reaches the alarm desk within 3 seconds; the operator acknowledges it and the
acknowledgement is audited.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import orjson
import pytest

from fleetwatch.config import Config
from tests.conftest import free_port
from tests.fleetwatch.conftest import running_service, service_config
from tests.web.pagekit import wait_js

pytestmark = [pytest.mark.services, pytest.mark.browser]

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "artifacts"
N = 20


def config(tmp_path: Path, prefix: str, web_port: int) -> Config:
    return service_config(
        tmp_path,
        prefix,
        web_port,
        vehicles=[(f"v{i}", f"1390000{i:04d}", f"川X1{i:04d}") for i in range(N)],
        token="browser-mqtt-token",
        web={
            "feed_interval_ms": 200,
            "tiles": [{"name": "none", "url": ""}],
            "users": [{"username": "op", "password": "pw", "org": "c", "role": "operator"}],
        },
        rules={
            "speeding": {"min_duration_s": 10, "close_after_s": 30},
            # Positions carry the wall clock: only speeding should fire in this test.
            "off_hours": {"enabled": False},
            "offline": {"enabled": False},
            "fatigue": {"enabled": False},
        },
    )


async def publish(pub: aiomqtt.Client, prefix: str, i: int, ts: int, speed: float) -> None:
    body = {"ts": ts, "lat": 30.45 + i * 0.002, "lon": 106.63, "speed": speed, "acc": True}
    await pub.publish(f"{prefix}/fleet/1390000{i:04d}/position", orjson.dumps(body), qos=1)


async def test_alarm_from_mqtt_reaches_the_desk_and_is_acknowledged(
    chromium: Any, mosquitto: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    prefix = f"br{unique}"
    port = free_port()
    cfg = config(tmp_path, prefix, port)
    async with running_service(cfg) as svc:
        now = int(time.time() * 1000)
        async with aiomqtt.Client(*mosquitto) as pub:
            for i in range(N):
                await publish(pub, prefix, i, now - 60_000, 30.0)
            page = await chromium.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.fill("#login-user", "op")
            await page.fill("#login-pass", "pw")
            await page.click("#login-submit")
            await page.wait_for_selector("#main:not(.hidden)")
            await wait_js(page, f"window.fw.markerCount() === {N}", timeout=10_000)

            # Vehicle 3 drives at 120 km/h for 20 s of its own clock: one speeding episode.
            for k in range(5):
                await publish(pub, prefix, 3, now - 50_000 + k * 5_000, 120.0)
            sent = time.monotonic()
            item = page.locator("#alarm-list li").filter(has_text="川X10003")
            await item.first.wait_for(timeout=3_000)
            seen_after = time.monotonic() - sent
        assert seen_after < 3.0
        # Times show in the fleet's zone (Asia/Shanghai), whatever the browser's zone is.
        started = datetime.fromtimestamp((now - 50_000) / 1000, ZoneInfo("Asia/Shanghai"))
        assert started.strftime("%Y-%m-%d %H:%M") in (await item.first.text_content() or "")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "e2e-alarm-desk.png"))
        await item.first.locator(".ack-btn").click()
        await page.fill("#ack-note", "已电话联系驾驶员，减速")
        await page.click("#ack-submit")
        await wait_js(
            page, "document.querySelector('#alarm-list li .ack-note') !== null", timeout=5_000
        )
        alarms = await svc.history.alarms()
        assert [a["kind"] for a in alarms] == ["speeding"]
        assert alarms[0]["ack"]["note"] == "已电话联系驾驶员，减速"
        assert errors == []
