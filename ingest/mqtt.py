"""The MQTT adapter of the ingest stage (aiomqtt over paho-mqtt).

Subscribes to the JSON and JT/T 808 topics with QoS 1 in a persistent MQTT 5
session, feeds every message to :class:`~ingest.core.IngestCore`, and puts each
:class:`~ingest.core.Flush` on the pipeline's bounded queue.

aiomqtt owns the connection (connect, keep-alive, socket I/O on the event
loop). Two things go past it, both here and only here:

* **Messages go straight into the ingest core.** paho's ``on_message`` is
  replaced by :meth:`MqttIngest._on_message`, which runs on the event loop
  thread (aiomqtt reads the socket there) and appends to the core. No per-message
  object, queue hop or task: the MQTT client loop is the first throughput ceiling.
* **Acknowledgement is manual.** QoS 1 PUBACKs are sent by this module, not by
  paho on receipt. With ``mqtt.ack = "after_store"`` a message is acknowledged
  only after the pipeline wrote the batch that holds it (:meth:`MqttIngest.ack`);
  a crash before that leaves it unacknowledged and the broker redelivers it to
  the persistent session (the store, keyed by (vehicle, ts), keeps it once).
  With ``"on_receive"`` it is acknowledged when the pipeline takes the batch.

Flow control: unacknowledged QoS 1 messages are bounded by the MQTT 5 Receive
Maximum we announce (``mqtt.receive_maximum``), so the broker stops sending
when the pipeline falls behind. QoS 0 traffic has no such brake: past
``_QOS0_BACKLOG`` flushes waiting, QoS 0 messages are dropped and counted
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

from fleetwatch.metrics import Metrics
from ingest.config import MqttConfig
from ingest.core import Flush, IngestCore, topic_kind

__all__ = ["MqttIngest"]

log = logging.getLogger(__name__)

_SESSION_EXPIRY_S = 7 * 86400  # keep the persistent session (and its queue) for a week
_QOS0_BACKLOG = 8  # flushes waiting for the pipeline before QoS 0 messages are dropped


class MqttIngest:
    """Run with :meth:`run`; call :meth:`ack` with a flush's tokens after writing it."""

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
        self._paho: paho.Client | None = None
        self._generation = 0  # bumps on every (re)connect: old message ids mean nothing after
        self._connected = asyncio.Event()
        self._ready: deque[Flush] = deque()
        self._wake = asyncio.Event()
        self._closed = False
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
        client = self._paho
        if client is None:
            return 0
        n = 0
        gen = self._generation
        for token_gen, mid in tokens:
            if token_gen == gen:
                client.ack(mid, 1)
                n += 1
        return n

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
        props.SessionExpiryInterval = _SESSION_EXPIRY_S if cfg.persistent_session else 0
        props.ReceiveMaximum = cfg.receive_maximum
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not cfg.persistent_session,
            properties=props,
            **common,
        )

    # -- the paho callback: the hot path ----------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = int(self.clock() * 1000)
        topic = msg.topic
        kind = topic_kind(topic)
        self.metrics.messages_in.labels(kind[0] if kind else "unknown").inc()
        if msg.qos:
            token: tuple[int, int] | None = (self._generation, msg.mid)
        else:
            token = None
            if len(self._ready) >= _QOS0_BACKLOG:
                self.dropped_qos0 += 1
                self.metrics.dropped.labels("qos0_backlog").inc()
                return
        core = self.core
        core.add(topic, msg.payload, now, token)
        if core.due(now):
            self._ready.append(core.flush())
            self._wake.set()

    # -- asyncio side -------------------------------------------------------------------------

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
                except aiomqtt.MqttError as exc:
                    self._lost()
                    log.warning(
                        "MQTT %s:%s: %s; reconnecting in %.1f s",
                        self.cfg.host,
                        self.cfg.port,
                        exc,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, self.cfg.reconnect_max_s)
        finally:
            ager.cancel()
            await self._close()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def _lost(self) -> None:
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        self._paho = None

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        # The one reach into aiomqtt (see the module doc). Both must be in place before
        # CONNECT: a resumed session redelivers unacknowledged messages right after CONNACK.
        pc: paho.Client = client._client
        pc.manual_ack_set(True)
        pc.on_message = self._on_message
        self._generation += 1
        async with client:
            self._paho = pc
            for topic in (self.cfg.json_topic, self.cfg.jt808_topic):
                if topic:
                    await client.subscribe(topic, qos=self.cfg.qos)
            self._connected.set()
            self.metrics.mqtt_connected.set(1)
            log.info(
                "MQTT connected to %s:%s as %s (ack %s)",
                self.cfg.host,
                self.cfg.port,
                self.cfg.client_id,
                self.cfg.ack,
            )
            watch = asyncio.create_task(self._watch(client))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if watch.done():
                    watch.result()  # raises the MqttError that ended the session
                # Shutdown: hand over what is pending and keep the session up until the
                # pipeline has written it and sent the acks (bounded wait).
                await self._close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.finished.wait(), 10.0)
            finally:
                watch.cancel()
                stopper.cancel()
                self._lost()

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Return never; raise MqttError when the connection drops (messages bypass it)."""
        async for _ in client.messages:
            pass

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
                self._ready.append(self.core.flush())
                self._wake.set()

    async def _close(self) -> None:
        """Flush what is pending and tell the next stage no more flushes follow."""
        if self._closed:
            return
        self._closed = True
        if self.core.pending:
            self._ready.append(self.core.flush())
        while self._ready:
            flush = self._ready.popleft()
            await self.out.put(flush)
            if self.cfg.ack == "on_receive":
                self._send_acks(flush.acks)
        await self.out.put(None)
