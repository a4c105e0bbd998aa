"""Commands through the gateway over real TCP and the real Mosquitto, answered by the simulator's
terminals: MQTT ``{prefix}/{phone}/down`` in, ``{prefix}/{phone}/cmd-result`` out."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import aiomqtt
import pytest
from test_jt808_gateway import gateway, new_phone, plate_of

from ingest.jt808.commands import to_wire
from ingest.jt808.downlink import (
    TEXT_DISPLAY,
    TEXT_EMERGENCY,
    AlarmConfirm,
    LocateQuery,
    ParamsQuery,
    ParamsSet,
    TemporaryTracking,
    TextMessage,
)
from ingest.jt808.messages import Location
from simulator.tcp import TcpOptions, TerminalClient

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Results:
    """The cmd-result messages of one prefix, by command id."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.by_id: dict[str, list[dict[str, Any]]] = {}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for m in self.client.messages:
            assert isinstance(m.payload, bytes)
            r = json.loads(m.payload)
            self.by_id.setdefault(r["id"], []).append(r)

    async def until(self, cid: str, state: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.by_id.get(cid, []):
                if r["state"] == state:
                    return r
            await asyncio.sleep(0.05)
        raise AssertionError(f"{cid}: no {state!r}; got {self.by_id.get(cid)}")

    def close(self) -> None:
        self._task.cancel()


async def send(
    client: aiomqtt.Client,
    prefix: str,
    phone: str,
    cid: str,
    kind: str,
    msg: Any,
    expires_in_s: float = 60,
) -> None:
    body = {"id": cid, "command": to_wire(kind, msg), "expires_at": now_ms() + expires_in_s * 1000}
    await client.publish(f"{prefix}/{phone}/down", json.dumps(body), qos=1)


async def terminal(addr: tuple[str, int], phone: str, version: int = 2013) -> TerminalClient:
    t = TerminalClient(
        phone,
        TcpOptions(host=addr[0], port=addr[1], version=version, latch_alarms=True),
        plate=plate_of(phone),
    )
    await t.connect()
    await t.login()
    return t


@pytest.mark.parametrize("version", [2013, 2019])
async def test_each_command_reaches_the_terminal_and_is_acked(
    mqtt_broker: tuple[str, int], version: int
) -> None:
    prefix = f"fwt{secrets.token_hex(4)}"
    phone = new_phone()
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"t-{secrets.token_hex(4)}") as mq,
        gateway(mqtt_broker, phones=(phone,), topic_prefix=prefix) as addr,
    ):
        await mq.subscribe(f"{prefix}/+/cmd-result", qos=1)
        results = Results(mq)
        t = await terminal(addr, phone, version)
        loc = Location(lat=30.456, lon=106.633, time_ms=now_ms() // 1000 * 1000, speed_kmh=42.0)
        await t.send_location(loc)
        await t.drain()

        await send(
            mq,
            prefix,
            phone,
            "c-text",
            "text",
            TextMessage("请减速慢行", TEXT_EMERGENCY | TEXT_DISPLAY),
        )
        await results.until("c-text", "acked")
        assert t.texts[-1].text == "请减速慢行" and t.texts[-1].flags & TEXT_EMERGENCY

        await send(mq, prefix, phone, "c-loc", "locate", LocateQuery())
        r = await results.until("c-loc", "acked")
        assert r["reply"]["lat"] == pytest.approx(30.456) and r["reply"]["speed_kmh"] == 42.0

        await send(mq, prefix, phone, "c-set", "params_set", ParamsSet(((0x0055, 80),)))
        await results.until("c-set", "acked")
        await send(mq, prefix, phone, "c-get", "params_get", ParamsQuery((0x0055, 0x0029)))
        r = await results.until("c-get", "acked")
        assert r["reply"]["params"] == {"speed_limit_kmh": 80, "report_interval_s": 30}

        before = t.tracked
        await send(mq, prefix, phone, "c-trk", "track", TemporaryTracking(1, 3))
        await results.until("c-trk", "acked")
        await asyncio.sleep(2.5)
        assert t.tracked - before >= 2  # reports every second while tracking
        assert [x["state"] for x in results.by_id["c-text"]] == ["sent", "acked"]
        await t.close()
        results.close()


async def test_confirmation_clears_a_latched_sos(mqtt_broker: tuple[str, int]) -> None:
    prefix = f"fwt{secrets.token_hex(4)}"
    phone = new_phone()
    up: list[int] = []
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"t-{secrets.token_hex(4)}") as mq,
        gateway(mqtt_broker, phones=(phone,), topic_prefix=prefix) as addr,
    ):
        await mq.subscribe(f"{prefix}/+/cmd-result", qos=1)
        results = Results(mq)
        t = await terminal(addr, phone)
        base = Location(lat=30.4, lon=106.6, time_ms=now_ms() // 1000 * 1000)
        await t.send_location(Location(**{**_fields(base), "alarm": 1}))  # SOS pressed
        await t.send_location(base)  # released: the bit stays latched
        up.append(t.last_location.alarm if t.last_location else -1)
        await send(mq, prefix, phone, "c-ok", "confirm_alarm", AlarmConfirm(1))
        await results.until("c-ok", "acked")
        await t.send_location(base)
        up.append(t.last_location.alarm if t.last_location else -1)
        assert up == [1, 0]
        await t.close()
        results.close()


def _fields(loc: Location) -> dict[str, Any]:
    return {k: getattr(loc, k) for k in loc.__slots__}  # type: ignore[attr-defined]


async def test_queued_while_offline_delivered_on_connect_or_expired(
    mqtt_broker: tuple[str, int],
) -> None:
    prefix = f"fwt{secrets.token_hex(4)}"
    phone, absent = new_phone(), new_phone()
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"t-{secrets.token_hex(4)}") as mq,
        gateway(mqtt_broker, phones=(phone, absent), topic_prefix=prefix) as addr,
    ):
        await mq.subscribe(f"{prefix}/+/cmd-result", qos=1)
        results = Results(mq)
        await send(mq, prefix, phone, "c-wait", "text", TextMessage("请联系监控室"))
        await send(mq, prefix, absent, "c-exp", "locate", LocateQuery(), expires_in_s=1.5)
        await asyncio.sleep(0.5)
        assert "c-wait" not in results.by_id  # nobody to send it to yet
        t = await terminal(addr, phone)
        await results.until("c-wait", "acked")
        assert [x.text for x in t.texts] == ["请联系监控室"]
        r = await results.until("c-exp", "expired", timeout=5)
        assert r["phone"] == absent.lstrip("0")
        await t.close()
        results.close()


