"""The MQTT adapters of the ingest stage.

Four clients feed the same sans-I/O :class:`~ingest.core.IngestCore` and share
everything around it (:class:`MqttIngestBase`: flow control, flushing, acks,
reconnects, shutdown); ``mqtt.client`` picks one:

* ``"aiomqtt"`` (default) — :class:`MqttIngest`, aiomqtt owning the connection
  (connect, keep-alive, socket I/O on the event loop). Messages go straight from
  paho's ``on_message`` into the core — no per-message queue hop or task. The
  paho client loop is its ceiling (three ``recv`` calls and an object per
  message, one PUBACK write each).
* ``"gmqtt"`` — :class:`ingest.mqtt_gmqtt.GmqttIngest`, the maintained gmqtt
  asyncio client; a late PUBACK costs it a task and a future per message.
* ``"paho"`` — :class:`ingest.mqtt_paho.PahoIngest`, plain paho-mqtt with its
  network loop in its own thread and ``manual_ack``.
* ``"fast"`` — :class:`ingest.mqtt_fast.FastMqttIngest`, a lean client on an
  asyncio protocol over the sans-I/O :class:`ingest.mqtt_wire.MqttWire`:
  whole socket reads parsed in one pass, PUBACKs many per write. Measured at
  55,000 messages/s end to end (BENCHMARKS.md). For large fleets.

**Acknowledgement is manual** in all four. With ``mqtt.ack = "after_store"`` a QoS
1 message is acknowledged only after the pipeline wrote the batch holding it
(:meth:`MqttIngestBase.ack`); a crash before that leaves it unacknowledged and
the broker redelivers it to the persistent session (the store, keyed by
(vehicle, ts), keeps it once). With ``"on_receive"`` it is acknowledged when
the pipeline takes the batch.

**Flow control:** unacknowledged QoS 1 messages are bounded by the MQTT 5
Receive Maximum we announce (``mqtt.receive_maximum``), so the broker stops
sending when the pipeline falls behind. QoS 0 traffic has no such brake: past
``QOS0_BACKLOG`` flushes waiting, QoS 0 messages are dropped and counted
(``fleetwatch_dropped_total{policy="qos0_backlog"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet import aio
from fleet.errors import ServiceUnavailable
from fleet.metrics import Metrics
from ingest.config import MqttConfig
from ingest.core import Flush, IngestCore

__all__ = ["SESSION_EXPIRY_S", "MqttIngest", "MqttIngestBase", "make_ingest"]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400  # keep the persistent session (and its queue) for a week
QOS0_BACKLOG = 8  # flushes waiting for the pipeline before QoS 0 messages are dropped
_DUE_CHECK_EVERY = 1024  # messages between "is a flush due" checks inside one socket read


class MqttIngestBase:
    """What both clients share. Run with :meth:`run`; :meth:`ack` a flush after writing it.

    A subclass implements :meth:`_session` (connect, subscribe, call :meth:`_take`
    for every PUBLISH until ``stop`` or a lost connection) and :meth:`_write_acks`.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        core: IngestCore,
        out: asyncio.Queue[Flush | None],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.core = core
        self.out = out
        self.metrics = metrics
        self.clock = clock
        # Bumps on every (re)connect: old packet ids mean nothing after. An ack token is
        # generation << 16 | packet id.
        self._generation = 0
        self._connected = asyncio.Event()
        self._ready: deque[Flush] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._now_ms = 0
        self._since_check = 0
        self._counted: dict[str, int] = {}
        self.dropped_qos0 = 0
        # Set by the pipeline once it has written and acknowledged the final flush.
        self.finished = asyncio.Event()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    def ack(self, tokens: Sequence[Any]) -> int:
        """PUBACK the messages of a written flush (``after_store`` mode); returns how many."""
        if self.cfg.ack != "after_store":
            return 0
        return self._send_acks(tokens)

    def _send_acks(self, tokens: Sequence[Any]) -> int:
        if not tokens:
            return 0
        gen = self._generation
        mids = [t & 0xFFFF for t in tokens if t >> 16 == gen]
        if mids:
            self._write_acks(mids)
        return len(mids)

    # -- to implement ---------------------------------------------------------------------------

    def _write_acks(self, mids: list[int]) -> None:
        """Send PUBACKs on the current connection (none when there is no connection)."""
        raise NotImplementedError

    async def _session(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def _lost(self) -> None:
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)

    # -- the hot path: one PUBLISH into the core ------------------------------------------------

    def _take(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        if qos:
            token: int | None = self._generation << 16 | mid
        else:
            token = None
            if len(self._ready) >= QOS0_BACKLOG:
                self.dropped_qos0 += 1
                self.metrics.dropped.labels("qos0_backlog").inc()
                return
        core = self.core
        core.add(topic, payload, self._now_ms, token)
        self._since_check += 1
        if self._since_check >= _DUE_CHECK_EVERY:
            self._since_check = 0
            if core.due(self._now_ms):
                self._push(core.flush())

    def _push(self, flush: Flush) -> None:
        self._count_messages()
        self._ready.append(flush)
        self._wake.set()

    def _count_messages(self) -> None:
        """Move the core's per-format message counts into the metric (once per flush)."""
        for fmt, n in self.core.received.items():
            done = self._counted.get(fmt, 0)
            if n > done:
                self.metrics.messages_in.labels(fmt).inc(n - done)
                self._counted[fmt] = n

    def _connected_now(self) -> None:
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "MQTT connected to %s:%s as %s (%s client, ack %s)",
            self.cfg.host,
            self.cfg.port,
            self.cfg.client_id,
            self.cfg.client,
            self.cfg.ack,
        )

    # -- asyncio side -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop`` is set, reconnecting with exponential backoff.

        On stop, the last partial batch is flushed and ``None`` is put on the
        queue to tell the next stage that no more flushes follow.
        """
        delay = self.cfg.reconnect_initial_s
        pump = asyncio.create_task(self._pump())
        ager = asyncio.create_task(self._age_flusher())
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    delay = self.cfg.reconnect_initial_s
                except (ServiceUnavailable, OSError, TimeoutError) as exc:
                    self._lost()
                    log.warning(
                        "MQTT %s:%s: %s; reconnecting in %.1f s",
                        self.cfg.host,
                        self.cfg.port,
                        exc,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await aio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, self.cfg.reconnect_max_s)
        finally:
            ager.cancel()
            await self._close()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _shutdown_in_session(self) -> None:
        """On stop: hand over what is pending and keep the session up until the pipeline
        has written it and sent the acks (bounded wait)."""
        await self._close()
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(self.finished.wait(), 10.0)

    async def _pump(self) -> None:
        """Move ready flushes onto the bounded pipeline queue, waiting when it is full."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready:
                flush = self._ready.popleft()
                await self.out.put(flush)
                if self.cfg.ack == "on_receive":
                    self._send_acks(flush.acks)

    async def _age_flusher(self) -> None:
        period = max(self.core.max_age_ms / 4000, 0.002)
        while True:
            await asyncio.sleep(period)
            if self.core.due(int(self.clock() * 1000)):
                self._push(self.core.flush())

    async def _close(self) -> None:
        """Flush what is pending and tell the next stage no more flushes follow."""
        if self._closed:
            return
        self._closed = True
        if self.core.pending:
            self._count_messages()
            self._ready.append(self.core.flush())
        while self._ready:
            flush = self._ready.popleft()
            await self.out.put(flush)
            if self.cfg.ack == "on_receive":
                self._send_acks(flush.acks)
        await self.out.put(None)


