"""JT/T 808 over TCP: the simulated fleet as real terminals of the gateway.

Each vehicle is one :class:`TerminalClient` with its own connection to
``fleetwatch gateway``: it registers (0x0100, answered by 0x8100 with an
authentication code; the gateway registers only terminals it knows, so the
simulated fleet must be provisioned: :func:`provisioning`, or the vehicles of
``fleetwatch simulate --write-config``), authenticates (0x0102), sends a heartbeat (0x0002)
every ``heartbeat_s`` of wall time, a 0x0200 per live report and, when a
blind area ends, a 0x0704 batch of type 1 (back-fill) after reconnecting, as
a terminal whose network came back does. Every frame waits for the gateway's
reply (0x8001, or 0x8100 to a registration); replies with a failure result,
replies later than ``ack_timeout_s`` and frames never answered are counted in
:class:`TerminalStats`. The terminals answer the platform's commands (JT/T 808 downlink,
:mod:`ingest.jt808.downlink`) as real ones do: a text (0x8300) is kept in
:attr:`TerminalClient.texts` and answered 0x0001; an alarm confirmation (0x8203)
clears the latched alarm bits it names (with ``latch_alarms``, an SOS stays set
in every report from the press until it is confirmed); a locate (0x8201) is answered 0x0201 with the
last position; temporary tracking (0x8202) sends the last position every
interval for the validity; parameters are set (0x8103) and read (0x8104/0x8106,
answered 0x0104). A connection that is lost, or whose replies stop for
``stall_s``, is reopened (with backoff) and authenticated again with the code
kept; what was in flight on it counts as unacknowledged (no retransmission:
the gateway does not drop duplicates). A terminal registers once in its life and
keeps its code: with ``codes_file`` the codes are kept between runs as a real
terminal keeps them in flash (the gateway refuses a second registration until an
operator resets the terminal).

:func:`run_fleet_tcp` paces the fleet like :func:`simulator.mqtt.publish_fleet`
(simulated time ``speedup`` times the wall clock, ``max_rate`` reports per wall
second at most) and hands each terminal its reports through a bounded queue.
Bounds: ``connect_concurrency`` connections being opened at once, ``window``
unanswered frames per terminal, ``queue`` reports waiting per terminal (a
full queue holds the pacing loop back rather than dropping; simulated time
then slows down instead of advancing in ever larger steps). The fleet and the
timing jitter come from ``spec.seed``: the same seed sends the same positions.

Typical use::

    stats = await run_fleet_tcp(spec, TcpOptions(host="127.0.0.1", port=6808),
                                stop=stop, speedup=60)
    stats.summary()  # {"frames": ..., "acked": ..., "late": 0, "unacknowledged": 0, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import resource
import statistics
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import aio
from fleet.errors import FrameError, Misuse, ServiceUnavailable
from ingest.jt808.codec import decode_frame, encode_message
from ingest.jt808.downlink import (
    CONFIRMABLE_ALARMS,
    DOWNLINK_IDS,
    AlarmConfirm,
    Downlink,
    LocateQuery,
    LocateReply,
    ParamsQuery,
    ParamsReply,
    ParamsSet,
    ParamValue,
    TemporaryTracking,
    TerminalControl,
    TextMessage,
    decode_downlink,
    encode_uplink_reply,
)
from ingest.jt808.frame import build_frame
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import (
    Authentication,
    Heartbeat,
    Location,
    LocationBatch,
    Logout,
    Message,
    PlatformReply,
    RawMessage,
    Registration,
    RegistrationReply,
    TerminalReply,
)
from ingest.jt808.session import ProvisionedTerminal, Provisioning
from simulator.fleet import Fleet, FleetSpec, terminal_id, vehicle_id
from simulator.pacing import TICK_S, hold_rate, sim_window, wait_tick
from simulator.scenario import plate
from simulator.wire import Columns, groups

__all__ = [
    "Report",
    "TcpOptions",
    "TerminalClient",
    "TerminalStats",
    "parse_hostport",
    "provisioning",
    "reports",
    "run_fleet_tcp",
]

log = logging.getLogger(__name__)

# A 0x0704 item is about 36 bytes (28-byte block, mileage item, length); 20 stay well
# inside the 1,023-byte body limit (JT/T 808-2013 table 2, 10-bit length).
BATCH_MAX = 20
_FD_RESERVE = 64  # descriptors kept for the broker client, the log, the event loop


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_hostport(text: str, default_port: int = 6808) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"HOST"`` or ``":PORT"`` → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text or "127.0.0.1", default_port
    try:
        number = int(port)
    except ValueError:
        raise Misuse(f"not HOST:PORT: {text!r}") from None
    if not 0 < number < 65536:
        raise Misuse(f"port out of range in {text!r}")
    return host or "127.0.0.1", number


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """Where the gateway is and how the simulated terminals behave."""

    host: str = "127.0.0.1"
    port: int = 6808
    version: int = 2013  # header and body edition: 2011, 2013 or 2019
    heartbeat_s: float = 60.0  # wall seconds; the gateway closes after 3 intervals of silence
    ack_timeout_s: float = 10.0  # a reply later than this is counted late
    stall_s: float = 30.0  # the window full this long: the gateway stopped answering, reconnect
    window: int = 8  # frames sent and not yet answered, per terminal
    queue: int = 64  # reports waiting per terminal
    connect_concurrency: int = 100  # connections being opened at once
    connect_attempts: int = 5
    reconnect_on_backfill: bool = True  # a blind area ends: new connection, authenticate again
    batch_max: int = BATCH_MAX  # locations per 0x0704 frame
    codes_file: str | None = None  # JSON {phone: auth code}: kept between runs, like flash
    # Latch the alarm bits a platform confirms by hand (SOS, ...) from their first report
    # until a 0x8203 clears them, as real terminals do; off, the reports say what the
    # scenario says (an SOS episode ends when the scenario's SOS ends).
    latch_alarms: bool = False

    def __post_init__(self) -> None:
        if self.version not in (2011, 2013, 2019):
            raise Misuse(f"version must be 2011, 2013 or 2019, got {self.version}")
        for name in ("heartbeat_s", "ack_timeout_s", "stall_s"):
            if getattr(self, name) <= 0:
                raise Misuse(f"{name} must be positive")
        for name in ("window", "queue", "connect_concurrency", "connect_attempts", "batch_max"):
            if getattr(self, name) < 1:
                raise Misuse(f"{name} must be at least 1")


@dataclass
class TerminalStats:
    """Counters over every terminal of a run. ``late`` and ``refused`` are among the replied."""

    terminals: int = 0
    authenticated: int = 0  # terminals that got through registration and authentication
    failed: int = 0  # terminals that never did; their reports are ``dropped``
    connects: int = 0
    reconnects: int = 0
    connect_errors: int = 0
    frames: int = 0  # every frame written
    registrations: int = 0
    heartbeats: int = 0
    locations: int = 0  # 0x0200 frames
    backfill_batches: int = 0  # 0x0704 frames
    positions: int = 0  # positions in 0x0200 and 0x0704 frames
    backfill_positions: int = 0
    logouts: int = 0
    replied: int = 0  # frames answered (0x8001 / 0x8100)
    acked: int = 0  # answered with result 0
    refused: int = 0  # answered with another result
    late: int = 0  # answered after ack_timeout_s
    unacknowledged: int = 0  # never answered: connection lost, or still waiting at the end
    unexpected: int = 0  # replies to no frame of ours, or undecodable frames from the gateway
    commands: int = 0  # platform commands received (and answered)
    dropped: int = 0  # positions of a terminal that could not log in or reconnect
    unsent: int = 0  # positions still queued when the run was stopped or its time was up
    latency_ms: array[float] = field(default_factory=lambda: array("d"))

    def summary(self) -> dict[str, Any]:
        """The counters and the reply latency (p50, p99, max; ms) as one flat dict."""
        out: dict[str, Any] = {
            k: v for k, v in vars(self).items() if k != "latency_ms" and isinstance(v, int)
        }
        lat = sorted(self.latency_ms)
        if lat:
            out["reply_p50_ms"] = round(statistics.median(lat), 2)
            out["reply_p99_ms"] = round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2)
            out["reply_max_ms"] = round(lat[-1], 2)
        return out


# 0x8100 results (JT/T 808-2019 table 9)
_REGISTRATION_RESULTS = {
    1: "vehicle already registered",
    2: "no such vehicle (plate/VIN/maker not as provisioned)",
    3: "terminal already registered (keep its code, or `fleetwatch gateway reset-terminal`)",
    4: "no such terminal (not provisioned)",
}


@dataclass(slots=True)
class _Pending:
    msg_id: int
    sent: float  # monotonic seconds
    waiter: asyncio.Future[Message] | None


class TerminalClient:
    """One terminal's TCP connection to the gateway.

    Call :meth:`connect`, then :meth:`register` (once per terminal: it keeps
    the authentication code) and :meth:`authenticate`; then :meth:`send_location`,
    :meth:`send_batch` and :meth:`heartbeat` in any order; :meth:`close` last.
    :meth:`reconnect` opens a new connection and authenticates again with the
    code kept. A send waits only for room in the window, not for the reply;
    :meth:`drain` waits for the replies.
    """

    def __init__(
        self,
        phone: str,
        opts: TcpOptions,
        stats: TerminalStats | None = None,
        *,
        plate: str = "",
        connecting: asyncio.Semaphore | None = None,
    ) -> None:
        self.phone = phone
        self.plate = plate
        self.opts = opts
        self.stats = stats if stats is not None else TerminalStats()
        self.auth_code: str | None = None
        self.serial = -1
        self._connecting = connecting or asyncio.Semaphore(1)
        self._window = asyncio.Semaphore(opts.window)
        self._pending: dict[int, _Pending] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.online = False  # authenticated on the current connection
        self._retry_at = 0.0  # after a failed reconnect, no new attempt before this
        self._backoff = 0.5
        # What a terminal keeps of the platform's commands (see the module docstring).
        self.commands: list[Downlink] = []
        self.texts: list[TextMessage] = []
        self.latched_alarm = 0
        self._source_alarm = 0
        self.last_location: Location | None = None
        self.params: dict[int, ParamValue] = {
            0x0001: round(opts.heartbeat_s),  # JT/T 808-2019 table 12
            0x0029: 30,
            0x0055: 120,
            0x0056: 10,
        }
        self.tracking: TemporaryTracking | None = None
        self.tracked = 0  # reports sent for temporary tracking
        self._tracker: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    @property
    def pending(self) -> int:
        """Frames sent on this connection and not answered yet."""
        return len(self._pending)

    async def connect(self) -> None:
        """Open the connection; ``connect_attempts`` tries with backoff, then
        :class:`ServiceUnavailable`."""
        st = self.stats
        delay = 0.2
        for attempt in range(self.opts.connect_attempts):
            try:
                async with self._connecting:
                    reader, writer = await aio.wait_for(
                        asyncio.open_connection(self.opts.host, self.opts.port), 10
                    )
            except (OSError, TimeoutError) as exc:
                st.connect_errors += 1
                if attempt + 1 == self.opts.connect_attempts:
                    where = f"JT/T 808 gateway {self.opts.host}:{self.opts.port}"
                    raise ServiceUnavailable(where, repr(exc)) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            st.connects += 1
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader))
            return

    async def register(self) -> str:
        """0x0100 → 0x8100; keep and return the authentication code."""
        # Manufacturer, model and terminal id short enough for every edition's layout.
        msg = Registration(0, 0, "FWSIM", "FWSIM-1", self.phone[-7:], 1, self.plate)
        reply = await self._request(msg)
        self.stats.registrations += 1
        if not isinstance(reply, RegistrationReply) or reply.result != 0:
            result = getattr(reply, "result", None)
            why = _REGISTRATION_RESULTS.get(result, f"result {result}")  # type: ignore[arg-type]
            raise ServiceUnavailable(
                "JT/T 808 gateway", f"registration of {self.phone} refused: {why}"
            )
        self.auth_code = reply.auth_code
        return reply.auth_code

    async def login(self) -> None:
        """Authenticate with the kept code; register first if there is none or it is
        refused (as a terminal does). :class:`ServiceUnavailable` if either is refused."""
        if self.auth_code is not None:
            with contextlib.suppress(ServiceUnavailable):
                await self.authenticate()
                return
        await self.register()
        await self.authenticate()

    async def authenticate(self) -> None:
        """0x0102 with the kept code → 0x8001 result 0, or :class:`ServiceUnavailable`."""
        if self.auth_code is None:
            raise Misuse("register() before authenticate()")
        reply = await self._request(Authentication(self.auth_code))
        if not isinstance(reply, PlatformReply) or reply.result != 0:
            raise ServiceUnavailable("JT/T 808 gateway", f"authentication of {self.phone} refused")
        self.online = True

    async def reconnect(self) -> None:
        """Wait for the replies due, close, connect again and authenticate with the kept code.

        After a failed attempt the next one waits 0.5 s, doubling to 30 s; an attempt
        before then fails at once (:class:`ServiceUnavailable`).
        """
        if time.monotonic() < self._retry_at:
            raise ServiceUnavailable("JT/T 808 gateway", f"{self.phone} reconnects later")
        await self.drain()
        await self._disconnect()
        self.stats.reconnects += 1
        try:
            await self.connect()
            await self.authenticate()
        except (ConnectionError, ServiceUnavailable):
            await self._disconnect()
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(2 * self._backoff, 30.0)
            raise
        self._backoff = 0.5

    def _with_latch(self, loc: Location) -> Location:
        """The confirmable alarm bits latch on their rising edge and stay until 0x8203."""
        if not self.opts.latch_alarms:
            return loc
        rising = loc.alarm & ~self._source_alarm & CONFIRMABLE_ALARMS
        self._source_alarm = loc.alarm
        self.latched_alarm |= rising
        alarm = (loc.alarm & ~CONFIRMABLE_ALARMS) | self.latched_alarm
        return dataclasses.replace(loc, alarm=alarm) if alarm != loc.alarm else loc

    async def send_location(self, loc: Location) -> None:
        loc = self._with_latch(loc)
        self.last_location = loc
        await self._send(loc)
        self.stats.locations += 1
        self.stats.positions += 1

    async def send_batch(self, locs: Sequence[Location], *, backfill: bool = True) -> None:
        """0x0704 frames of at most ``batch_max`` locations; type 1 (blind area) by default."""
        for k in range(0, len(locs), self.opts.batch_max):
            chunk = tuple(locs[k : k + self.opts.batch_max])
            await self._send(LocationBatch(1 if backfill else 0, chunk))
            self.stats.backfill_batches += 1
            self.stats.positions += len(chunk)
            if backfill:
                self.stats.backfill_positions += len(chunk)

    async def heartbeat(self) -> None:
        await self._send(Heartbeat())
        self.stats.heartbeats += 1

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every frame sent so far is answered (at most ``timeout``, default
        ``ack_timeout_s``); True if none is left waiting."""
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(self._idle.wait(), timeout or self.opts.ack_timeout_s)
        return not self._pending

    async def close(self, *, logout: bool = True) -> None:
        """Log out (0x0003, answered before closing) unless told not to, then close.
        Frames still unanswered are counted ``unacknowledged``."""
        if logout and self.connected:
            with contextlib.suppress(ConnectionError, ServiceUnavailable):
                await self._send(Logout())
                self.stats.logouts += 1
        await self.drain()
        await self._disconnect()

    async def abort(self) -> None:
        """Close at once, without logging out or waiting for replies."""
        await self._disconnect()

    # -- internals ------------------------------------------------------------------------

    async def _request(self, msg: Message) -> Message:
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        await self._send(msg, waiter)
        try:
            return await aio.wait_for(waiter, self.opts.ack_timeout_s)
        except TimeoutError:
            raise ServiceUnavailable(
                "JT/T 808 gateway", f"no reply to {type(msg).__name__} of {self.phone}"
            ) from None

    async def _send(self, msg: Message, waiter: asyncio.Future[Message] | None = None) -> None:
        try:
            await aio.wait_for(self._window.acquire(), self.opts.stall_s)
        except TimeoutError:
            # A platform that stopped answering: the caller reconnects or gives up.
            raise ServiceUnavailable(
                "JT/T 808 gateway", f"{self.pending} frames of {self.phone} unanswered"
            ) from None
        writer = self._writer
        if writer is None or writer.is_closing():
            self._window.release()
            raise ConnectionError(f"terminal {self.phone} is not connected")
        self.serial = (self.serial + 1) & 0xFFFF
        frame = encode_message(msg, phone=self.phone, serial=self.serial, version=self.opts.version)
        msg_id = int.from_bytes(frame[1:3], "big")  # JT/T 808 never escapes a message id
        self._pending[self.serial] = _Pending(msg_id, time.monotonic(), waiter)
        self._idle.clear()
        writer.write(frame)
        self.stats.frames += 1
        try:
            await aio.wait_for(writer.drain(), self.opts.stall_s)
        except TimeoutError:
            raise ServiceUnavailable("JT/T 808 gateway", f"{self.phone}: not reading") from None

    def _settle(self, serial: int, msg_id: int | None, reply: Message, result: int) -> None:
        p = self._pending.get(serial)
        if p is None or (msg_id is not None and p.msg_id != msg_id):
            self.stats.unexpected += 1
            return
        del self._pending[serial]
        self._window.release()
        if not self._pending:
            self._idle.set()
        st = self.stats
        waited = time.monotonic() - p.sent
        st.replied += 1
        st.latency_ms.append(waited * 1000.0)
        if waited > self.opts.ack_timeout_s:
            st.late += 1
        if result == 0:
            st.acked += 1
        else:
            st.refused += 1
        if p.waiter is not None and not p.waiter.done():
            p.waiter.set_result(reply)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        splitter = FrameSplitter()
        try:
            while data := await reader.read(65536):
                for raw in splitter.feed(data):
                    try:
                        msg = decode_frame(raw).message
                    except FrameError:
                        self.stats.unexpected += 1
                        continue
                    if isinstance(msg, PlatformReply):
                        self._settle(msg.reply_serial, msg.reply_msg_id, msg, msg.result)
                    elif isinstance(msg, RegistrationReply):
                        self._settle(msg.reply_serial, None, msg, msg.result)
                    elif isinstance(msg, RawMessage) and msg.msg_id in DOWNLINK_IDS:
                        self._command(raw, msg)
                    else:
                        self.stats.unexpected += 1
        except (ConnectionError, OSError):
            pass
        finally:
            self._lose()

    def _command(self, raw: bytes, msg: RawMessage) -> None:
        """Carry out a platform command and answer it (no window: replies are not answered)."""
        header = decode_frame(raw).header
        try:
            cmd = decode_downlink(msg.msg_id, msg.body, version=header.version)
        except FrameError:
            self._answer(TerminalReply(header.serial, msg.msg_id, 2))  # 2: bad message
            return
        self.commands.append(cmd)
        self.stats.commands += 1
        if isinstance(cmd, LocateQuery):
            loc = self.last_location or Location(lat=0.0, lon=0.0, time_ms=_now_ms())
            self._answer_specific(LocateReply(header.serial, loc))
            return
        if isinstance(cmd, ParamsQuery):
            ids = cmd.ids or tuple(sorted(self.params))
            items = tuple((i, self.params[i]) for i in ids if i in self.params)
            self._answer_specific(ParamsReply(header.serial, items))
            return
        if isinstance(cmd, TextMessage):
            self.texts.append(cmd)
        elif isinstance(cmd, AlarmConfirm):
            self.latched_alarm &= ~cmd.alarm_types
        elif isinstance(cmd, TemporaryTracking):
            self._track(cmd)
        elif isinstance(cmd, ParamsSet):
            self.params.update(cmd.params)
        elif isinstance(cmd, TerminalControl):
            pass  # a simulated terminal does not reset; it says it did
        self._answer(TerminalReply(header.serial, msg.msg_id, 0))

    def _answer(self, reply: TerminalReply) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        self.serial = (self.serial + 1) & 0xFFFF
        writer.write(
            encode_message(reply, phone=self.phone, serial=self.serial, version=self.opts.version)
        )
        self.stats.frames += 1

    def _answer_specific(self, reply: LocateReply | ParamsReply) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        msg_id, body = encode_uplink_reply(reply, version=self.opts.version)
        self.serial = (self.serial + 1) & 0xFFFF
        writer.write(
            build_frame(
                msg_id, body, phone=self.phone, serial=self.serial, version=self.opts.version
            )
        )
        self.stats.frames += 1

    def _track(self, cmd: TemporaryTracking) -> None:
        if self._tracker is not None:
            self._tracker.cancel()
            self._tracker = None
        self.tracking = cmd if cmd.interval_s > 0 else None
        if self.tracking is not None:
            self._tracker = asyncio.get_running_loop().create_task(self._tracking(cmd))

    async def _tracking(self, cmd: TemporaryTracking) -> None:
        """The last position every ``interval_s`` (time moved on) until ``validity_s`` passed."""
        until = time.monotonic() + cmd.validity_s
        while time.monotonic() + cmd.interval_s <= until:
            await asyncio.sleep(cmd.interval_s)
            base = self.last_location
            if base is None or not self.online:
                continue
            with contextlib.suppress(ConnectionError, ServiceUnavailable):
                await self.send_location(dataclasses.replace(base, time_ms=_now_ms()))
                self.tracked += 1
        self.tracking = None

    def _lose(self) -> None:
        """The connection ended: what is still waiting will never be answered."""
        pending, self._pending = self._pending, {}
        self.stats.unacknowledged += len(pending)
        for p in pending.values():
            self._window.release()
            if p.waiter is not None and not p.waiter.done():
                p.waiter.set_exception(ConnectionError(f"terminal {self.phone}: connection lost"))
        self._idle.set()
        self.online = False
        if self._writer is not None:
            self._writer.close()

    async def _disconnect(self) -> None:
        if self._tracker is not None:
            self._tracker.cancel()
            self._tracker = None
        writer, task = self._writer, self._reader_task
        self._writer = self._reader_task = None
        self.online = False
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await aio.wait_for(writer.wait_closed(), 2)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the fleet as terminals -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What one terminal sends for one group of rows: a live 0x0200, or a back-fill run."""

    vehicle: int
    backfill: bool
    locations: tuple[Location, ...]


def reports(cols: Columns) -> list[Report]:
    """The columns of :meth:`Fleet.step` as per-terminal reports, in sending order. Pure."""
    rows = {k: v.tolist() for k, v in cols.items()}

    def loc(i: int) -> Location:
        return Location(
            lat=rows["lat"][i],
            lon=rows["lon"][i],
            time_ms=rows["ts"][i],
            speed_kmh=rows["speed"][i],
            heading=rows["heading"][i],
            alt_m=rows["alt"][i],
            alarm=rows["alarm"][i],
            status=rows["status"][i],
            mileage_km=rows["mileage"][i],
        )

    return [
        Report(rows["vehicle"][a], bool(rows["backfill"][a]), tuple(loc(i) for i in range(a, b)))
        for a, b in groups(cols)
    ]


def provisioning(spec: FleetSpec) -> Provisioning:
    """The simulated terminals as the registry knows them (the vehicles of
    :func:`simulator.scenario.fleet_config`), for a gateway that serves them."""
    return Provisioning(
        ProvisionedTerminal(terminal_id(i), vehicle_id(i), plate(i)) for i in range(spec.vehicles)
    )


def _load_codes(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        codes = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Misuse(f"codes_file {path}: not a JSON object of phone → code ({exc})") from exc
    if not isinstance(codes, dict):
        raise Misuse(f"codes_file {path}: not a JSON object of phone → code")
    return {str(k): str(v) for k, v in codes.items()}


def _save_codes(path: str | None, clients: Sequence[TerminalClient]) -> None:
    if path is None:
        return
    codes = _load_codes(path)
    codes.update({c.phone: c.auth_code for c in clients if c.auth_code is not None})
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(codes, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _check_descriptors(n: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and n + _FD_RESERVE > soft:
        raise Misuse(
            f"{n} terminals need {n + _FD_RESERVE} file descriptors, the limit is {soft}: "
            "raise it (ulimit -n) or simulate fewer vehicles"
        )


async def _terminal(
    client: TerminalClient,
    inbox: asyncio.Queue[Report | None],
    ready: asyncio.Future[bool],
    heartbeat_phase: float,
) -> None:
    """One terminal for the whole run: log in, send what the inbox brings until None.

    Whatever happens short of cancellation, the inbox is read to its end, so the pacing
    loop never waits on a terminal that is gone; reports not sent are counted ``dropped``.
    """
    st = client.stats
    beats: asyncio.Task[None] | None = None
    leaving = asyncio.Event()
    ended = False
    try:
        try:
            await client.connect()
            await client.login()
        except (ConnectionError, ServiceUnavailable) as exc:
            log.warning("terminal %s could not log in: %s", client.phone, exc)
            st.failed += 1
            await client.abort()
            return
        st.authenticated += 1
        ready.set_result(True)
        beats = asyncio.create_task(_heartbeats(client, heartbeat_phase, leaving))
        while (item := await inbox.get()) is not None:
            await _send_report(client, item)
        ended = True
        leaving.set()
        await asyncio.wait([beats], timeout=client.opts.stall_s + 1)
        await client.close()
    except asyncio.CancelledError:
        ended = True
        raise
    except Exception:
        log.exception("terminal %s failed", client.phone)
        await client.abort()
    finally:
        leaving.set()
        if beats is not None and not beats.done():
            beats.cancel()
        if not ready.done():
            ready.set_result(False)
        while not ended:
            rest = await inbox.get()
            if rest is None:
                ended = True
            else:
                st.dropped += len(rest.locations)


async def _send_report(client: TerminalClient, item: Report) -> None:
    """Send one report; reconnect once if the connection is gone or stopped answering."""
    # After a blind area the network is back: a terminal opens a new connection.
    renew = not client.online or (item.backfill and client.opts.reconnect_on_backfill)
    for attempt in (1, 2):
        try:
            if renew:
                await client.reconnect()
            if item.backfill or len(item.locations) > 1:
                await client.send_batch(item.locations, backfill=item.backfill)
            else:
                await client.send_location(item.locations[0])
            return
        except (ConnectionError, ServiceUnavailable) as exc:
            renew = True
            if attempt == 2:
                log.debug("terminal %s dropped a report: %s", client.phone, exc)
                client.stats.dropped += len(item.locations)


async def _heartbeats(client: TerminalClient, phase: float, leaving: asyncio.Event) -> None:
    """0x0002 every ``heartbeat_s`` of wall time, first after ``phase`` of an interval, until
    ``leaving`` is set. (An event, not cancellation: on Python 3.11 ``wait_for`` can swallow a
    cancel that arrives as its inner wait completes, and the loop would run on.)"""
    interval = client.opts.heartbeat_s
    delay = phase * interval
    while not leaving.is_set():
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(leaving.wait(), delay)
        delay = interval
        if client.online and not leaving.is_set():
            with contextlib.suppress(ConnectionError, ServiceUnavailable):
                await client.heartbeat()


async def _put(
    q: asyncio.Queue[Report | None],
    item: Report,
    stop: asyncio.Event,
    deadline: float | None,
    clock: Callable[[], float],
) -> bool:
    """Queue ``item``, waiting for room while the run goes on; False if it was stopped."""
    while True:
        if stop.is_set() or (deadline is not None and clock() >= deadline):
            return False
        if not q.full():
            q.put_nowait(item)
            return True
        wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - clock()))
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(q.put(item), wait)
            return True


async def _logins(ready: list[asyncio.Future[bool]], stop: asyncio.Event, timeout: float) -> None:
    """Wait until every terminal logged in or gave up, or ``stop`` is set."""
    if not ready:
        return
    # asyncio.wait never cancels what it waits for: the terminals resolve their own futures.
    stopping = asyncio.ensure_future(stop.wait())
    logins = asyncio.ensure_future(asyncio.wait(ready))
    try:
        await asyncio.wait({stopping, logins}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        logins.cancel()
    if stop.is_set():
        return
    if not all(f.done() for f in ready):
        raise ServiceUnavailable("JT/T 808 gateway", f"terminals not logged in after {timeout} s")
    if not any(f.result() for f in ready):
        raise ServiceUnavailable("JT/T 808 gateway", "no terminal could log in")


async def run_fleet_tcp(
    spec: FleetSpec,
    opts: TcpOptions = TcpOptions(),
    *,
    stop: asyncio.Event,
    speedup: float = 1.0,
    duration_s: float | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_rate: float | None = None,
    fleet: Fleet | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
    stats: TerminalStats | None = None,
    login_timeout_s: float = 60.0,
) -> TerminalStats:
    """Drive the fleet's terminals through the gateway until ``stop`` is set, ``duration_s``
    of wall time passed or simulated time reached ``end_ms``; return the counters.

    Every terminal logs in first (at most ``login_timeout_s``); the simulated clock starts
    after that. :class:`ServiceUnavailable` if none could (the gateway is not there); the
    reports of terminals that could not log in are counted ``dropped``.
    ``on_step(sim_now_ms, reports)`` follows each tick's hand-over to the terminals,
    ``on_progress(reports)`` too; ``max_rate`` caps reports per wall second.
    The last replies are waited for (``ack_timeout_s``) before the connections close.
    """
    st = stats if stats is not None else TerminalStats()
    n = spec.vehicles
    _check_descriptors(n)
    rng = random.Random(f"{spec.seed}:tcp")
    connecting = asyncio.Semaphore(opts.connect_concurrency)
    clients = [
        TerminalClient(terminal_id(i), opts, st, plate=plate(i), connecting=connecting)
        for i in range(n)
    ]
    codes = _load_codes(opts.codes_file)
    for c in clients:
        c.auth_code = codes.get(c.phone)
    st.terminals += n
    loop = asyncio.get_running_loop()
    inboxes: list[asyncio.Queue[Report | None]] = [asyncio.Queue(opts.queue) for _ in range(n)]
    ready: list[asyncio.Future[bool]] = [loop.create_future() for _ in range(n)]
    tasks = [
        asyncio.create_task(_terminal(c, q, r, rng.random()))
        for c, q, r in zip(clients, inboxes, ready, strict=True)
    ]
    sent = 0
    sim_now = 0
    try:
        try:
            await _logins(ready, stop, login_timeout_s)
        finally:
            _save_codes(opts.codes_file, clients)
        wall0 = clock()
        sim0, end_ms = sim_window(wall0, speedup, duration_s, start_ms, end_ms)
        fleet = fleet or Fleet(spec, sim0)
        # Simulated time advances at most two ticks' worth per tick: when the terminals
        # cannot keep up, the run slows down instead of stepping ever larger chunks.
        max_step_ms = max(1, round(2 * TICK_S * speedup * 1000))
        sim_now = sim0
        deadline = None if duration_s is None else wall0 + duration_s
        k = 0
        while not stop.is_set():
            wall = clock()
            if deadline is not None and wall >= deadline:
                break
            target = sim0 + int((wall - wall0) * speedup * 1000)
            sim_now = min(target, sim_now + max_step_ms)
            last = end_ms is not None and sim_now >= end_ms
            if last and end_ms is not None:
                sim_now = end_ms
            for rep in reports(fleet.step(sim_now)):
                if not await _put(inboxes[rep.vehicle], rep, stop, deadline, clock):
                    last = True  # stopped, or the time is up
                    break
                sent += 1
                if sent % 256 == 0:
                    await asyncio.sleep(0)  # let the terminals send while the queues fill
                if sent % 10 == 0:
                    await hold_rate(sent, max_rate, wall0, clock)
            if on_step is not None:
                on_step(sim_now, sent)
            if on_progress is not None:
                on_progress(sent)
            if last:
                break
            k += 1
            await wait_tick(stop, wall0, k, clock)
    finally:
        cut = stop.is_set() or (end_ms is None or sim_now < end_ms)
        for q in inboxes:
            # Cut short (stop, duration): what is still queued is not sent.
            while cut and not q.empty():
                item = q.get_nowait()
                st.unsent += len(item.locations) if item is not None else 0
            await q.put(None)
        # Each terminal sends what it still has (cut: at most the report in hand), then
        # waits ack_timeout_s for its replies; a connection may stall stall_s on the way.
        _, late = await asyncio.wait(tasks, timeout=2 * opts.stall_s + 2 * opts.ack_timeout_s)
        for t in late:
            t.cancel()
        if late:
            log.error("%d terminals did not finish; cancelled", len(late))
            await asyncio.wait(late, timeout=5)
    return st
