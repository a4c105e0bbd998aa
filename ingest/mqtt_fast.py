"""The fast MQTT client of the ingest stage (``mqtt.client = "fast"``).

A lean client on an asyncio protocol over the sans-I/O
:class:`~ingest.mqtt_wire.MqttWire`: each socket read is parsed in one pass and
every PUBLISH goes straight into the ingest core; PUBACKs go out many per
write. Measured under the end-to-end benchmark, paho spent about 20 µs of
Python per message before our code saw it (three ``recv`` calls per packet, an
``MQTTMessage`` object, a callback dispatch, one event-loop wake-up per packet)
and wrote one PUBACK per message; this client costs about 8 µs per message all
in, ingest included. Everything else — flow control, flushing, acknowledgement
after the durable write, reconnects, shutdown — is shared with the default
aiomqtt client (:class:`~ingest.mqtt.MqttIngestBase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fleet import aio
from fleet.errors import ServiceUnavailable
from ingest.mqtt import SESSION_EXPIRY_S, MqttIngestBase
from ingest.mqtt_wire import CONNACK, DISCONNECT, KEEPALIVE_S, SUBACK, MqttWire

__all__ = ["FastMqttIngest"]

log = logging.getLogger(__name__)

_HANDSHAKE_S = 10.0


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: FastMqttIngest) -> None:
        self.owner = owner
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class FastMqttIngest(MqttIngestBase):
    """``MqttIngestBase`` on its own MQTT client (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transport: Any = None  # asyncio.Transport, or uvloop's look-alike
        self._wire = MqttWire(v5=self.cfg.protocol == "5")
        self._control: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self._last_rx = 0.0
        self._take_bound = self._take

    def _write_acks(self, mids: list[int]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(MqttWire.pubacks(mids))

    def _lost(self) -> None:
        super()._lost()
        transport, self._transport = self._transport, None
        if transport is not None and not transport.is_closing():
            transport.abort()  # a closing transport is flushing DISCONNECT and the last acks

    def _on_data(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        self._now_ms = now = int(self.clock() * 1000)
        try:
            others = self._wire.feed(data, self._take_bound)
        except ServiceUnavailable as exc:
            log.error("MQTT: %s; dropping the connection", exc)
            if self._transport is not None:
                self._transport.abort()
            return
        for packet in others:
            self._control.put_nowait(packet)
        core = self.core
        if core.due(now):
            self._push(core.flush())

    async def _expect(self, kind: int, lost: asyncio.Future[Exception | None]) -> bytes:
        """The body of the next control packet, which must be of ``kind``."""
        get = asyncio.ensure_future(self._control.get())
        waiters: set[asyncio.Future[Any]] = {get, lost}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=_HANDSHAKE_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            get.cancel()
        if get in done:
            typ, _flags, body = get.result()
            if typ != kind:
                raise ServiceUnavailable("mqtt", f"expected packet type {kind}, got {typ}")
            return body
        if lost.done():
            raise ServiceUnavailable("mqtt", f"connection closed during handshake: {lost.result()}")
        raise ServiceUnavailable("mqtt", "broker did not answer within 10 s")

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self._generation = (self._generation + 1) & 0xFFFF
        self._wire = MqttWire(v5=cfg.protocol == "5")
        self._control = asyncio.Queue()
        try:
            transport, proto = await aio.wait_for(
                loop.create_connection(lambda: _Protocol(self), cfg.host, cfg.port), _HANDSHAKE_S
            )
        except (OSError, TimeoutError) as exc:
            raise ServiceUnavailable("mqtt", f"cannot connect: {exc}") from exc
        self._transport = transport  # uvloop's transports are not asyncio.Transport subclasses
        try:
            transport.write(
                self._wire.connect(
                    client_id=cfg.client_id,
                    username=cfg.username,
                    password=cfg.password,
                    clean=not cfg.persistent_session,
                    session_expiry_s=SESSION_EXPIRY_S if cfg.persistent_session else 0,
                    receive_maximum=cfg.receive_maximum,
                )
            )
            body = await self._expect(CONNACK, proto.lost)
            code = body[1] if len(body) > 1 else 255
            if code != 0:
                raise ServiceUnavailable("mqtt", f"broker refused the connection (code {code})")
            filters = [t for t in (cfg.json_topic, cfg.jt808_topic) if t]
            transport.write(self._wire.subscribe(1, filters, cfg.qos))
            body = await self._expect(SUBACK, proto.lost)
            codes = body[2:]
            if cfg.protocol == "5" and codes:
                plen = codes[0]  # SUBACK properties (short here; no long reason strings)
                codes = codes[1 + plen :]
            if len(codes) != len(filters) or any(c >= 0x80 for c in codes):
                raise ServiceUnavailable("mqtt", f"subscription refused: {list(codes)}")
            self._connected_now()
            watch = asyncio.create_task(self._watch(proto.lost))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if watch.done():
                    watch.result()  # raises what ended the session
                await self._shutdown_in_session()
                if not transport.is_closing():
                    transport.write(MqttWire.DISCONNECT)
                    transport.close()
            finally:
                watch.cancel()
                stopper.cancel()
        finally:
            self._lost()

    async def _watch(self, lost: asyncio.Future[Exception | None]) -> None:
        """Keep the connection alive; raise when it is gone."""
        self._last_rx = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                exc = await aio.wait_for(asyncio.shield(lost), KEEPALIVE_S / 2)
                raise ServiceUnavailable("mqtt", f"connection lost: {exc or 'closed by broker'}")
            while not self._control.empty():
                typ, _flags, body = self._control.get_nowait()
                if typ == DISCONNECT:
                    reason = body[0] if body else 0
                    raise ServiceUnavailable("mqtt", f"broker sent DISCONNECT (reason {reason})")
            if time.monotonic() - self._last_rx > 1.5 * KEEPALIVE_S:
                raise ServiceUnavailable("mqtt", "no answer to PINGREQ: connection dead")
            if self._transport is not None:
                self._transport.write(MqttWire.PINGREQ)
