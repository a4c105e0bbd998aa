"""Simulated terminals over TCP: through a real gateway to the real Mosquitto, and the counters
against fake gateways that answer late or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fleet.errors import ServiceUnavailable
from ingest.jt808.codec import decode_frame, encode_platform_reply, encode_registration_reply
from ingest.jt808.config import GatewayConfig
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import (
    MSG_AUTHENTICATION,
    MSG_HEARTBEAT,
    MSG_LOCATION,
    MSG_LOCATION_BATCH,
    MSG_LOGOUT,
    MSG_REGISTRATION,
    Location,
    LocationBatch,
)
from ingest.jt808.registrations import SqliteRegistrations
from ingest.jt808.tcp import GatewayStats, run_gateway
from simulator.fleet import Fleet, FleetSpec, terminal_id
from simulator.run import _day_start
from simulator.scenario import fleet_config
from simulator.tcp import (
    TcpOptions,
    TerminalClient,
    TerminalStats,
    provisioning,
    reports,
    run_fleet_tcp,
)
from simulator.toml import dumps
from tests.simulator.conftest import Collector

DAY0 = _day_start(dt.date(2026, 11, 24))
# Six vehicles of an office day, every one losing signal once on its first trip (8:45-9:10).
SPEC = FleetSpec(vehicles=6, schedule="office", speeding_share=0.0, signal_loss_share=1.0)
START, END = DAY0 + 8 * 3_600_000 + 30 * 60_000, DAY0 + 9 * 3_600_000 + 30 * 60_000


@contextlib.asynccontextmanager
async def gateway(
    broker: tuple[str, int], topic_prefix: str, stats: GatewayStats, spec: FleetSpec = SPEC
) -> AsyncIterator[tuple[str, int]]:
    cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=broker[0],
        mqtt_port=broker[1],
        mqtt_client_id=f"test-simtcp-{secrets.token_hex(4)}",
        topic_prefix=topic_prefix,
        heartbeat_s=5.0,
        rate_per_s=100_000.0,  # an hour in seconds: far above a real terminal's rate
        rate_burst=100_000,
    )
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway(
            cfg,
            provisioning=provisioning(spec),
            registrations=SqliteRegistrations(":memory:"),
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


async def wait_for(c: Collector, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(c.messages) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@pytest.mark.services
@pytest.mark.timeout(60)
async def test_terminals_through_the_gateway_every_frame_acknowledged(
    collector: Collector, mosquitto: tuple[str, int], unique: str
) -> None:
    expected = reports(Fleet(SPEC, START).step(END))
    backfills = [r for r in expected if r.backfill]
    assert len({r.vehicle for r in backfills}) == 5  # the scenario has its blind areas
    gw_stats = GatewayStats()
    async with gateway(mosquitto, f"sim{unique}/jt808", gw_stats) as (host, port):
        opts = TcpOptions(host=host, port=port, heartbeat_s=0.25, batch_max=8)
        stats = await run_fleet_tcp(
            SPEC,
            opts,
            stop=asyncio.Event(),
            speedup=3_600 / 2.5,  # the hour in two and a half seconds
            start_ms=START,
            end_ms=END,
        )
    s = stats.summary()
    # Logged in once each, every frame answered with success and in time.
    assert (s["terminals"], s["authenticated"], s["registrations"], s["failed"]) == (6, 6, 6, 0)
    assert s["frames"] == s["replied"] == s["acked"], s
    assert s["late"] == s["refused"] == s["unacknowledged"] == s["unexpected"] == 0, s
    assert s["dropped"] == 0 and s["connect_errors"] == 0
    assert s["heartbeats"] >= 6 and s["logouts"] == 6
    # Every report sent; back-fill as 0x0704 after a new connection.
    assert s["positions"] == sum(len(r.locations) for r in expected)
    assert s["locations"] == len(expected) - len(backfills)
    assert s["backfill_positions"] == sum(len(r.locations) for r in backfills)
    assert s["backfill_batches"] == sum(-(-len(r.locations) // 8) for r in backfills)
    assert s["reconnects"] == len(backfills) and s["connects"] == 6 + len(backfills)
    assert gw_stats.bad_frames == gw_stats.unauthenticated == 0

    await wait_for(collector, s["frames"])
    assert len(collector.messages) == s["frames"]
    by_phone: dict[str, list[tuple[int, object]]] = {}
    for topic, payload in collector.messages:
        d = decode_frame(payload)
        assert topic == f"sim{unique}/jt808/{d.header.phone}/up"
        by_phone.setdefault(d.header.phone.lstrip("0"), []).append((d.header.msg_id, d.message))
    assert sum(m == MSG_HEARTBEAT for f in by_phone.values() for m, _ in f) == s["heartbeats"]
    for i in range(SPEC.vehicles):
        frames = by_phone[terminal_id(i)]
        ids = [m for m, _ in frames]
        assert ids[:2] == [MSG_REGISTRATION, MSG_AUTHENTICATION] and ids[-1] == MSG_LOGOUT
        # Positions arrive in order and equal what the fleet reported (the same seed).
        sent: list[tuple[bool, Location]] = []
        for m, msg in frames:
            if isinstance(msg, Location):
                sent.append((False, msg))
            elif isinstance(msg, LocationBatch):
                assert msg.backfill and m == MSG_LOCATION_BATCH
                sent += [(True, loc) for loc in msg.locations]
        want = [(r.backfill, loc) for r in expected if r.vehicle == i for loc in r.locations]
        # JT/T 808 times are whole seconds (BCD YYMMDDhhmmss).
        got_t = [(b, loc.time_ms) for b, loc in sent]
        assert got_t == [(b, loc.time_ms // 1000 * 1000) for b, loc in want]
        for (_, got), (_, loc) in zip(sent, want, strict=True):
            assert got.lat == pytest.approx(loc.lat, abs=1e-6)
            assert got.speed_kmh == pytest.approx(loc.speed_kmh, abs=0.06)
        # A back-fill follows a new authentication, after the gap it fills: its points
        # lie between the last live report before the blind area and the first after it.
        quiet = [(m, x) for m, x in frames if m != MSG_HEARTBEAT]
        for k, (m, msg) in enumerate(quiet):
            if m != MSG_LOCATION_BATCH or quiet[k - 1][0] == MSG_LOCATION_BATCH:
                continue
            assert quiet[k - 1][0] == MSG_AUTHENTICATION
            assert isinstance(msg, LocationBatch)
            before = [x for mm, x in quiet[:k] if mm == MSG_LOCATION]
            after = [x for mm, x in quiet[k:] if mm == MSG_LOCATION]
            assert isinstance(before[-1], Location) and isinstance(after[0], Location)
            assert before[-1].time_ms < msg.locations[0].time_ms
            assert msg.locations[-1].time_ms <= after[0].time_ms


# -- the counters against fake gateways (no broker needed) ------------------------------------

Handler = Callable[[int, int, str], Awaitable[bytes | None]]  # (msg_id, serial, phone)
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(serve: Serve) -> AsyncIterator[tuple[str, int]]:
    """A TCP server on a free port whose connections all end with it."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def fake_gateway(answer: Handler) -> AsyncIterator[tuple[str, int]]:
    """A server that logs terminals in and answers other frames as ``answer`` says."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sp = FrameSplitter()
        while data := await reader.read(4096):
            for raw in sp.feed(data):
                h = decode_frame(raw).header
                if h.msg_id == MSG_REGISTRATION:
                    out: bytes | None = encode_registration_reply(
                        h.phone, 1, reply_serial=h.serial, auth_code="code"
                    )
                elif h.msg_id == MSG_AUTHENTICATION:
                    out = encode_platform_reply(
                        h.phone, 1, reply_serial=h.serial, reply_msg_id=h.msg_id
                    )
                else:
                    out = await answer(h.msg_id, h.serial, h.phone)
                if out is not None:
                    writer.write(out)

    async with serving(serve) as addr:
        yield addr


def loc(k: int) -> Location:
    return Location(lat=30.45, lon=106.63, time_ms=1_763_949_600_000 + k * 10_000, speed_kmh=40)


async def logged_in(addr: tuple[str, int], opts: TcpOptions) -> TerminalClient:
    c = TerminalClient("13900000001", replace_addr(opts, addr), TerminalStats(), plate="川X0001")
    await c.connect()
    assert await c.register() == "code"
    await c.authenticate()
    return c


def replace_addr(opts: TcpOptions, addr: tuple[str, int]) -> TcpOptions:
    from dataclasses import replace

    return replace(opts, host=addr[0], port=addr[1])


async def test_late_and_refused_replies_are_counted() -> None:
    async def answer(msg_id: int, serial: int, phone: str) -> bytes:
        # Every other location answered after the timeout, heartbeats refused.
        if msg_id == MSG_LOCATION and serial % 2 == 0:
            await asyncio.sleep(0.3)
        result = 1 if msg_id == MSG_HEARTBEAT else 0
        return encode_platform_reply(
            phone, 1, reply_serial=serial, reply_msg_id=msg_id, result=result
        )

    async with fake_gateway(answer) as addr:
        c = await logged_in(addr, TcpOptions(ack_timeout_s=0.2, window=1))
        for k in range(4):
            await c.send_location(loc(k))
        await c.heartbeat()
        assert await c.drain(2.0)
        await c.close(logout=False)
    s = c.stats.summary()
    # registration, authentication, 4 locations (2 late), 1 heartbeat (refused)
    assert (s["frames"], s["replied"], s["acked"], s["refused"]) == (7, 7, 6, 1)
    assert s["late"] == 2 and s["unacknowledged"] == 0
    assert s["reply_max_ms"] >= 300


async def test_frames_never_answered_are_counted_unacknowledged() -> None:
    async def answer(msg_id: int, serial: int, phone: str) -> bytes | None:
        return None  # positions swallowed

    async with fake_gateway(answer) as addr:
        c = await logged_in(addr, TcpOptions(ack_timeout_s=0.2, stall_s=0.3, window=2))
        await c.send_location(loc(0))
        await c.send_batch([loc(k) for k in range(1, 4)])
        # The window is full: the next send waits for room, which never comes.
        with pytest.raises(ServiceUnavailable, match="unanswered"):
            await c.send_location(loc(9))
        assert not await c.drain(0.2)
        await c.close(logout=False)
    s = c.stats.summary()
    assert (s["frames"], s["acked"], s["unacknowledged"]) == (4, 2, 2)
    assert s["positions"] == 4 and s["backfill_positions"] == 3


async def test_no_gateway_no_run() -> None:
    from tests.conftest import free_port

    opts = TcpOptions(port=free_port(), connect_attempts=2)
    stats = TerminalStats()
    with pytest.raises(ServiceUnavailable, match="no terminal could log in"):
        await run_fleet_tcp(
            FleetSpec(vehicles=2), opts, stop=asyncio.Event(), speedup=60.0, stats=stats
        )
    assert (stats.failed, stats.authenticated, stats.frames, stats.connect_errors) == (2, 0, 0, 4)


GATEWAY_CLI = "import sys; from fleetwatch.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.services
def test_simulate_command_drives_a_gateway_process(
    mosquitto: tuple[str, int], unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetwatch.cli import main
    from tests.conftest import free_port, port_open

    port = free_port()
    conf = tmp_path / "fleet.toml"
    # The gateway reads the whole file: its vehicles are the terminals it lets register.
    doc = fleet_config(FleetSpec(vehicles=5))
    doc["gateway"] = {
        "listen_port": port,
        "mqtt_host": mosquitto[0],
        "mqtt_port": mosquitto[1],
        "topic_prefix": f"cli{unique}/jt808",
        "mqtt_client_id": f"cli-gw-{unique}",
        "auth_secret": secrets.token_hex(16),
        "registrations": f"sqlite:{tmp_path / 'registrations.sqlite3'}",
    }
    conf.write_text(dumps(doc), encoding="utf-8")
    gw = subprocess.Popen(
        [sys.executable, "-c", GATEWAY_CLI, "gateway", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port, 0.2):
            assert gw.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        argv = ["simulate", "--transport", "tcp", "--gateway", f"127.0.0.1:{port}"]
        argv += ["--vehicles", "5", "--speedup", "60", "--duration", "1.5"]
        argv += ["--heartbeat", "0.4", "--jt808-version", "2019", "--json"]
        rc = main(argv)
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        gw.terminate()
        gw.wait(10)
    assert rc == 0, out
    assert (out["terminals"], out["authenticated"], out["logouts"]) == (5, 5, 5)
    assert out["frames"] == out["acked"] and out["unacknowledged"] == 0
    assert out["positions"] > 0 and out["heartbeats"] >= 5


async def test_a_dropped_connection_is_reopened_and_its_lost_frames_counted() -> None:
    """The gateway drops each terminal's first connection at its third location."""
    seen: dict[str, int] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sp = FrameSplitter()
        first = None
        while data := await reader.read(4096):
            for raw in sp.feed(data):
                h = decode_frame(raw).header
                if h.msg_id == MSG_REGISTRATION:
                    writer.write(
                        encode_registration_reply(
                            h.phone, 1, reply_serial=h.serial, auth_code="code"
                        )
                    )
                    continue
                if first is None:
                    first = h.phone not in seen
                    seen.setdefault(h.phone, 0)
                if h.msg_id == MSG_LOCATION:
                    seen[h.phone] += 1
                    if first and seen[h.phone] == 3:
                        return
                writer.write(
                    encode_platform_reply(h.phone, 1, reply_serial=h.serial, reply_msg_id=h.msg_id)
                )

    spec = FleetSpec(vehicles=3, schedule="always", seed=7)
    async with serving(serve) as (host, port):
        stats = await run_fleet_tcp(
            spec,
            TcpOptions(host=host, port=port, ack_timeout_s=1.0),
            stop=asyncio.Event(),
            speedup=600.0,
            start_ms=DAY0 + 10 * 3_600_000,
            end_ms=DAY0 + 10 * 3_600_000 + 600_000,
        )
    want = reports(Fleet(spec, DAY0 + 10 * 3_600_000).step(DAY0 + 10 * 3_600_000 + 600_000))
    assert all(n > 3 for n in seen.values())
    assert stats.reconnects == 3 and stats.connects == 6 and stats.registrations == 3
    assert stats.unacknowledged >= 3 and stats.dropped == stats.refused == 0
    assert stats.frames == stats.acked + stats.unacknowledged
    assert stats.positions == sum(len(r.locations) for r in want)


