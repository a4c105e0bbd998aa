"""One terminal's connection to the gateway, without I/O (the sans-I/O core of the gateway).

:class:`TerminalSession` is fed the bytes a terminal sent and the time, and
answers with what to do: frames to write back (:class:`Send`), payloads to
publish before the replies may go out (:class:`Publish`), questions for the
registration store (:class:`Register`, :class:`Authenticate`) and
:class:`Close`. It never awaits, never reads a clock, never touches a socket;
:mod:`ingest.jt808.tcp` is the thin asyncio adapter around it. Call, per read,
:meth:`~TerminalSession.receive_data`, then :meth:`~TerminalSession.receive_frame`
for each frame it returned, acting on each answer before the next frame; call
:meth:`~TerminalSession.poll` when :attr:`~TerminalSession.deadline` passes.

The rules it enforces:

- **Who may speak.** Registration (0x0100) only for a terminal the registry
  knows (:class:`Provisioning`), optionally carrying the provisioned plate, VIN
  or maker; answered with the 0x8100 result codes of JT/T 808-2019 (table 9:
  0 success, 1 vehicle already registered, 2 no such vehicle, 3 terminal already
  registered, 4 no such terminal). The registration store claims a terminal
  once; another 0x0100 is refused (3) until an operator resets it. The auth
  code is an HMAC of the terminal's phone and its registration number, so it
  is the same on every gateway node and after a restart, and a reset revokes
  the old code.
- **One connection is one terminal.** The first valid frame binds the
  connection to its phone; a frame for any other phone is refused and closes it.
- **Limits.** The idle timer counts accepted frames, not bytes: no accepted
  frame within ``first_frame_timeout_s`` of connecting (or the idle timeout, if
  shorter), or within
  ``idle_timeout_s`` of the last one, closes the connection; so do more than
  ``max_junk_bytes`` outside any frame, a frame over ``max_frame_bytes``, and
  ``max_bad_frames`` bad or refused frames in a row. Unfinished split messages
  are bounded in count, bytes and age by :class:`~ingest.jt808.reassembly.Reassembler`.
- **Commands** (downlink, :mod:`ingest.jt808.commands`). Give a command with
  :meth:`~TerminalSession.command` once the terminal is authenticated; one is out
  at a time, the others wait in arrival order. The session numbers it, matches the
  terminal's 0x0001 general reply (or the specific 0x0201 / 0x0104) by serial and
  message id, retransmits the same frame after ``T, T×2, T×2×3 …`` seconds
  (JT/T 808-2019 §7.5.1) and gives up after ``command_retransmissions``; a command
  whose expiry passes before it was sent expires. What to write and what to report
  comes out of :meth:`~TerminalSession.drain_downlink` (call it after each call
  into the session); :meth:`~TerminalSession.unfinished` hands back what is left
  when the connection ends. Replies are published but never answered with 0x8001.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from fleet.errors import FrameError, Misuse
from ingest.jt808.codec import Decoded, decode_frame, encode_platform_reply
from ingest.jt808.codec import encode_registration_reply as _registration_reply
from ingest.jt808.commands import Command, answers, expected_reply, reply_timeouts
from ingest.jt808.config import GatewayConfig
from ingest.jt808.downlink import (
    MSG_LOCATE_REPLY,
    MSG_PARAMS_REPLY,
    LocateReply,
    decode_uplink_reply,
    encode_downlink_frame,
)
from ingest.jt808.frame import Header
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import (
    MSG_AUTHENTICATION,
    MSG_LOGOUT,
    MSG_REGISTRATION,
    MSG_TERMINAL_REPLY,
    Authentication,
    RawMessage,
    Registration,
    SplitPart,
    TerminalReply,
)
from ingest.jt808.reassembly import Reassembler

__all__ = [
    "REG_NO_TERMINAL",
    "REG_NO_VEHICLE",
    "REG_OK",
    "REG_TERMINAL_TAKEN",
    "REG_VEHICLE_TAKEN",
    "Action",
    "Authenticate",
    "Close",
    "CommandReport",
    "GatewayStats",
    "ProvisionedTerminal",
    "Provisioning",
    "Publish",
    "Register",
    "Send",
    "TerminalSession",
    "auth_code",
    "canonical_phone",
]

log = logging.getLogger("fleetwatch.gateway")

# 0x8001 results (JT/T 808-2019 §8.2, table 5)
REPLY_OK, REPLY_FAIL, REPLY_BAD = 0, 1, 2
# 0x8100 results (JT/T 808-2019 §8.6, table 9)
REG_OK = 0
REG_VEHICLE_TAKEN = 1  # vehicle already registered (one terminal per vehicle: never sent)
REG_NO_VEHICLE = 2  # no such vehicle in the database: what it carries is not as provisioned
REG_TERMINAL_TAKEN = 3  # terminal already registered: an operator must reset it first
REG_NO_TERMINAL = 4  # no such terminal in the database


def canonical_phone(phone: str) -> str:
    """A terminal's phone without the BCD padding: 2013 headers carry 12 digits, 2019 20."""
    return phone.lstrip("0") or "0"


