"""The plain paho-mqtt ingest client (``mqtt.client = "paho"``).

paho-mqtt 2.1 as its documentation shows it: ``manual_ack_set(True)``, the
network loop in paho's own thread (``loop_start``), ``client.ack(mid, qos)``
once the batch holding the message is written. What differs from the default
``"aiomqtt"`` client (paho driven from the event loop's socket callbacks) is
where paho's parsing runs: in its thread, beside the event loop, so on two
cores it can overlap with the pipeline — at the price of the GIL and a
hand-off between threads.

The hand-off: paho's thread appends ``(topic, payload, qos, mid)`` to a deque
and wakes the event loop only when the deque was idle (one
``call_soon_threadsafe`` per burst, not per message); the loop drains it into
the core. QoS 1 messages in the deque are bounded by the Receive Maximum we
announce; QoS 0 ones past ``HANDOFF_MAX`` are dropped and counted like the
other clients' ``qos0_backlog`` drops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet import aio
from fleet.errors import ServiceUnavailable
from ingest.mqtt import SESSION_EXPIRY_S, MqttIngestBase

__all__ = ["HANDOFF_MAX", "PahoIngest"]

HANDOFF_MAX = 100_000  # QoS 0 messages waiting between paho's thread and the event loop
_HANDSHAKE_S = 10.0
_KEEPALIVE_S = 30


class PahoIngest(MqttIngestBase):
    """``MqttIngestBase`` on paho-mqtt in its network thread (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paho: paho.Client | None = None
        self._inbox: deque[tuple[str, bytes, int, int]] = deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- paho's thread ----------------------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        qos = msg.qos
        if not qos and len(self._inbox) >= HANDOFF_MAX:
            self.dropped_qos0 += 1
            self.metrics.dropped.labels("qos0_backlog").inc()
            return
        # Append first, then look at the flag: the loop clears the flag before it drains,
        # so a message is either drained by the running drain or schedules the next one.
        self._inbox.append((msg.topic, msg.payload, qos, msg.mid))
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._drain)

    # -- the event loop ---------------------------------------------------------------------------

    def _drain(self) -> None:
        self._scheduled = False
        self._now_ms = now = int(self.clock() * 1000)
        inbox, take, core = self._inbox, self._take, self.core
        while inbox:
            topic, payload, qos, mid = inbox.popleft()
            take(topic, payload, qos, mid)
        if core.due(now):
            self._push(core.flush())

    def _write_acks(self, mids: list[int]) -> None:
        client = self._paho
        if client is not None:
            for mid in mids:  # paho queues the PUBACK under its own lock: thread-safe
                client.ack(mid, 1)

    def _lost(self) -> None:
        super()._lost()
        self._paho = None

    def _client(self) -> tuple[paho.Client, Properties | None]:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not cfg.persistent_session,
        )
        client.manual_ack_set(True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        client.on_message = self._on_message
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S if cfg.persistent_session else 0
            props.ReceiveMaximum = cfg.receive_maximum
        return client, props

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        loop = self._loop = asyncio.get_running_loop()
        self._generation = (self._generation + 1) & 0xFFFF
        client, props = self._client()
        connack: asyncio.Future[int] = loop.create_future()
        lost = asyncio.Event()
        subacks: asyncio.Queue[list[int]] = asyncio.Queue()

        def settle(code: int) -> None:
            if not connack.done():
                connack.set_result(code)

        def on_connect(c: paho.Client, u: Any, flags: Any, rc: ReasonCode, p: Any) -> None:
            loop.call_soon_threadsafe(settle, rc.value)

        def on_disconnect(c: paho.Client, u: Any, flags: Any, rc: ReasonCode, p: Any) -> None:
            # End paho's thread instead of letting it reconnect: a lost connection ends
            # the session, and the base reconnects with its own backoff and a new client.
            c._thread_terminate = True  # what loop_stop() sets; join() is not allowed here
            loop.call_soon_threadsafe(lost.set)
            loop.call_soon_threadsafe(settle, -1)

        def on_subscribe(c: paho.Client, u: Any, mid: int, codes: list[ReasonCode], p: Any) -> None:
            loop.call_soon_threadsafe(subacks.put_nowait, [r.value for r in codes])

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = on_subscribe
        self._paho = client
        try:
            try:
                await aio.wait_for(
                    asyncio.to_thread(
                        client.connect,
                        cfg.host,
                        cfg.port,
                        _KEEPALIVE_S,
                        clean_start=not cfg.persistent_session
                        if cfg.protocol == "5"
                        else paho.MQTT_CLEAN_START_FIRST_ONLY,
                        properties=props,
                    ),
                    _HANDSHAKE_S,
                )
            except (OSError, TimeoutError) as exc:
                raise ServiceUnavailable("mqtt", f"cannot connect: {exc}") from exc
            client.loop_start()
            try:
                code = await aio.wait_for(connack, _HANDSHAKE_S)
            except TimeoutError as exc:
                raise ServiceUnavailable("mqtt", "no CONNACK within 10 s") from exc
            if code != 0:
                raise ServiceUnavailable("mqtt", f"broker refused the connection (code {code})")
            for topic in (cfg.json_topic, cfg.jt808_topic):
                if not topic:
                    continue
                client.subscribe(topic, qos=cfg.qos)
                try:
                    granted = await aio.wait_for(subacks.get(), _HANDSHAKE_S)
                except TimeoutError as exc:
                    raise ServiceUnavailable("mqtt", "no SUBACK within 10 s") from exc
                if any(g >= 0x80 for g in granted):
                    raise ServiceUnavailable("mqtt", f"subscription refused: {granted}")
            self._connected_now()
            lost_wait = asyncio.create_task(lost.wait())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({lost_wait, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if lost_wait.done():
                    raise ServiceUnavailable("mqtt", "connection lost")
                self._drain()  # what paho's thread handed over last
                await self._shutdown_in_session()
                client.disconnect()  # queued after the last PUBACKs; the thread sends both
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(lost.wait(), _HANDSHAKE_S)
            finally:
                lost_wait.cancel()
                stopper.cancel()
        finally:
            self._lost()
            client._thread_terminate = True
            await asyncio.to_thread(client.loop_stop)
            sock = client.socket()  # still open after a cancelled or failed session
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            # Packet ids of this session mean nothing on the next one (their messages are
            # unacknowledged and come again): drop what paho's thread handed over last.
            self._inbox.clear()
