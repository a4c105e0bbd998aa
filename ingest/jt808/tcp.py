"""``fleetwatch gateway``: JT/T 808 terminals over TCP → MQTT ``jt808/{phone}/up``.

The thin asyncio adapter around :class:`~ingest.jt808.session.TerminalSession`
(the sans-I/O core that decides everything: who may register and speak, the
limits, the replies). Per connection this module reads bytes into the
session, carries out what it answers — publish the raw frame with QoS 1 and
only once the broker has taken it (its PUBACK completes the future
:meth:`MqttPublisher.publish` returned) write the 0x8001 / 0x8100 reply; ask
the registration store (:mod:`ingest.jt808.registrations`); close — and wakes
the session at its deadline.

Commands (downlink): the gateway subscribes to ``{prefix}/+/down`` (QoS 1; JSON
``{"id", "command": <wire form>, "expires_at": ms}``, see
:mod:`ingest.jt808.commands`). A command for a terminal connected here goes to its
session; one for a terminal that is not is kept in an :class:`OfflineQueue` until
it connects (to this node) or the command expires. Every change of state is
published on ``{prefix}/{phone}/cmd-result`` (QoS 1) with this node's id; a node
that hears another node report a command drops its own queued copy.

Each connection is its own task with its own limits, so one slow or hostile
terminal never holds up another. If the broker goes away, terminals are
disconnected (their unacknowledged frames will be resent) and the gateway
reconnects with backoff.

Performance (5,000 terminals every 10 s, see ``python -m ingest.jt808.bench
--gateway``): the process runs on uvloop with :func:`tune_gc`; the MQTT side is
paho-mqtt driven directly by the loop (:class:`MqttPublisher`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import secrets
import signal
import socket
import sys
import threading
import time
import tomllib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import paho.mqtt.client as paho
import uvloop
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from fleet import aio
from fleet.cluster import partition_of, partition_topic
from fleet.errors import BadRecord, ConfigError, ServiceUnavailable
from ingest.jt808.commands import Command, OfflineQueue, from_wire, result_json
from ingest.jt808.config import GatewayConfig
from ingest.jt808.registrations import RegistrationStore, open_registrations
from ingest.jt808.session import (
    Action,
    Close,
    CommandReport,
    GatewayStats,
    Provisioning,
    Publish,
    Register,
    Send,
    TerminalSession,
    canonical_phone,
)

__all__ = [
    "Gateway",
    "GatewayStats",
    "MqttPublisher",
    "gateway_main",
    "reset_terminal",
    "run_gateway",
    "tune_gc",
]

log = logging.getLogger("fleetwatch.gateway")

# Await drain() only past this much unsent reply data: the common case stays a plain write.
_WRITE_HIGH_WATER = 64 * 1024
_KEEPALIVE_S = 60


class MqttPublisher:
    """A paho-mqtt client driven by the running event loop; QoS 1 publishes end in a future.

    :meth:`publish` returns a future that completes when the broker's PUBACK for
    that message arrives, or fails with :class:`ServiceUnavailable` when the
    connection is lost first. Call :meth:`connect` first, :meth:`close` last.

    Why not aiomqtt: its ``publish`` checks for a duplicate message id and counts
    pending calls by walking all of them (and logs a warning per publish past 10),
    and paho's own in-flight window rescans every message on each PUBACK; both are
    quadratic in the messages in flight and fell over at 5,000 terminals. Here
    paho's window is off (``max_inflight_messages_set(0)``) and a semaphore of
    ``mqtt_max_inflight`` bounds it instead, in O(1) per message.
    """

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._window = asyncio.Semaphore(cfg.mqtt_max_inflight)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.on_message: Callable[[str, bytes], None] | None = None
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.mqtt_client_id}-{secrets.token_hex(3)}",
            protocol=paho.MQTTv311,
        )
        c.max_inflight_messages_set(0)  # unbounded in paho; bounded by self._window
        c.max_queued_messages_set(0)
        if cfg.mqtt_username is not None:
            c.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._client = c

    @property
    def in_flight(self) -> int:
        return len(self._acks)

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the connection and wait for the broker's CONNACK."""
        where = f"MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port}"
        try:
            # connect() blocks (name lookup, TCP handshake): run it off the loop.
            await self._loop.run_in_executor(
                None, self._client.connect, self.cfg.mqtt_host, self.cfg.mqtt_port, _KEEPALIVE_S
            )
            await aio.wait_for(asyncio.shield(self._connack), timeout)
        except (OSError, TimeoutError) as exc:
            self._client.disconnect()
            raise ServiceUnavailable(where, repr(exc)) from exc
        self._misc = asyncio.create_task(self._misc_loop())

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Queue a QoS 1 publish; the future completes on its PUBACK.

        Wait for :meth:`slot` first so that at most ``mqtt_max_inflight`` are in flight.
        """
        fut = self._loop.create_future()
        if self.lost.done():
            fut.set_exception(ServiceUnavailable("MQTT broker", "connection lost"))
            return fut
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_exception(ServiceUnavailable("MQTT broker", paho.error_string(info.rc)))
            return fut
        self._acks[info.mid] = fut
        fut.add_done_callback(lambda _: self._window.release())
        return fut

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1; messages go to :attr:`on_message` (topic, payload)."""
        rc, _ = self._client.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ServiceUnavailable("MQTT broker", f"subscribe {topic}: {paho.error_string(rc)}")

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        if self.on_message is not None:
            try:
                self.on_message(message.topic, message.payload)
            except Exception:  # one bad command must not stop the broker's socket
                log.exception("handling %s", message.topic)

    async def slot(self) -> None:
        """Wait until one more publish may be in flight; :meth:`publish` must follow."""
        await self._window.acquire()

    async def close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
        if self._client.is_connected():
            self._client.disconnect()
        self._lose("closed")

    # --- paho callbacks, all on the loop thread except on_socket_open (executor) -------------

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(ConnectionRefusedError(str(reason)))
        else:
            self._connack.set_result(None)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._lose(str(reason))

    def _lose(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self._connack.done():
            self._connack.set_exception(ConnectionError(why))
        acks, self._acks = self._acks, {}
        for fut in acks.values():
            if not fut.done():
                fut.set_exception(ServiceUnavailable("MQTT broker", why))

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_socket_open(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.call_soon_threadsafe(self._attach, sock)

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        # Publishes are small and latency-bound: no Nagle on our side.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        self._guard(self._client.loop_read)
        sock = self._sock
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            # A broker with Nagle on (Mosquitto's default set_tcp_nodelay false) holds
            # each PUBACK until the previous one is ACKed; ACK at once instead of up
            # to 40 ms later. Linux clears the flag again, so set it after each read.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _guard(self, step: Callable[[], MQTTErrorCode]) -> None:
        try:
            rc = step()
        except OSError as exc:
            rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
            log.error("MQTT socket: %r", exc)
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._lose(paho.error_string(rc))

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._sock = None

    def _on_register_write(self, _c: Any, _u: Any, sock: Any) -> None:
        fd = sock.fileno()
        if threading.get_ident() == self._thread:
            self._loop.add_writer(fd, self._writable)
        else:  # from connect() in the executor
            self._loop.call_soon_threadsafe(self._loop.add_writer, fd, self._writable)

    def _writable(self) -> None:
        self._guard(self._client.loop_write)

    def _on_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.remove_writer(sock.fileno())

    async def _misc_loop(self) -> None:
        while not self.lost.done():
            self._guard(self._client.loop_misc)  # keepalive pings
            await asyncio.sleep(1)


class Gateway:
    """The JT/T 808 server around one MQTT client. Use :func:`run_gateway`."""

    def __init__(
        self,
        cfg: GatewayConfig,
        broker: MqttPublisher,
        provisioning: Provisioning,
        registrations: RegistrationStore,
        stats: GatewayStats | None = None,
        partitions: int = 0,
    ) -> None:
        self.cfg = cfg
        # [cluster] partitions: a terminal's frames go up on p{k}/... (fleet.cluster), where
        # the engine node owning partition k reads them; 0: the unprefixed topic.
        self.partitions = partitions
        self.broker = broker
        self.provisioning = provisioning
        self.registrations = registrations
        self.stats = stats if stats is not None else GatewayStats()
        self.secret = (cfg.auth_secret or secrets.token_hex(16)).encode()
        self._tasks: set[asyncio.Task[None]] = set()
        self.broker_lost = asyncio.Event()
        self.node = f"{cfg.mqtt_client_id}-{secrets.token_hex(3)}"
        self.connections: dict[str, _Connection] = {}  # canonical phone → its connection
        self.offline = OfflineQueue(cfg.command_queue_per_terminal, cfg.command_queue_total)
        # Ids given to a session here: a republished copy of one is dropped (bounded).
        self._given: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    # -- commands ---------------------------------------------------------------------------

    def start_downlink(self) -> None:
        """Subscribe to the commands and the other nodes' results; expire queued commands."""
        prefix = self.cfg.topic_prefix
        self.broker.on_message = self._on_message
        self.broker.subscribe(f"{prefix}/+/down")
        self.broker.subscribe(f"{prefix}/+/cmd-result")
        self._spawn(self._expire_loop())

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 3:
            return
        phone, what = canonical_phone(parts[-2]), parts[-1]
        try:
            data = json.loads(payload)
        except ValueError:
            self.stats.count("command_not_json")
            log.warning("command on %s is not JSON: dropped", topic)
            return
        if not isinstance(data, dict):
            self.stats.count("command_not_json")
            return
        if what == "cmd-result":
            if data.get("node") != self.node and data.get("state") != "queued":
                self.offline.discard(str(data.get("id")))  # another node has it
            return
        if what == "down":
            self._command(phone, data)

    def _command(self, phone: str, data: dict[str, Any]) -> None:
        cid = str(data.get("id") or "")
        wire = data.get("command")
        try:
            if not cid or not isinstance(wire, dict):
                raise BadRecord("command", "needs id and command")
            msg = from_wire(wire)
            expires_ms = int(data["expires_at"])
        except (BadRecord, KeyError, TypeError, ValueError) as exc:
            self.stats.count("command_invalid")
            log.warning("command %r for %s refused: %s", cid, phone, exc)
            if cid:
                self.report_state(phone, cid, "failed", reason=f"invalid command: {exc}")
            return
        now = self._loop.time()
        cmd = Command(cid, str(wire.get("kind")), msg, now + (expires_ms - _wall_ms()) / 1000)
        if cid in self._given:
            self.stats.count("command_repeated")
            return
        conn = self.connections.get(phone)
        if conn is not None and conn.session.may_command:
            self.given([cmd])
            conn.give([cmd])
            return
        for dropped in self.offline.add(phone, cmd):
            self.report_state(
                phone, dropped.id, "failed", reason="too many commands queued for the terminal"
            )

    def report(self, phone: str, r: CommandReport) -> None:
        c = r.command
        self.report_state(
            phone,
            c.id,
            r.state,
            attempts=c.attempts,
            result=r.result,
            reply=r.reply,
            reason=r.reason,
        )

    def report_state(
        self,
        phone: str,
        command_id: str,
        state: str,
        *,
        attempts: int = 0,
        result: int | None = None,
        reply: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        body = result_json(
            command_id,
            phone,
            state,
            _wall_ms(),
            node=self.node,
            attempts=attempts,
            result=result,
            reply=reply,
            reason=reason,
        )
        self._spawn(self._publish_result(phone, json.dumps(body, ensure_ascii=False).encode()))

    async def _publish_result(self, phone: str, payload: bytes) -> None:
        try:
            await self.broker.slot()
            await self.broker.publish(f"{self.cfg.topic_prefix}/{phone}/cmd-result", payload)
        except ServiceUnavailable as exc:  # the broker went: the API expires it in time
            log.error("command result for %s not published: %s", phone, exc)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for phone, cmd in list(self.offline.expire(self._loop.time())):
                self.stats.commands_expired += 1
                self.report_state(phone, cmd.id, "expired", attempts=cmd.attempts)

    def given(self, commands: list[Command]) -> None:
        for cmd in commands:
            self._given[cmd.id] = None
        while len(self._given) > self.cfg.command_queue_total:
            self._given.popitem(last=False)

    def online(self, phone: str, conn: _Connection) -> None:
        """``conn`` may take commands for ``phone``: give it what waited."""
        self.connections[phone] = conn
        waiting = self.offline.take(phone)
        if waiting:
            self.given(waiting)
            conn.give(waiting)

    def offline_again(self, phone: str, conn: _Connection, left: list[Command]) -> None:
        if self.connections.get(phone) is conn:
            del self.connections[phone]
        for cmd in left:
            self._given.pop(cmd.id, None)  # back in the queue: a repeat is deduplicated there
            self.report_state(phone, cmd.id, "queued", attempts=cmd.attempts)
            other = self.connections.get(phone)
            if other is not None and other.session.may_command:
                self.given([cmd])
                other.give([cmd])
            else:
                for dropped in self.offline.add(phone, cmd):
                    self.report_state(phone, dropped.id, "failed", reason="queue full")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        st = self.stats
        st.connections += 1
        st.connections_total += 1
        peer = writer.get_extra_info("peername")
        try:
            if st.connections > self.cfg.max_connections:
                log.warning("refusing %s: %d connections", peer, st.connections)
                return
            await _Connection(self, reader, writer, peer).run()
        except (ConnectionError, TimeoutError) as exc:
            log.debug("connection %s ended: %r", peer, exc)
        except ServiceUnavailable as exc:
            if exc.service.startswith("MQTT"):
                log.error("broker lost while serving %s: %s", peer, exc)
                self.broker_lost.set()
            else:  # the registration store: this terminal retries later, others go on
                log.error("serving %s: %s", peer, exc)
        finally:
            st.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await aio.wait_for(writer.wait_closed(), 1.0)
            if task is not None:
                self._tasks.discard(task)

    async def close_all(self) -> None:
        for t in list(self._background):
            t.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


class _Connection:
    """Moves bytes between one socket and its :class:`TerminalSession`; decides nothing."""

    def __init__(
        self,
        gw: Gateway,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: object,
    ) -> None:
        self.gw = gw
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.session = TerminalSession(
            gw.cfg, gw.provisioning, gw.secret, gw.stats, self.loop.time(), peer=peer
        )
        self._timer: asyncio.Timeout | None = None
        self._online: str | None = None  # the phone, once registered with the gateway

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._online is not None:
                left = self.session.unfinished(self.loop.time())
                self._flush()
                self.gw.offline_again(self._online, self, left)

    def give(self, commands: list[Command]) -> None:
        """Commands for this terminal (from MQTT, or those that waited)."""
        now = self.loop.time()
        for cmd in commands:
            self.session.command(cmd, now)
        self._flush()
        if self._timer is not None:
            self._timer.reschedule(self.session.deadline)

    def _flush(self) -> None:
        """Write the session's command frames and publish its command reports."""
        phone = self.session.phone
        for out in self.session.drain_downlink():
            if isinstance(out, Send):
                if not self.writer.is_closing():
                    self.writer.write(out.frame)
            elif phone is not None:
                self.gw.report(phone, out)

    def _check_online(self) -> None:
        s = self.session
        if self._online is None and s.may_command and s.phone is not None:
            self._online = s.phone
            self.gw.online(s.phone, self)

    async def _run(self) -> None:
        session, clock, read = self.session, self.loop.time, self.reader.read
        while True:
            try:
                async with asyncio.timeout_at(session.deadline) as self._timer:
                    data = await read(65536)
            except TimeoutError:
                data = None
            finally:
                self._timer = None
            if data == b"":
                return
            now = clock()
            if data is None or now >= session.deadline:
                closed = session.poll(now)
                self._flush()
                if closed is not None:
                    await self._close(closed)
                    return
                if data is None:
                    continue
            for raw in session.receive_data(data, now):
                wait = session.rate_delay(clock())
                if wait > 0:
                    await asyncio.sleep(wait)
                action = session.receive_frame(raw, clock())
                if action is not None and not await self._act(action):
                    return
                self._flush()
                self._check_online()
            if session.closed is not None:
                await self._close(session.closed)
                return

    async def _act(self, action: Action) -> bool:
        """Carry out one answer of the session; False once the connection is to close."""
        while True:
            if isinstance(action, Publish):
                await self._publish(action)
                return True
            if isinstance(action, Send):
                await self._send(action.frame)
                return True
            if isinstance(action, Close):
                await self._close(action)
                return False
            store, now = self.gw.registrations, self.loop.time
            if isinstance(action, Register):
                number = await store.claim(action.phone)
                action = self.session.registered(action, number, now())
                if number is not None and isinstance(action, Publish):
                    try:
                        await self._publish(action)
                    except ServiceUnavailable:
                        # The terminal never got its code: let it register again, or it
                        # would be refused (3) until an operator reset it.
                        await store.reset(action.phone)
                        raise
                    return True
            else:
                number = await store.current(action.phone)
                action = self.session.authenticate(action, number, now())

    async def _publish(self, p: Publish) -> None:
        broker = self.gw.broker
        await broker.slot()
        topic = f"{self.gw.cfg.topic_prefix}/{p.phone}/up"
        n = self.gw.partitions
        if n:
            topic = partition_topic(topic, partition_of(p.phone, n), n)
        await broker.publish(topic, p.payload)
        self.gw.stats.published += 1
        for reply in p.replies:
            await self._send(reply)

    async def _send(self, frame: bytes) -> None:
        self.writer.write(frame)
        if self.writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            await aio.wait_for(self.writer.drain(), self.gw.cfg.write_timeout_s)

    async def _close(self, c: Close) -> None:
        log.debug("closing %s (%s)", self.session.peer, c.reason)
        if c.farewell:
            self.writer.write(c.farewell)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await aio.wait_for(self.writer.drain(), 1.0)


async def run_gateway(
    cfg: GatewayConfig,
    *,
    provisioning: Provisioning | None = None,
    registrations: RegistrationStore | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[tuple[str, int]] | None = None,
    stats: GatewayStats | None = None,
    partitions: int = 0,
) -> None:
    """Serve until ``stop`` is set. ``started`` receives the bound (host, port).
    ``partitions`` (``[cluster] partitions``): publish up on each terminal's ``p{k}/`` topic.

    ``provisioning``: the terminals that may register (none if not given: every
    0x0100 is refused with result 4). ``registrations``: where registrations are
    kept (default: the store ``cfg.registrations`` names, closed at the end).
    ``stats`` (optional) is the counter object to update, kept across reconnects.

    Reconnects to the broker with exponential backoff (0.5 s … 30 s); while
    the broker is away no terminal is served.
    """
    stop = stop or asyncio.Event()
    provisioning = provisioning if provisioning is not None else Provisioning(())
    stats = stats if stats is not None else GatewayStats()
    own_store = registrations is None
    store = registrations if registrations is not None else open_registrations(cfg)
    metrics: Any = None
    backoff = 0.5
    try:
        metrics = _serve_metrics(cfg, stats)
        while not stop.is_set():
            broker = MqttPublisher(cfg)
            try:
                await broker.connect()
                backoff = 0.5
                gw = Gateway(cfg, broker, provisioning, store, stats, partitions)
                gw.start_downlink()
                await _serve(gw, stop, started)
            except ServiceUnavailable as exc:
                log.error("%s", exc)
            finally:
                await broker.close()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)
    finally:
        if own_store:
            await store.close()
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)
            metrics.server_close()


def _serve_metrics(cfg: GatewayConfig, stats: GatewayStats) -> Any:
    """``/metrics`` of ``stats`` on ``cfg.metrics_port`` (prometheus_client's own HTTP
    server, in a thread), or None when no port is configured."""
    if cfg.metrics_port is None:
        return None
    from prometheus_client import CollectorRegistry, start_http_server

    from fleet.metrics import GatewayCollector

    registry = CollectorRegistry()
    registry.register(GatewayCollector(stats))
    try:
        server, _ = start_http_server(cfg.metrics_port, cfg.metrics_host, registry=registry)
    except OSError as exc:
        raise ServiceUnavailable(
            f"gateway metrics on {cfg.metrics_host}:{cfg.metrics_port}", str(exc)
        ) from exc
    log.info("gateway metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
    return server


async def _serve(
    gw: Gateway, stop: asyncio.Event, started: asyncio.Future[tuple[str, int]] | None
) -> None:
    cfg, broker = gw.cfg, gw.broker
    server = await asyncio.start_server(
        gw.handle, cfg.listen_host, cfg.listen_port, backlog=1024, limit=cfg.max_frame_bytes
    )
    host, port = server.sockets[0].getsockname()[:2]
    log.info(
        "JT/T 808 gateway on %s:%d → mqtt %s:%d; %d terminals provisioned",
        host,
        port,
        cfg.mqtt_host,
        cfg.mqtt_port,
        len(gw.provisioning),
    )
    if started is not None and not started.done():
        started.set_result((host, port))
    try:
        stopping = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(gw.broker_lost.wait())
        watched: list[asyncio.Future[Any]] = [stopping, lost, broker.lost]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        lost.cancel()
    finally:
        server.close()
        await gw.close_all()
        await server.wait_closed()
    if not stop.is_set():
        raise ServiceUnavailable("MQTT broker", "connection lost")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _FleetConfig(Protocol):
    """What the gateway reads from the whole configuration (``fleetwatch.config.Config``)."""

    @property
    def gateway(self) -> GatewayConfig: ...
    @property
    def vehicles(self) -> Any: ...
    @property
    def cluster(self) -> Any: ...  # fleet.cluster.ClusterConfig: its partitions


# Reads the whole configuration file; given by the composition root (fleetwatch.cli).
ConfigLoader = Callable[[str], _FleetConfig]

# Keeps provisioning following the vehicle records named by the configuration file until
# stop (a task), or None when there are none; given by the composition root (fleetwatch.cli),
# so that the gateway does not import the persistence package.
FollowRecords = Callable[[str, Provisioning, asyncio.Event], Awaitable["asyncio.Task[None] | None"]]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetwatch gateway", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", help="TOML file: its [gateway] table, and its vehicles are the terminals"
    )
    p.add_argument("--listen", help="HOST:PORT to accept terminals on (default 127.0.0.1:6808)")
    p.add_argument("--mqtt", help="broker HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--heartbeat", type=float, help="terminal heartbeat interval, seconds")
    p.add_argument("--lenient", action="append", default=[], help="phone of a quirky terminal")
    p.add_argument("--no-auth", action="store_true", help="accept positions before 0x0102")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _load(
    args: argparse.Namespace, load_config: ConfigLoader | None
) -> tuple[GatewayConfig, Provisioning]:
    data: dict[str, object] = {}
    provisioning = Provisioning(())
    source = "<command line>"
    if args.config:
        source = args.config
        if load_config is not None:
            full = load_config(args.config)
            data = full.gateway.model_dump(exclude_unset=True)
            provisioning = Provisioning.from_vehicles(full.vehicles)
        else:  # python -m ingest.jt808.tcp: the [gateway] table only, no terminals
            try:
                with open(args.config, "rb") as fh:
                    data = dict(tomllib.load(fh).get("gateway", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(
                    args.config, "gateway", str(exc), "give a readable TOML file"
                ) from exc
    for key, value in (("listen", getattr(args, "listen", None)), ("mqtt", args.mqtt)):
        if value:
            host, _, port = value.rpartition(":")
            data[f"{key}_host"], data[f"{key}_port"] = host or "127.0.0.1", int(port)
    if getattr(args, "heartbeat", None):
        data["heartbeat_s"] = args.heartbeat
    if getattr(args, "lenient", None):
        data["lenient_terminals"] = [*data.get("lenient_terminals", []), *args.lenient]  # type: ignore[misc]
    if getattr(args, "no_auth", False):
        data["require_auth"] = False
    try:
        return GatewayConfig.model_validate(data), provisioning
    except ValueError as exc:
        raise ConfigError(source, "gateway", str(exc), "see GatewayConfig") from exc


def tune_gc() -> None:
    """Make full garbage collections rare in a long-running gateway process.

    With thousands of connections a full collection walks every connection's
    objects and, measured at 5,000 terminals, paused the loop for 100-280 ms on
    a loaded two-core machine, which was the whole p99. The per-frame objects
    live for milliseconds and hold no cycles, so a large young generation lets
    them die before any collection promotes them, and what was loaded at start-up
    (modules, config) is moved out of the collector's sight for good.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def gateway_main(
    argv: list[str],
    load_config: ConfigLoader | None = None,
    follow_records: FollowRecords | None = None,
) -> int:
    """Entry point of ``fleetwatch gateway``; returns the exit status.

    ``fleetwatch gateway reset-terminal PHONE --config FILE`` lets a registered
    terminal register again (an operator's decision: a replaced terminal, a
    terminal that lost its code); everything else serves terminals.
    """
    if argv[:1] == ["reset-terminal"]:
        return _reset_main(argv[1:], load_config)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        cfg, provisioning = _load(args, load_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if cfg.require_auth and cfg.auth_secret is None:
        print(
            "gateway.auth_secret: 未设置，网关不能启动 / not set: the auth codes handed to "
            "terminals would not survive a restart — fix: set [gateway] auth_secret to a random "
            "string of at least 16 characters, the same on every gateway node "
            "(or --no-auth for a trial without authentication)",
            file=sys.stderr,
        )
        return 2
    partitions = 0
    if args.config and load_config is not None:
        partitions = int(load_config(args.config).cluster.partitions)
    if not len(provisioning):
        log.warning("no terminal provisioned: every registration (0x0100) will be refused")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        follow = None
        if args.config and follow_records is not None:
            follow = await follow_records(args.config, provisioning, stop)
        try:
            await run_gateway(cfg, provisioning=provisioning, stop=stop, partitions=partitions)
        finally:
            if follow is not None:
                stop.set()
                await follow

    tune_gc()
    uvloop.run(main())
    return 0


def _reset_main(argv: list[str], load_config: ConfigLoader | None) -> int:
    p = argparse.ArgumentParser(
        prog="fleetwatch gateway reset-terminal",
        description="让已注册的终端可以重新注册 / let a registered terminal register again",
    )
    p.add_argument("phone", help="the terminal's phone (SIM) number")
    p.add_argument("--config", help="TOML file whose [gateway] registrations is used")
    args = p.parse_args(argv)
    try:
        cfg, _ = _load(argparse.Namespace(config=args.config, mqtt=None), load_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    phone = canonical_phone(args.phone.strip())
    if not phone.isdigit():
        print(f"not a terminal phone number: {args.phone!r}", file=sys.stderr)
        return 2
    was = asyncio.run(reset_terminal(cfg, phone))
    if was:
        print(f"终端 {phone} 已重置，可以重新注册 / terminal {phone} reset: it may register again")
        return 0
    print(f"终端 {phone} 未注册 / terminal {phone} was not registered")
    return 1


async def reset_terminal(cfg: GatewayConfig, phone: str) -> bool:
    """Reset ``phone``'s registration in the store ``cfg.registrations`` names."""
    store = open_registrations(cfg)
    try:
        was = await store.reset(phone)
    finally:
        await store.close()
    log.warning("terminal %s registration reset (was registered: %s)", phone, was)
    return was


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(gateway_main(sys.argv[1:]))