class MqttIngest(MqttIngestBase):
    """The default client: aiomqtt over paho-mqtt, with paho's ``on_message`` feeding the core.

    The one reach into aiomqtt is here: its paho client is switched to manual
    acknowledgement and given our ``on_message`` before CONNECT (a resumed
    session redelivers unacknowledged messages right after CONNACK).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paho: paho.Client | None = None

    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        common: dict[str, Any] = {
            "identifier": cfg.client_id,
            "username": cfg.username,
            "password": cfg.password,
            "keepalive": 30,
        }
        if cfg.protocol == "3.1.1":
            return aiomqtt.Client(
                cfg.host,
                cfg.port,
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=not cfg.persistent_session,
                **common,
            )
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if cfg.persistent_session else 0
        props.ReceiveMaximum = cfg.receive_maximum
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not cfg.persistent_session,
            properties=props,
            **common,
        )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._now_ms = now = int(self.clock() * 1000)
        self._take(msg.topic, msg.payload, msg.qos, msg.mid)
        if self.core.due(now):
            self._push(self.core.flush())

    def _write_acks(self, mids: list[int]) -> None:
        client = self._paho
        if client is not None:
            for mid in mids:
                client.ack(mid, 1)

    def _lost(self) -> None:
        super()._lost()
        self._paho = None

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        pc: paho.Client = client._client
        pc.manual_ack_set(True)
        pc.on_message = self._on_message
        self._generation = (self._generation + 1) & 0xFFFF
        try:
            async with client:
                self._paho = pc
                for topic in (self.cfg.json_topic, self.cfg.jt808_topic):
                    if topic:
                        await client.subscribe(topic, qos=self.cfg.qos)
                self._connected_now()
                watch = asyncio.create_task(self._watch(client))
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if watch.done():
                        watch.result()  # raises the MqttError that ended the session
                    await self._shutdown_in_session()
                finally:
                    watch.cancel()
                    stopper.cancel()
                    self._lost()
        except aiomqtt.MqttError as exc:
            raise ServiceUnavailable("mqtt", str(exc)) from exc

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Return never; raise MqttError when the connection drops (messages bypass it)."""
        async for _ in client.messages:
            pass


def make_ingest(
    cfg: MqttConfig,
    core: IngestCore,
    out: asyncio.Queue[Flush | None],
    metrics: Metrics,
) -> MqttIngestBase:
    """The client ``mqtt.client`` names."""
    if cfg.client == "fast":
        from ingest.mqtt_fast import FastMqttIngest

        return FastMqttIngest(cfg, core, out, metrics)
    if cfg.client == "gmqtt":
        from ingest.mqtt_gmqtt import GmqttIngest

        return GmqttIngest(cfg, core, out, metrics)
    if cfg.client == "paho":
        from ingest.mqtt_paho import PahoIngest

        return PahoIngest(cfg, core, out, metrics)
    return MqttIngest(cfg, core, out, metrics)
