"""The gmqtt ingest client (``mqtt.client = "gmqtt"``).

gmqtt is a maintained asyncio MQTT 5 client with its own protocol parser on an
``asyncio.Protocol``. Its public way to acknowledge a QoS 1 message late is
``optimistic_acknowledgement=False`` with a coroutine ``on_message``: gmqtt
runs the coroutine as a task and sends the PUBACK (with the reason code the
coroutine returns) when it finishes. So for ``mqtt.ack = "after_store"`` every
QoS 1 message gets a future that :meth:`GmqttIngest._write_acks` resolves once
the pipeline has written the flush holding it — one task and one future per
message, which is what this library costs at the no-loss configuration
(BENCHMARKS.md measures it). Without QoS 1 (``mqtt.qos = 0``) the handler is a
plain function and gmqtt acknowledges nothing.

gmqtt does not hand ``on_message`` the packet id, so the ack token is our own
number (unique among the messages in flight: Receive Maximum ≤ 65,535 of
them). Reconnects are :class:`~ingest.mqtt.MqttIngestBase`'s, with a fresh
gmqtt client per session: gmqtt's own reconnect would open a second session
under the same client id. When a session ends, the futures of its messages are
released without a PUBACK (the broker redelivers them to the next session).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gmqtt import Client as _GmqttClient
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from fleet import aio
from fleet.errors import ServiceUnavailable
from ingest.mqtt import SESSION_EXPIRY_S, MqttIngestBase

__all__ = ["GmqttIngest"]

_HANDSHAKE_S = 10.0
_KEEPALIVE_S = 30
_MID_SPACE = 0x10000  # our tokens share the base's 16-bit packet-id slot
_SUCCESS = 0  # PUBACK reason code "Success" (MQTT 5 section 3.4.2.1)


class _SessionClient(_GmqttClient):
    """A gmqtt client for one session: never reconnects, and goes quiet once retired.

    Both overrides reach into gmqtt's private surface, on purpose and only here:
    ``_allow_reconnect`` so that a lost connection ends the session (the base
    reconnects with its own backoff), ``_send_command_with_mid`` so that
    messages of an ended session are never acknowledged on a later connection.
    """

    retired = False

    def _allow_reconnect(self) -> bool:
        return False

    def _send_command_with_mid(self, cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        if not self.retired:
            super()._send_command_with_mid(cmd, mid, dup, reason_code=reason_code)


class GmqttIngest(MqttIngestBase):
    """``MqttIngestBase`` on gmqtt (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: _SessionClient | None = None
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._next = 0
        self._lost_event = asyncio.Event()
        self._subacks: asyncio.Queue[tuple[int, ...]] = asyncio.Queue()

    # -- the hot path -----------------------------------------------------------------------------

    def _mid(self) -> int:
        """The next token number not in flight (at most Receive Maximum are)."""
        n = self._next
        while True:
            n = (n + 1) % _MID_SPACE
            if n and n not in self._waiting:
                self._next = n
                return n

    async def _on_message_acked(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        """QoS 1 with a late PUBACK: gmqtt sends it when this coroutine returns."""
        self._now_ms = now = int(self.clock() * 1000)
        if not qos:
            self._take(topic, payload, 0, 0)
            if self.core.due(now):
                self._push(self.core.flush())
            return _SUCCESS
        mid = self._mid()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[mid] = done
        self._take(topic, payload, qos, mid)
        if self.core.due(now):
            self._push(self.core.flush())
        return await done

    def _on_message_plain(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        """No late acknowledgement needed (QoS 0 subscription)."""
        self._now_ms = now = int(self.clock() * 1000)
        self._take(topic, payload, qos, 0)
        if self.core.due(now):
            self._push(self.core.flush())
        return _SUCCESS

    def _write_acks(self, mids: list[int]) -> None:
        waiting = self._waiting
        for mid in mids:
            done = waiting.pop(mid, None)
            if done is not None and not done.done():
                done.set_result(_SUCCESS)

    def _lost(self) -> None:
        super()._lost()
        client, self._client = self._client, None
        if client is not None:
            client.retired = True
        # Let the tasks of this session's messages end; the retired client sends nothing.
        waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            if not done.done():
                done.set_result(_SUCCESS)

    # -- the session ------------------------------------------------------------------------------

    def _make_client(self) -> _SessionClient:
        cfg = self.cfg
        late_ack = cfg.qos == 1
        props: dict[str, Any] = {}
        if cfg.protocol == "5":
            props["session_expiry_interval"] = SESSION_EXPIRY_S if cfg.persistent_session else 0
            props["receive_maximum"] = cfg.receive_maximum
        client = _SessionClient(
            cfg.client_id,
            clean_session=not cfg.persistent_session,
            optimistic_acknowledgement=not late_ack,
            **props,
        )
        if cfg.username is not None:
            client.set_auth_credentials(cfg.username, cfg.password)
        # Set before CONNECT: a resumed session redelivers right after CONNACK.
        client.on_message = self._on_message_acked if late_ack else self._on_message_plain
        client.on_disconnect = lambda *_: self._lost_event.set()
        client.on_subscribe = lambda _c, _mid, granted, _props: self._subacks.put_nowait(
            tuple(granted)
        )
        return client

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        self._generation = (self._generation + 1) & 0xFFFF
        self._lost_event = asyncio.Event()
        self._subacks = asyncio.Queue()
        client = self._make_client()
        self._client = client
        try:
            try:
                await aio.wait_for(
                    client.connect(
                        cfg.host,
                        cfg.port,
                        keepalive=_KEEPALIVE_S,
                        version=MQTTv50 if cfg.protocol == "5" else MQTTv311,
                    ),
                    _HANDSHAKE_S,
                )
            except (OSError, TimeoutError) as exc:
                raise ServiceUnavailable("mqtt", f"cannot connect: {exc}") from exc
            except Exception as exc:  # gmqtt's MQTTConnectError: the broker refused us
                raise ServiceUnavailable("mqtt", f"broker refused the connection: {exc}") from exc
            filters = [t for t in (cfg.json_topic, cfg.jt808_topic) if t]
            for topic in filters:
                client.subscribe(topic, qos=cfg.qos)
                try:
                    granted = await aio.wait_for(self._subacks.get(), _HANDSHAKE_S)
                except TimeoutError as exc:
                    raise ServiceUnavailable("mqtt", "no SUBACK within 10 s") from exc
                if any(g >= 0x80 for g in granted):
                    raise ServiceUnavailable("mqtt", f"subscription refused: {list(granted)}")
            self._connected_now()
            lost = asyncio.create_task(self._lost_event.wait())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({lost, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if lost.done():
                    raise ServiceUnavailable("mqtt", "connection lost")
                await self._shutdown_in_session()
                await self._acks_sent()
                await client.disconnect()
            finally:
                lost.cancel()
                stopper.cancel()
        finally:
            self._lost()
            self._abort(client)

    @staticmethod
    def _abort(client: _SessionClient) -> None:
        """Drop a connection left open (a cancelled or failed session): no DISCONNECT, so
        its unacknowledged messages stay queued for the next session."""
        conn = client._connection
        transport = getattr(conn, "_transport", None) if conn is not None else None
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def _acks_sent(self) -> None:
        """Let the message tasks whose futures the last acks resolved send their PUBACKs."""
        for _ in range(100):
            if not self._waiting:
                break
            await asyncio.sleep(0.01)
        for _ in range(3):  # task wakes → returns → gmqtt's done callback writes the PUBACK
            await asyncio.sleep(0)