async def test_a_silent_terminal_times_out_after_the_retransmissions(
    mqtt_broker: tuple[str, int],
) -> None:
    prefix = f"fwt{secrets.token_hex(4)}"
    phone = new_phone()
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"t-{secrets.token_hex(4)}") as mq,
        gateway(
            mqtt_broker,
            phones=(phone,),
            topic_prefix=prefix,
            command_reply_timeout_s=0.3,
            command_retransmissions=2,
        ) as addr,
    ):
        await mq.subscribe(f"{prefix}/+/cmd-result", qos=1)
        results = Results(mq)
        t = await terminal(addr, phone)
        t._command = lambda raw, msg: None  # type: ignore[method-assign]  # a deaf terminal
        t0 = time.monotonic()
        await send(mq, prefix, phone, "c-deaf", "locate", LocateQuery())
        r = await results.until("c-deaf", "timeout")
        took = time.monotonic() - t0
        assert r["attempts"] == 3
        assert [x["state"] for x in results.by_id["c-deaf"]] == ["sent"] * 3 + ["timeout"]
        assert took >= 0.3 + 0.6 + 1.8  # T, 2T, 6T
        await t.close()
        results.close()


async def test_a_repeated_command_is_carried_out_once(mqtt_broker: tuple[str, int]) -> None:
    prefix = f"fwt{secrets.token_hex(4)}"
    phone = new_phone()
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"t-{secrets.token_hex(4)}") as mq,
        gateway(mqtt_broker, phones=(phone,), topic_prefix=prefix) as addr,
    ):
        await mq.subscribe(f"{prefix}/+/cmd-result", qos=1)
        results = Results(mq)
        t = await terminal(addr, phone)
        for _ in range(3):  # the web's bridge publishes a queued command again
            await send(mq, prefix, phone, "c-once", "text", TextMessage("请减速慢行"))
        await results.until("c-once", "acked")
        await asyncio.sleep(0.5)
        assert [x.text for x in t.texts] == ["请减速慢行"]
        assert [x["state"] for x in results.by_id["c-once"]] == ["sent", "acked"]
        await t.close()
        results.close()