@pytest.mark.services
@pytest.mark.timeout(60)
async def test_terminals_register_once_and_keep_their_codes(
    mosquitto: tuple[str, int], unique: str, tmp_path: Path
) -> None:
    """A second run against the same gateway: with their codes kept the terminals only
    authenticate; without them the gateway refuses the second registration (result 3)."""
    spec = FleetSpec(vehicles=3, schedule="always", seed=11)
    codes = tmp_path / "codes.json"
    store = SqliteRegistrations(tmp_path / "registrations.sqlite3")
    cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=mosquitto[0],
        mqtt_port=mosquitto[1],
        mqtt_client_id=f"test-simcodes-{secrets.token_hex(4)}",
        topic_prefix=f"codes{unique}/jt808",
        auth_secret=secrets.token_hex(16),
    )
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway(
            cfg, provisioning=provisioning(spec), registrations=store, stop=stop, started=started
        )
    )
    t0 = DAY0 + 10 * 3_600_000
    try:
        host, port = await asyncio.wait_for(started, 10)

        async def run(codes_file: str | None) -> TerminalStats:
            opts = TcpOptions(host=host, port=port, codes_file=codes_file, connect_attempts=2)
            return await run_fleet_tcp(
                spec, opts, stop=asyncio.Event(), speedup=600.0, start_ms=t0, end_ms=t0 + 60_000
            )

        first = await run(str(codes))
        assert (first.registrations, first.authenticated, first.failed) == (3, 3, 0)
        assert set(json.loads(codes.read_text())) == {terminal_id(i) for i in range(3)}
        second = await run(str(codes))
        assert (second.registrations, second.authenticated, second.failed) == (0, 3, 0)
        with pytest.raises(ServiceUnavailable, match="no terminal could log in"):
            await run(None)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await store.close()
