"""The MQTT adapter of the ingest stage (aiomqtt over paho-mqtt).

Subscribes to the JSON and JT/T 808 topics with QoS 1 in a persistent session,
feeds every message to :class:`~ingest.core.IngestCore`, and puts each
:class:`~ingest.core.Flush` on the pipeline's bounded queue.

**Acknowledgement after the durable write.** aiomqtt acknowledges a QoS 1
message as soon as it is received. With ``mqtt.ack = "after_store"`` this
module switches the paho client underneath to manual acknowledgement and sends
each PUBACK only when the pipeline calls :meth:`MqttIngest.ack` after the
batch holding that message was written. This is the one place that reaches
into aiomqtt's paho client. A crash before the write leaves the messages
unacknowledged; the broker redelivers them to the persistent session and the
store, keyed by (vehicle, ts), keeps each position once.

Back-pressure: when the pipeline queue is full, this loop stops reading; the
broker stops sending once ``receive_maximum`` messages are unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
        self._lock = asyncio.Lock()
        self._closed = False
        # Set by the pipeline once it has written and acknowledged the final flush.
        self.finished = asyncio.Event()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    def ack(self, tokens: Sequence[Any]) -> int:
        """PUBACK the messages of a written flush. Returns how many were acknowledged."""
        client = self._paho
        if client is None or self.cfg.ack != "after_store":
            return 0
        n = 0
        for token in tokens:
            gen, mid = token
            if gen == self._generation and mid:
                client.ack(mid, 1)
                n += 1
        return n

    def _client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = _SESSION_EXPIRY_S if self.cfg.persistent_session else 0
        props.ReceiveMaximum = self.cfg.receive_maximum
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=self.cfg.client_id,
            username=self.cfg.username,
            password=self.cfg.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self.cfg.persistent_session,
            properties=props,
            keepalive=30,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop`` is set, reconnecting with exponential backoff.

        On stop, the last partial batch is flushed and ``None`` is put on the
        queue to tell the next stage that no more flushes follow.
        """
        delay = self.cfg.reconnect_initial_s
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    delay = self.cfg.reconnect_initial_s
                except aiomqtt.MqttError as exc:
                    self._connected.clear()
                    self.metrics.mqtt_connected.set(0)
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
            await self._close()

    async def _close(self) -> None:
        """Flush what is pending and tell the next stage no more flushes follow."""
        if not self._closed:
            self._closed = True
            await self._emit()
            await self.out.put(None)

    async def _session(self, stop: asyncio.Event) -> None:
        async with self._client() as client:
            pc: paho.Client = client._client  # the one reach into aiomqtt, for manual PUBACK
            if self.cfg.ack == "after_store":
                pc.manual_ack_set(True)
            self._paho = pc
            self._generation += 1
            gen = self._generation
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
            ticker = asyncio.create_task(self._age_flusher(stop))
            stopper = asyncio.create_task(stop.wait())
            try:
                await self._receive(client, gen, stopper)
            finally:
                ticker.cancel()
                stopper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                # On shutdown, hand over what is pending and keep the session up until the
                # pipeline has written it and sent the acks (bounded wait).
                if stop.is_set():
                    await self._close()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.finished.wait(), 10.0)
                self._connected.clear()
                self.metrics.mqtt_connected.set(0)

    async def _receive(self, client: aiomqtt.Client, gen: int, stopper: asyncio.Task[Any]) -> None:
        messages = client.messages.__aiter__()
        core = self.core
        count = self.metrics.messages_in
        while True:
            nxt = asyncio.ensure_future(messages.__anext__())
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            msg = nxt.result()
            topic = msg.topic.value
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            kind = topic_kind(topic)
            count.labels(kind[0] if kind else "unknown").inc()
            core.add(topic, payload, int(self.clock() * 1000), (gen, msg.mid) if msg.qos else None)
            if core.due(int(self.clock() * 1000)):
                await self._emit()

    async def _age_flusher(self, stop: asyncio.Event) -> None:
        period = max(self.core.max_age_ms / 4000, 0.002)
        while not stop.is_set():
            await asyncio.sleep(period)
            if self.core.due(int(self.clock() * 1000)):
                await self._emit()

    async def _emit(self) -> None:
        async with self._lock:
            if not self.core.pending:
                return
            flush = self.core.flush()
            await self.out.put(flush)
