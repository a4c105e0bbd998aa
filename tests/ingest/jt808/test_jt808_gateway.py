"""The gateway over real TCP with the real Mosquitto at 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from fleetwatch.errors import ServiceUnavailable
from ingest.jt808.bench import run_gateway_load
from ingest.jt808.codec import (
    decode_frame,
    encode_authentication,
    encode_heartbeat,
    encode_location,
    encode_registration,
)
from ingest.jt808.config import GatewayConfig
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import PlatformReply, RegistrationReply
from ingest.jt808.registrations import RegistrationStore, SqliteRegistrations
from ingest.jt808.session import GatewayStats, ProvisionedTerminal, Provisioning
from ingest.jt808.tcp import MqttPublisher, run_gateway

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]


class Terminal:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.splitter = FrameSplitter()
        self.pending: list[bytes] = []

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def reply(self) -> object:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(4096), 10)
            assert data, "gateway closed the connection"
            self.pending += self.splitter.feed(data)
        return decode_frame(self.pending.pop(0)).message


@contextlib.asynccontextmanager
async def gateway(
    broker: tuple[str, int],
    *,
    phones: tuple[str, ...] = (),
    registrations: RegistrationStore | None = None,
    stats: GatewayStats | None = None,
    **kw: object,
) -> AsyncIterator[tuple[str, int]]:
    """A gateway on a free port; ``phones`` are provisioned (plate 川X + the last 5 digits)."""
    cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=broker[0],
        mqtt_port=broker[1],
        mqtt_client_id=f"test-gw-{secrets.token_hex(4)}",
        **kw,
    )
    provisioning = Provisioning(ProvisionedTerminal(p, f"v{p}", plate_of(p)) for p in phones)
    store = registrations or SqliteRegistrations(":memory:")
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway(
            cfg,
            provisioning=provisioning,
            registrations=store,
            stop=stop,
            started=started,
            stats=stats,
        )
    )
    try:
        yield await asyncio.wait_for(started, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def plate_of(phone: str) -> str:
    return f"川X{phone[-5:]}"


def new_phone() -> str:
    return f"{secrets.randbelow(10**10) + 13 * 10**9}"


async def _connect(addr: tuple[str, int]) -> Terminal:
    return Terminal(*await asyncio.open_connection(*addr))


async def test_terminal_through_gateway_to_broker(mqtt_broker: tuple[str, int]) -> None:
    phone = f"{secrets.randbelow(10**11) + 10**11}"
    received: list[bytes] = []
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"test-sub-{secrets.token_hex(4)}") as sub,
        gateway(mqtt_broker, phones=(phone,)) as addr,
    ):
        await sub.subscribe(f"jt808/{phone}/up", qos=1)
        t = await _connect(addr)
        reg = encode_registration(phone, 1, plate=plate_of(phone))
        await t.send(reg)
        reply = await t.reply()
        assert isinstance(reply, RegistrationReply) and reply.result == 0 and reply.auth_code
        # A location before authentication is refused and not published.
        loc = encode_location(phone, 2, lat=30.45, lon=106.63, speed_kmh=42.0, heading=90,
                              alt_m=300, time_ms=1_764_034_200_000, mileage_km=10.5)  # fmt: skip
        await t.send(loc)
        assert await t.reply() == PlatformReply(2, 0x0200, 1)
        auth = encode_authentication(phone, 3, reply.auth_code)
        await t.send(auth)
        assert await t.reply() == PlatformReply(3, 0x0102, 0)
        beat = encode_heartbeat(phone, 4)
        # Two frames in one TCP write, the second split over two writes.
        loc2 = encode_location(phone, 5, lat=30.46, lon=106.64, speed_kmh=0.0, heading=0,
                               alt_m=300, time_ms=1_764_034_210_000)  # fmt: skip
        await t.send(beat + loc2[:10])
        await asyncio.sleep(0.05)
        await t.send(loc2[10:])
        assert await t.reply() == PlatformReply(4, 0x0002, 0)
        assert await t.reply() == PlatformReply(5, 0x0200, 0)
        async with asyncio.timeout(10):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                received.append(message.payload)
                if len(received) == 4:
                    break
        t.writer.close()
    assert received == [reg, auth, beat, loc2]


async def test_hostile_connections_do_not_hold_up_others(mqtt_broker: tuple[str, int]) -> None:
    phone = f"{secrets.randbelow(10**11) + 10**11}"
    async with gateway(mqtt_broker, max_frame_bytes=256, require_auth=False,
                       heartbeat_s=0.3) as addr:  # fmt: skip
        stalled = await _connect(addr)
        await stalled.send(b"\x7e\x02\x00")  # half a frame, then nothing
        flood = await _connect(addr)
        await flood.send(b"\x7e" + b"\x55" * 1000)  # beyond max_frame_bytes: closed
        good = await _connect(addr)
        await good.send(encode_heartbeat(phone, 9))
        assert await good.reply() == PlatformReply(9, 0x0002, 0)
        assert await asyncio.wait_for(flood.reader.read(), 5) == b""
        # The stalled one is closed after three heartbeat intervals.
        assert await asyncio.wait_for(stalled.reader.read(), 5) == b""
        for t in (stalled, flood, good):
            t.writer.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_publisher_window_bounds_in_flight(mqtt_broker: tuple[str, int]) -> None:
    topic = f"jt808/test-window-{secrets.token_hex(4)}/up"
    cfg = GatewayConfig(mqtt_host=mqtt_broker[0], mqtt_port=mqtt_broker[1], mqtt_max_inflight=5)
    got: list[bytes] = []
    async with aiomqtt.Client(*mqtt_broker, identifier=f"test-sub-{secrets.token_hex(4)}") as sub:
        await sub.subscribe(topic, qos=1)
        pub = MqttPublisher(cfg)
        await pub.connect()
        try:
            futures = []
            for i in range(200):
                await pub.slot()
                assert pub.in_flight <= 5
                futures.append(pub.publish(topic, i.to_bytes(2, "big")))
            await asyncio.wait_for(asyncio.gather(*futures), 10)
            assert pub.in_flight == 0
        finally:
            await pub.close()
        async with asyncio.timeout(10):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                got.append(message.payload)
                if len(got) == 200:
                    break
    assert got == [i.to_bytes(2, "big") for i in range(200)]
    # After close, a publish fails at once instead of waiting for a PUBACK forever.
    with pytest.raises(ServiceUnavailable):
        await pub.publish(topic, b"late")


async def test_publisher_without_broker_is_unavailable() -> None:
    pub = MqttPublisher(GatewayConfig(mqtt_port=_closed_port()))
    with pytest.raises(ServiceUnavailable):
        await pub.connect(timeout=2)


async def test_gateway_without_broker_serves_nobody_and_stops() -> None:
    cfg = GatewayConfig(listen_port=0, mqtt_port=_closed_port())
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, started=started))
    await asyncio.sleep(0.3)
    assert not started.done()  # no terminal is accepted while the broker is away
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_many_frames_in_one_write_answered_in_order(mqtt_broker: tuple[str, int]) -> None:
    phone = f"{secrets.randbelow(10**11) + 10**11}"
    async with gateway(mqtt_broker, require_auth=False, mqtt_max_inflight=3) as addr:
        t = await _connect(addr)
        frames = [
            encode_location(
                phone,
                s,
                lat=30.5,
                lon=106.6,
                speed_kmh=1.0,
                heading=0,
                alt_m=300,
                time_ms=1_764_034_200_000 + s,
            )
            for s in range(1, 51)
        ]
        await t.send(b"".join(frames))
        for s in range(1, 51):
            assert await t.reply() == PlatformReply(s, 0x0200, 0)
        t.writer.close()


def test_gateway_load_in_processes(mqtt_broker: tuple[str, int]) -> None:
    out = run_gateway_load(20, interval_s=0.5, duration_s=1.0, workers=2, mqtt=mqtt_broker)
    assert out["errors"] == 0
    assert out["reports"] >= 20
    assert out["gateway"]["published"] == out["reports"]
    assert out["p99_ms"] is not None