def auth_code(secret: bytes, phone: str, registration: int) -> str:
    """The 0x8100 auth code of ``phone``'s ``registration``-th registration.

    Bound to the terminal (its phone) and to this registration: the same on every
    node sharing ``secret`` and after a restart; a reset and new registration
    changes it, so a code handed to an impostor stops working.
    """
    msg = f"{canonical_phone(phone)}:{registration}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ProvisionedTerminal:
    """A terminal the registry knows: its phone, its vehicle and what it must carry."""

    phone: str
    vehicle: str
    plate: str
    vin: str | None = None
    maker: str | None = None


class _VehicleLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def plate(self) -> str: ...
    @property
    def terminal(self) -> str: ...


class Provisioning:
    """The provisioned terminals by phone (leading zeros ignored)."""

    def __init__(self, terminals: Iterable[ProvisionedTerminal]) -> None:
        self._by_phone = {canonical_phone(t.phone): t for t in terminals}

    @classmethod
    def from_vehicles(cls, vehicles: Iterable[_VehicleLike]) -> Provisioning:
        """From the registry's vehicles (``fleet.model.VehicleConfig``).

        The vehicle records carry no VIN or terminal maker yet (the records issue adds
        them as ``vin`` and ``terminal_maker``); until then a ``registration_match`` of
        ``vin`` or ``maker`` refuses every terminal, which is the safe side.
        """
        return cls(
            ProvisionedTerminal(
                v.terminal,
                v.id,
                v.plate,
                vin=getattr(v, "vin", None),
                maker=getattr(v, "terminal_maker", None),
            )
            for v in vehicles
        )

    def refresh(self, terminals: Iterable[ProvisionedTerminal]) -> None:
        """Replace the provisioned terminals at once (the records changed: a vehicle
        registered, a terminal refitted or a car disposed). Sessions already open keep
        going; the next registration (0x0100) is checked against the new set."""
        self._by_phone = {canonical_phone(t.phone): t for t in terminals}

    def __len__(self) -> int:
        return len(self._by_phone)

    def get(self, phone: str) -> ProvisionedTerminal | None:
        return self._by_phone.get(canonical_phone(phone))


