"""The gateway over real TCP with the real Mosquitto at 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from jt808_helpers import random_location

from fleet.errors import ServiceUnavailable
from fleetwatch.cli import main
from ingest.jt808.bench import run_gateway_load
from ingest.jt808.codec import (
    decode_frame,
    encode_authentication,
    encode_heartbeat,
    encode_location,
    encode_registration,
    encode_split,
)
from ingest.jt808.config import GatewayConfig
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import LocationBatch, PlatformReply, RegistrationReply
from ingest.jt808.registrations import (
    RedisRegistrations,
    RegistrationStore,
    SqliteRegistrations,
)
from ingest.jt808.session import GatewayStats, ProvisionedTerminal, Provisioning
from ingest.jt808.tcp import Gateway, MqttPublisher, run_gateway

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


# -- issue 12 item 2: only provisioned terminals, once, one per connection ----------------------

SECRET = "gateway-test-secret-0123456789"


async def _register(addr: tuple[str, int], phone: str, plate: str | None = None) -> object:
    t = await _connect(addr)
    try:
        await t.send(encode_registration(phone, 1, plate=plate or plate_of(phone)))
        return await t.reply()
    finally:
        t.writer.close()


async def _authenticate(t: Terminal, phone: str, code: str, serial: int = 2) -> object:
    await t.send(encode_authentication(phone, serial, code))
    return await t.reply()


async def _closed(t: Terminal, within: float = 5.0) -> bool:
    """True if the gateway closes ``t`` within ``within`` s (whatever it still sends first)."""
    try:
        async with asyncio.timeout(within):
            while data := await t.reader.read(4096):
                t.pending += t.splitter.feed(data)
    except ConnectionError:
        pass  # reset: closed with our bytes unread
    finally:
        with contextlib.suppress(ConnectionError):
            t.writer.close()
    return True


async def test_registration_only_for_provisioned_terminals_and_only_once(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    known, stranger = new_phone(), new_phone()
    db = tmp_path / "registrations.sqlite3"
    conf = tmp_path / "fleet.toml"
    conf.write_text(f'[gateway]\nregistrations = "sqlite:{db}"\n', encoding="utf-8")
    stats = GatewayStats()
    async with gateway(
        mqtt_broker,
        phones=(known,),
        registrations=SqliteRegistrations(db),
        stats=stats,
        auth_secret=SECRET,
        registration_match=("plate",),
    ) as addr:
        # JT/T 808-2019 table 9: 4 no such terminal, 2 no such vehicle, 3 already registered.
        assert await _register(addr, stranger) == RegistrationReply(1, 4, "")
        assert await _register(addr, known, plate="川X00000") == RegistrationReply(1, 2, "")
        first = await _register(addr, known)
        assert isinstance(first, RegistrationReply) and first.result == 0 and first.auth_code
        # Whoever registers the terminal again gets nothing: the code went to the first.
        assert await _register(addr, known) == RegistrationReply(1, 3, "")
        # The operator resets it (the command line, on the store the config names) ...
        rc = await asyncio.to_thread(
            main, ["gateway", "reset-terminal", known, "--config", str(conf)]
        )
        assert rc == 0
        again = await _register(addr, known)
        assert isinstance(again, RegistrationReply) and again.result == 0
        # ... and the old code no longer opens the door; the new one does.
        assert again.auth_code != first.auth_code
        t = await _connect(addr)
        assert await _authenticate(t, known, first.auth_code) == PlatformReply(2, 0x0102, 1)
        assert await _authenticate(t, known, again.auth_code, 3) == PlatformReply(3, 0x0102, 0)
        t.writer.close()
    assert stats.registrations == 2 and stats.registrations_refused == 3
    assert stats.by_reason["unprovisioned"] == 1 and stats.by_reason["already_registered"] == 1


async def test_auth_code_survives_restart_and_works_on_every_node(
    mqtt_broker: tuple[str, int], redis_server: tuple[str, int], unique: str
) -> None:
    phone = new_phone()
    url = f"redis://{redis_server[0]}:{redis_server[1]}/0"
    prefix = f"test:{unique}:gw:"

    stores = [RedisRegistrations(url, prefix) for _ in range(3)]
    try:
        async with gateway(
            mqtt_broker, phones=(phone,), registrations=stores[0], auth_secret=SECRET
        ) as addr:
            reply = await _register(addr, phone)
            assert isinstance(reply, RegistrationReply) and reply.result == 0
        # A restarted gateway, and a second node beside it, take the same code.
        async with (
            gateway(
                mqtt_broker, phones=(phone,), registrations=stores[1], auth_secret=SECRET
            ) as one,
            gateway(
                mqtt_broker, phones=(phone,), registrations=stores[2], auth_secret=SECRET
            ) as two,
        ):
            for addr in (one, two):
                t = await _connect(addr)
                assert await _authenticate(t, phone, reply.auth_code) == PlatformReply(2, 0x0102, 0)
                await t.send(encode_heartbeat(phone, 3))
                assert await t.reply() == PlatformReply(3, 0x0002, 0)
                t.writer.close()
            assert await _register(two, phone) == RegistrationReply(1, 3, "")
        assert await stores[0].reset(phone)
    finally:
        for s in stores:
            await s.close()


async def test_one_connection_speaks_for_one_terminal(mqtt_broker: tuple[str, int]) -> None:
    a, b = new_phone(), new_phone()
    stats = GatewayStats()
    async with (
        aiomqtt.Client(*mqtt_broker, identifier=f"test-sub-{secrets.token_hex(4)}") as sub,
        gateway(mqtt_broker, phones=(a, b), stats=stats) as addr,
    ):
        await sub.subscribe(f"jt808/{b}/up", qos=1)
        reply = await _register(addr, a)
        assert isinstance(reply, RegistrationReply)
        t = await _connect(addr)
        assert await _authenticate(t, a, reply.auth_code) == PlatformReply(2, 0x0102, 0)
        # The authenticated connection of a speaks for b: refused, and closed.
        await t.send(encode_heartbeat(b, 3))
        assert await t.reply() == PlatformReply(3, 0x0002, 1)
        assert await _closed(t)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for message in sub.messages:
                    raise AssertionError(f"published for {b}: {message.payload!r}")
    assert stats.other_terminal == 1 and stats.by_reason["closed_other_terminal"] == 1


# -- issue 12 item 9: limits that count frames ----------------------------------------------


async def test_a_trickle_or_junk_does_not_hold_a_connection(mqtt_broker: tuple[str, int]) -> None:
    phone = new_phone()
    stats = GatewayStats()
    async with gateway(
        mqtt_broker,
        stats=stats,
        require_auth=False,
        heartbeat_s=0.5,  # idle after 1.5 s without a frame
        first_frame_timeout_s=0.5,
        max_junk_bytes=1000,
    ) as addr:
        # One byte every 0.2 s (18 s in the field): the frame would take 3 s to arrive.
        trickle = await _connect(addr)
        await trickle.send(encode_heartbeat(phone, 1))
        assert await trickle.reply() == PlatformReply(1, 0x0002, 0)
        t0 = asyncio.get_running_loop().time()
        frame = encode_heartbeat(phone, 2)
        with contextlib.suppress(ConnectionError):
            for byte in frame:
                await trickle.send(bytes([byte]))
                await asyncio.sleep(0.2)
        assert await _closed(trickle)
        assert asyncio.get_running_loop().time() - t0 < len(frame) * 0.2
        assert not trickle.pending  # the trickled frame never got through
        # Junk with no 0x7E, streamed fast enough that no timer of bytes would fire.
        junk = await _connect(addr)
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                await junk.send(b"\x55" * 100)
                await asyncio.sleep(0.02)
        assert await _closed(junk)
        # A stranger that never sends a whole frame is gone after first_frame_timeout_s.
        silent = await _connect(addr)
        await silent.send(b"\x7e\x00")
        assert await _closed(silent, 2.0)
    assert stats.idle_closed == 2 and stats.junk_closed == 1


async def test_unfinished_split_messages_expire(mqtt_broker: tuple[str, int]) -> None:
    phone = new_phone()
    stats = GatewayStats()
    rng = random.Random(3)
    batch = LocationBatch(1, tuple(random_location(rng) for _ in range(30)))
    parts = encode_split(batch, phone=phone, serial=10, max_body=300)
    async with gateway(
        mqtt_broker, stats=stats, require_auth=False, split_max_age_s=0.3, heartbeat_s=30
    ) as addr:
        t = await _connect(addr)
        await t.send(parts[0])
        await asyncio.sleep(0.8)  # the first part expires
        await t.send(b"".join(parts[1:]) + encode_heartbeat(phone, 99))
        # Only the heartbeat is answered: the split message can no longer be whole.
        assert await t.reply() == PlatformReply(99, 0x0002, 0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                assert await t.reply() is None
        t.writer.close()
    # Dropped twice: the first part alone, then the rest (which waited 0.3 s for it).
    assert stats.by_reason["split_incomplete"] == 2 and stats.published == 1


async def test_registration_store_down_closes_only_that_connection(
    mqtt_broker: tuple[str, int],
) -> None:
    phone, other = new_phone(), new_phone()
    store = RedisRegistrations(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        async with gateway(mqtt_broker, phones=(phone, other), registrations=store) as addr:
            t = await _connect(addr)
            await t.send(encode_registration(phone, 1, plate=plate_of(phone)))
            assert await _closed(t) and not t.pending  # no code, no success: it retries later
            # The gateway goes on serving the others.
            t2 = await _connect(addr)
            await t2.send(encode_heartbeat(other, 5))
            assert await t2.reply() == PlatformReply(5, 0x0002, 1)  # not authenticated
            t2.writer.close()
    finally:
        await store.close()


class _LostBroker:
    """Stands in for :class:`MqttPublisher` once its broker went away: every publish fails."""

    async def slot(self) -> None:
        return None

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(ServiceUnavailable("MQTT broker", "connection lost"))
        return fut


async def test_a_registration_whose_code_never_went_out_may_be_repeated(tmp_path: Path) -> None:
    phone = new_phone()
    store = SqliteRegistrations(tmp_path / "registrations.sqlite3")
    provisioning = Provisioning([ProvisionedTerminal(phone, "v1", plate_of(phone))])
    broker: Any = _LostBroker()
    gw = Gateway(GatewayConfig(), broker, provisioning, store)
    server = await asyncio.start_server(gw.handle, "127.0.0.1", 0)
    try:
        t = await _connect(server.sockets[0].getsockname()[:2])
        await t.send(encode_registration(phone, 1, plate=plate_of(phone)))
        assert await _closed(t) and not t.pending
        assert gw.broker_lost.is_set()
        # The claim was given back: the terminal registers again once the broker is back.
        assert await store.current(phone) is None
    finally:
        server.close()
        await gw.close_all()
        await server.wait_closed()
        await store.close()