@dataclass
class GatewayStats:
    """Counters over every connection, for /metrics and tests. ``by_reason``: refusals,
    bad frames and closes by their reason (``bad_frames`` among them by decode reason)."""

    connections: int = 0
    connections_total: int = 0
    frames: int = 0
    published: int = 0
    bad_frames: int = 0
    unauthenticated: int = 0
    rate_limited: int = 0
    oversize: int = 0
    idle_closed: int = 0
    registrations: int = 0
    registrations_refused: int = 0
    auth_failed: int = 0
    other_terminal: int = 0
    junk_closed: int = 0
    split_dropped: int = 0
    commands_sent: int = 0  # transmissions, retransmissions included
    commands_acked: int = 0
    commands_failed: int = 0
    commands_timeout: int = 0
    commands_expired: int = 0
    replies_unmatched: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``frame`` to the terminal."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` (QoS 1) to the topic of ``phone`` as the header spells it;
    once the broker took it, write ``replies`` in order."""

    phone: str
    payload: bytes
    replies: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Register:
    """Ask the registration store to claim ``phone``; give the answer to
    :meth:`TerminalSession.registered`."""

    phone: str
    header: Header
    raw: bytes


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Ask the registration store for ``phone``'s current registration; give the answer
    to :meth:`TerminalSession.authenticate`."""

    phone: str
    code: str
    header: Header
    raw: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Write ``farewell`` (if any), then close the connection. ``reason`` is counted."""

    reason: str
    farewell: bytes = b""


@dataclass(frozen=True, slots=True)
class CommandReport:
    """Publish the new ``state`` of ``command`` (``result``: the 0x0001 result code;
    ``reply``: what a 0x0201 / 0x0104 said, as JSON)."""

    command: Command
    state: str
    result: int | None = None
    reply: dict[str, object] | None = None
    reason: str | None = None


Action = Send | Publish | Register | Authenticate | Close
Downlink = Send | CommandReport


class TerminalSession:
    """The gateway's side of one TCP connection. See the module docstring for the order of calls.

    ``now`` is monotonic seconds, from the adapter's clock.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        provisioning: Provisioning,
        secret: bytes,
        stats: GatewayStats,
        now: float,
        *,
        peer: object = None,
    ) -> None:
        self.cfg = cfg
        self.provisioning = provisioning
        self.stats = stats
        self.peer = peer
        self.phone: str | None = None  # canonical phone of the terminal on this connection
        self.authenticated = False
        self._secret = secret
        self._header_phone: str | None = None  # as in the first frame's header (fast path)
        self._serial = 0
        self._bad_in_row = 0
        self._splitter = FrameSplitter(cfg.max_frame_bytes)
        self._junk_at_accept = 0
        self._splits = Reassembler(
            max_pending=cfg.split_max_pending,
            max_bytes=cfg.split_max_bytes,
            max_age_ms=round(cfg.split_max_age_s * 1000),
        )
        # Never longer than the idle timeout: a connection has to earn its time.
        self._frame_deadline = now + min(cfg.first_frame_timeout_s, cfg.idle_timeout_s)
        self._tokens = float(cfg.rate_burst)
        self._tokens_at = now
        self.closed: Close | None = None
        self._version = 2013
        self._commands: list[Command] = []  # waiting behind the one out
        self._out: Command | None = None  # sent, its reply awaited
        self._down: list[Downlink] = []
        self._timeouts = reply_timeouts(cfg.command_reply_timeout_s, cfg.command_retransmissions)

    # -- input ---------------------------------------------------------------------------

    @property
    def deadline(self) -> float:
        """When :meth:`poll` must be called next (an accepted frame moves it later)."""
        split = self._splits.next_expiry_ms()
        due = self._frame_deadline if split is None else min(self._frame_deadline, split / 1000)
        if self._out is not None:
            due = min(due, self._out.reply_due)
        for c in self._commands:
            due = min(due, c.expires_at)
        return due

    def receive_data(self, data: bytes, now: float) -> list[bytes]:
        """Bytes read from the socket → complete frames, to pass to :meth:`receive_frame`.

        Sets :attr:`closed` (and returns no frames) when the bytes break a limit.
        """
        sp = self._splitter
        frames = sp.feed(data)
        if sp.errors:
            self.stats.oversize += len(sp.errors)
            sp.errors.clear()
            self._close("frame_too_long")
            return []
        if sp.junk_bytes - self._junk_at_accept > self.cfg.max_junk_bytes:
            self.stats.junk_closed += 1
            self._close("junk")
            return []
        return frames

    def poll(self, now: float) -> Close | None:
        """Timers: drop expired split messages; close an idle connection."""
        if len(self._splits):
            for err in self._splits.expire(round(now * 1000)):
                self.stats.split_dropped += 1
                self.stats.count(err.reason)
                log.info("%s %s: %s", self.peer, self.phone, err)
        if now >= self._frame_deadline:
            self.stats.idle_closed += 1
            self._close("idle")
        if self.closed is None:
            self._command_timers(now)
        return self.closed

    def rate_delay(self, now: float) -> float:
        """Token bucket (``rate_per_s``, ``rate_burst``): seconds to wait before the next frame."""
        cfg = self.cfg
        self._tokens = min(cfg.rate_burst, self._tokens + (now - self._tokens_at) * cfg.rate_per_s)
        self._tokens_at = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        self.stats.rate_limited += 1
        return -self._tokens / cfg.rate_per_s

    def receive_frame(self, raw: bytes, now: float) -> Action | None:
        """One frame → what to do, or None (a sub-package held until its message is whole)."""
        st = self.stats
        st.frames += 1
        try:
            d = decode_frame(raw, lenient=self.cfg.is_lenient)
        except FrameError as exc:
            st.bad_frames += 1
            st.count(exc.reason)
            log.debug("bad frame from %s: %s", self.peer, exc)
            self._bad_in_row += 1  # not answered: the header may be garbage
            if self._bad_in_row >= self.cfg.max_bad_frames:
                self._close("bad_frames")
            return self.closed
        h = d.header
        if h.phone != self._header_phone:
            other = self._bind(h)
            if other is not None:
                return other
        msg = d.message
        if h.msg_id == MSG_REGISTRATION and isinstance(msg, Registration):
            return self._registration(d, raw)
        if h.msg_id == MSG_AUTHENTICATION and isinstance(msg, Authentication):
            phone = canonical_phone(h.phone)
            if self.provisioning.get(phone) is None:  # no store lookup for strangers
                return self.authenticate(Authenticate(phone, msg.code, h, raw), None, now)
            return Authenticate(phone, msg.code, h, raw)
        if self.cfg.require_auth and not self.authenticated:
            st.unauthenticated += 1
            return self._refused(self._reply(h, REPLY_FAIL))
        if isinstance(msg, SplitPart):
            return self._split_part(d, raw, now)
        self._accept(now)
        if h.msg_id == MSG_TERMINAL_REPLY and isinstance(msg, TerminalReply):
            self._settle(msg.reply_serial, msg.reply_msg_id, msg.result, None, now)
            return Publish(h.phone, raw, ())  # a reply is not answered
        if h.msg_id in (MSG_LOCATE_REPLY, MSG_PARAMS_REPLY) and isinstance(msg, RawMessage):
            return self._specific_reply(h, msg, raw, now)
        if h.msg_id == MSG_LOGOUT:
            self.authenticated = False
        return Publish(h.phone, raw, (self._reply(h, REPLY_OK),))

    # -- answers from the registration store ----------------------------------------------

    def registered(self, req: Register, registration: int | None, now: float) -> Action:
        """The store claimed the terminal (its ``registration`` number), or None: taken."""
        h = req.header
        if registration is None:
            self.stats.registrations_refused += 1
            self.stats.count("already_registered")
            log.warning(
                "registration of terminal %s refused: already registered (reset it with "
                "`fleetwatch gateway reset-terminal %s`)",
                req.phone,
                req.phone,
            )
            return self._refused(self._registration_reply(h, REG_TERMINAL_TAKEN))
        self.stats.registrations += 1
        self._accept(now)
        code = auth_code(self._secret, req.phone, registration)
        return Publish(h.phone, req.raw, (self._registration_reply(h, REG_OK, code),))

    def authenticate(self, req: Authenticate, registration: int | None, now: float) -> Action:
        """The terminal's current registration number from the store, or None."""
        h = req.header
        ok = (
            registration is not None
            and self.provisioning.get(req.phone) is not None
            and hmac.compare_digest(req.code, auth_code(self._secret, req.phone, registration))
        )
        if not ok:
            self.stats.auth_failed += 1
            self.stats.count("auth_failed")
            log.info("authentication of terminal %s from %s failed", req.phone, self.peer)
            return self._refused(self._reply(h, REPLY_FAIL))
        self.authenticated = True
        self._accept(now)
        return Publish(h.phone, req.raw, (self._reply(h, REPLY_OK),))

    # -- commands (downlink) --------------------------------------------------------------

    @property
    def may_command(self) -> bool:
        """Whether commands may be given (:meth:`command`): the terminal is known and
        authenticated (or authentication is off and it sent a frame)."""
        if self.closed is not None or self.phone is None:
            return False
        return self.authenticated or not self.cfg.require_auth

    def command(self, cmd: Command, now: float) -> None:
        """Take a command for this terminal (state ``queued``); then :meth:`drain_downlink`."""
        if not self.may_command:
            raise Misuse(f"terminal {self.phone} is not ready for commands")
        self._commands.append(cmd)
        self._pump(now)

    def drain_downlink(self) -> list[Downlink]:
        """The frames to write (:class:`Send`) and the states to publish
        (:class:`CommandReport`) since the last call, in order."""
        out, self._down = self._down, []
        return out

    def unfinished(self, now: float) -> list[Command]:
        """On close: the commands not done, back in state ``queued`` (the one out is
        ``lost``), for the terminal's next connection."""
        out: list[Command] = []
        if self._out is not None:
            self._out.move("lost", now)
            out.append(self._out)
            self._out = None
        out.extend(self._commands)
        self._commands = []
        return out

    def _pump(self, now: float) -> None:
        while self._out is None and self._commands:
            cmd = self._commands.pop(0)
            if cmd.expires_at <= now:
                self._finish(cmd, "expire", now)
                continue
            assert self._header_phone is not None
            serial = self._next_serial()
            try:
                frame = encode_downlink_frame(
                    cmd.message, phone=self._header_phone, serial=serial, version=self._version
                )
            except Misuse as exc:  # e.g. text too long in GBK: the API should have said so
                self._finish(cmd, "refuse", now, reason=str(exc))
                continue
            cmd.serial, cmd.frame, cmd.msg_id = serial, frame, int.from_bytes(frame[1:3], "big")
            cmd.attempts = 0
            self._transmit(cmd, now)

    def _transmit(self, cmd: Command, now: float) -> None:
        cmd.reply_due = now + self._timeouts[cmd.attempts]
        cmd.attempts += 1
        cmd.move("send", now)
        self._out = cmd
        self.stats.commands_sent += 1
        self._down.append(Send(cmd.frame))
        self._down.append(CommandReport(cmd, "sent"))

    def _finish(
        self,
        cmd: Command,
        event: str,
        now: float,
        *,
        result: int | None = None,
        reply: dict[str, object] | None = None,
        reason: str | None = None,
    ) -> None:
        state = cmd.move(event, now)
        st = self.stats
        if state == "acked":
            st.commands_acked += 1
        elif state == "failed":
            st.commands_failed += 1
        elif state == "timeout":
            st.commands_timeout += 1
        elif state == "expired":
            st.commands_expired += 1
        self._down.append(CommandReport(cmd, state, result, reply, reason))

    def _command_timers(self, now: float) -> None:
        out = self._out
        if out is not None and now >= out.reply_due:
            if out.attempts < len(self._timeouts):
                self._transmit(out, now)  # the same frame, the same serial
            else:
                self._out = None
                self._finish(out, "no_reply", now, reason="no reply")
        for cmd in [c for c in self._commands if c.expires_at <= now]:
            self._commands.remove(cmd)
            self._finish(cmd, "expire", now)
        self._pump(now)

    def _settle(
        self,
        serial: int,
        msg_id: int | None,
        result: int | None,
        reply: dict[str, object] | None,
        now: float,
        reply_id: int = MSG_TERMINAL_REPLY,
    ) -> None:
        """A reply to ``serial``: match it with the command out, or count it unmatched."""
        cmd = self._out
        matches = (
            cmd is not None
            and cmd.serial == serial
            and expected_reply(cmd.message) == reply_id
            and (msg_id is None or msg_id == cmd.msg_id)
            and (reply_id == MSG_TERMINAL_REPLY or cmd.msg_id in answers(reply_id))
        )
        if not matches:
            self.stats.replies_unmatched += 1
            return
        assert cmd is not None
        self._out = None
        ok = result in (None, 0)
        # 0x0001 results (JT/T 808-2019 §8.1): 0 success, 1 failure, 2 bad message, 3 unsupported
        self._finish(
            cmd,
            "ack" if ok else "nack",
            now,
            result=result,
            reply=reply,
            reason=None
            if ok
            else {1: "failure", 2: "bad message", 3: "unsupported"}.get(
                result or 0, f"result {result}"
            ),
        )
        self._pump(now)

    def _specific_reply(self, h: Header, msg: RawMessage, raw: bytes, now: float) -> Action:
        try:
            reply = decode_uplink_reply(h.msg_id, msg.body)
        except FrameError as exc:
            self.stats.bad_frames += 1
            self.stats.count(exc.reason)
            return self._refused(self._reply(h, REPLY_BAD))
        if isinstance(reply, LocateReply):
            loc = reply.location
            detail: dict[str, object] = {
                "lat": loc.lat,
                "lon": loc.lon,
                "speed_kmh": loc.speed_kmh,
                "heading": loc.heading,
                "time_ms": loc.time_ms,
                "alarm": loc.alarm,
                "status": loc.status,
            }
        else:
            detail = {"params": reply.named()}
        self._settle(reply.reply_serial, None, None, detail, now, reply_id=h.msg_id)
        return Publish(h.phone, raw, ())

    # -- internals ------------------------------------------------------------------------

    def _bind(self, h: Header) -> Close | None:
        phone = canonical_phone(h.phone)
        if self.phone is None:
            self.phone = phone
            self._header_phone = h.phone
            self._version = h.version
            return None
        if phone == self.phone:
            return None  # the same terminal with another header edition's padding
        self.stats.other_terminal += 1
        log.warning(
            "connection %s of terminal %s sent a frame for %s: refused, closing",
            self.peer,
            self.phone,
            phone,
        )
        self._close("other_terminal", self._reply(h, REPLY_FAIL))
        return self.closed

    def _registration(self, d: Decoded, raw: bytes) -> Action:
        h, msg = d.header, d.message
        assert isinstance(msg, Registration)
        phone = canonical_phone(h.phone)
        known = self.provisioning.get(phone)
        if known is None:
            self.stats.registrations_refused += 1
            self.stats.count("unprovisioned")
            log.warning("registration of unknown terminal %s from %s refused", phone, self.peer)
            return self._refused(self._registration_reply(h, REG_NO_TERMINAL))
        wrong = self._mismatch(msg, known)
        if wrong:
            self.stats.registrations_refused += 1
            self.stats.count("registration_mismatch")
            log.warning("registration of terminal %s refused: %s not as provisioned", phone, wrong)
            return self._refused(self._registration_reply(h, REG_NO_VEHICLE))
        return Register(phone, h, raw)

    def _mismatch(self, msg: Registration, known: ProvisionedTerminal) -> str:
        # JT/T 808-2019 table 8: with plate colour 0 the plate field carries the VIN.
        carried = msg.plate.strip()
        for what in self.cfg.registration_match:
            if what == "plate" and (msg.plate_color == 0 or carried != known.plate):
                return "plate"
            if what == "vin" and (msg.plate_color != 0 or carried != (known.vin or "")):
                return "VIN"
            if what == "maker" and msg.manufacturer.strip() != (known.maker or ""):
                return "maker"
        return ""

    def _split_part(self, d: Decoded, raw: bytes, now: float) -> Action | None:
        try:
            whole = self._splits.add(d, raw, round(now * 1000))
        except FrameError as exc:
            self.stats.count(exc.reason)
            if exc.reason == "split":  # a duplicate: tell the terminal
                return self._refused(self._reply(d.header, REPLY_BAD))
            self.stats.split_dropped += 1
            log.info("%s %s: %s", self.peer, self.phone, exc)
            return None
        self._accept(now)
        if whole is None:
            return None
        # One payload, as the terminal sent it: ingest needs every part in one message.
        payload = b"".join(r for _, r in whole.parts)
        replies = tuple(self._reply(h, REPLY_OK) for h, _ in whole.parts)
        return Publish(d.header.phone, payload, replies)

    def _accept(self, now: float) -> None:
        self._bad_in_row = 0
        self._frame_deadline = now + self.cfg.idle_timeout_s
        self._junk_at_accept = self._splitter.junk_bytes

    def _refused(self, reply: bytes) -> Send | Close:
        """A refused frame: answer it, and close after ``max_bad_frames`` bad or refused
        frames in a row."""
        self._bad_in_row += 1
        if self._bad_in_row >= self.cfg.max_bad_frames:
            self._close("bad_frames", reply)
            assert self.closed is not None
            return self.closed
        return Send(reply)

    def _close(self, reason: str, farewell: bytes = b"") -> None:
        if self.closed is None:
            self.stats.count(f"closed_{reason}")
            self.closed = Close(reason, farewell)

    def _next_serial(self) -> int:
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial

    def _reply(self, h: Header, result: int) -> bytes:
        return encode_platform_reply(
            h.phone,
            self._next_serial(),
            reply_serial=h.serial,
            reply_msg_id=h.msg_id,
            result=result,
            version=h.version,
        )

    def _registration_reply(self, h: Header, result: int, code: str = "") -> bytes:
        return _registration_reply(
            h.phone,
            self._next_serial(),
            reply_serial=h.serial,
            result=result,
            auth_code=code,
            version=h.version,
        )
