"""The asyncio adapter of the live feed: the ``/ws/live`` endpoint and the frame ticker.

A thin layer over :class:`stream.feed.FeedCore` for Starlette (served by uvicorn,
whose websocket implementation is the ``websockets`` library). The token comes
as the ``token`` query parameter, or in a first message ``{"op": "auth",
"token": ..., "last_seq": ..., "last_gid": ..., "node": ...}`` within five seconds;
``last_seq``, ``last_gid`` (the global id of the last alarm frame the page saw) and
``node`` (the ``node`` of its last snapshot) may also be query parameters. With
them :meth:`FeedCore.connect` resumes: on the same node by ``last_seq``, on another
by ``last_gid`` (the snapshot's ``resume`` and ``gap`` say how it went). A
malformed ``last_gid`` is refused with an error frame and the connection goes on
without it (counted in ``refused_requests``).

Close codes: 4401 no or bad token, or the session ended while the socket was
open (reason ``session_expired`` or ``session_revoked``; checked every
``recheck_s`` by :meth:`FeedServer._watch_session`), 4408 too slow (outbox
overflow: more than ``client_buffer`` frames waiting — position and alarm
frames and the replies to the client's own requests alike, so a client that
sends pings without reading is cut off, not buffered), 1011 server error.

A client message longer than ``FeedLimits.max_message_bytes`` is answered
``{"type": "error", "reason": "message_too_large"}`` without being parsed; a
subscription over the id limits with ``subscription_too_large``. Every answer
goes through the client's outbox in :class:`~stream.feed.FeedCore`.

Start :meth:`FeedServer.run` as a task (``create_app`` does it in its lifespan),
route ``/ws/live`` to :meth:`FeedServer.endpoint`, then feed positions and alarms
to the core from the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fleet import aio
from fleet.errors import BadRecord
from stream.feed import FeedCore, Subscription, parse_client_message

__all__ = ["Authenticate", "FeedCollector", "FeedServer", "SessionEnded"]

log = logging.getLogger(__name__)

#: Maps a token to the organisation whose subtree its holder may see, or None if refused.
Authenticate = Callable[[str], Awaitable[str | None]]
#: Why a token's session has ended (``session_expired``, ``session_revoked``, ...), or
#: None while it lives. Called for each open socket every ``recheck_s``; a call also
#: keeps a sliding session alive.
SessionEnded = Callable[[str], Awaitable[str | None]]

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
AUTH_TIMEOUT_S = 5.0
#: How long the close frame may wait behind a full send buffer before the socket is dropped.
CLOSE_TIMEOUT_S = 5.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Conn:
    ws: WebSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    too_slow: bool = False
    session_end: str | None = None  # why its session ended while open (close 4401)


class FeedServer:
    """Serves :class:`FeedCore` frames to websocket clients."""

    def __init__(
        self,
        core: FeedCore,
        authenticate: Authenticate,
        clock_ms: Callable[[], int] = wall_ms,
        *,
        session_ended: SessionEnded | None = None,
        recheck_s: float = 2.0,
    ) -> None:
        self.core = core
        if not core.node:
            # a name for this process, so that a page knows when it reconnected elsewhere
            core.node = uuid.uuid4().hex[:12]
        self.authenticate = authenticate
        self.clock_ms = clock_ms
        self.session_ended = session_ended
        self.recheck_s = recheck_s
        self._ids = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._kick = asyncio.Event()
        self._text: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the ticker ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive frames_due and wake writers until cancelled."""
        self._loop = asyncio.get_running_loop()
        self.core.on_ready = self._on_ready
        interval = self.core.interval_ms
        try:
            while True:
                now = self.clock_ms()
                self.core.frames_due(now)
                self.wake_ready()
                due = self.core.next_due_ms()
                delay = (
                    interval if due is None else min(max(due - now, interval // 10, 1), interval)
                )
                self._kick.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when
                # a cancel arrives just as the kick is set, and the ticker then never stops
                # (the app's shutdown hung on it).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay / 1000):
                        await self._kick.wait()
        finally:
            self.core.on_ready = None

    def wake_ready(self) -> None:
        """Wake the writer of every client with something queued; flag slow ones."""
        for cid in self.core.take_closing():
            conn = self._conns.get(cid)
            if conn is not None:
                conn.too_slow = True
                conn.wake.set()
        for cid in self.core.take_ready():
            conn = self._conns.get(cid)
            if conn is not None:
                conn.wake.set()

    def _on_ready(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._kick.set()
        else:
            loop.call_soon_threadsafe(self._kick.set)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- one connection -------------------------------------------------------------------------

    async def endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        token = ws.query_params.get("token")
        last_seq = _as_int(ws.query_params.get("last_seq"))
        last_gid = _as_str(ws.query_params.get("last_gid"))
        from_node = _as_str(ws.query_params.get("node"))
        if not token:
            try:
                msg = parse_client_message(await aio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S))
            except (TimeoutError, BadRecord, WebSocketDisconnect, KeyError):
                msg = {}
            if msg.get("op") == "auth" and isinstance(msg.get("token"), str):
                token = msg["token"]
                last_seq = _as_int(msg.get("last_seq"))
                last_gid = _as_str(msg.get("last_gid"))
                from_node = _as_str(msg.get("node"))
        org = await self.authenticate(token) if token else None
        if org is None:
            why = await self.session_ended(token) if token and self.session_ended else None
            await _refuse(ws, why or "unauthorized", CLOSE_UNAUTHORIZED)
            return
        cid = next(self._ids)
        conn = _Conn(ws)
        self._conns[cid] = conn
        try:
            self.core.connect(
                cid, org, self.clock_ms(), last_seq, last_gid=last_gid, from_node=from_node
            )
        except BadRecord as exc:
            self.core.stats.refused_requests += 1
            self.core.connect(cid, org, self.clock_ms(), last_seq, from_node=from_node)
            self.core.reply(
                cid, orjson.dumps({"type": "error", "reason": exc.reason, "detail": exc.detail})
            )
        conn.wake.set()
        reader = asyncio.create_task(self._read(cid, conn))
        writer = asyncio.create_task(self._write(cid, conn))
        tasks = {reader, writer}
        if self.session_ended is not None and token:
            tasks.add(asyncio.create_task(self._watch_session(conn, token)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.error("live feed client %s failed", cid, exc_info=t.exception())
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            cut_off = conn.too_slow or not self.core.connected(cid)
            self.core.disconnect(cid)
            self._conns.pop(cid, None)
            code = CLOSE_TOO_SLOW if cut_off else 1000
            reason = ""
            if conn.session_end is not None:
                code, reason = CLOSE_UNAUTHORIZED, conn.session_end
            if ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await aio.wait_for(_close(ws, code, reason), CLOSE_TIMEOUT_S)

    async def _watch_session(self, conn: _Conn, token: str) -> None:
        """Return (ending the connection) once the token's session has ended."""
        assert self.session_ended is not None
        while True:
            await asyncio.sleep(self.recheck_s)
            why = await self.session_ended(token)
            if why is not None:
                conn.session_end = why
                return

    async def _read(self, cid: int, conn: _Conn) -> None:
        """Answer the client's requests through its outbox; return when it is gone or cut off."""
        limits = self.core.limits
        while self.core.connected(cid):
            msg = await conn.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            raw = msg.get("text") or msg.get("bytes") or b""
            try:
                if len(raw) > limits.max_message_bytes:
                    raise BadRecord(
                        "message_too_large",
                        f"{len(raw)} bytes; at most {limits.max_message_bytes} in one message",
                    )
                req = parse_client_message(raw)
                op = req["op"]
                if op == "subscribe":
                    sub = Subscription.from_message(req, limits)
                    self.core.subscribe(cid, sub, self.clock_ms())
                elif op == "ping":
                    self.core.reply(cid, orjson.dumps({"type": "pong", "seq": self.core.seq}))
                elif op != "auth":
                    raise BadRecord("bad_message", f"unknown op {op!r}")
            except BadRecord as exc:
                self.core.stats.refused_requests += 1
                self.core.reply(
                    cid,
                    orjson.dumps({"type": "error", "reason": exc.reason, "detail": exc.detail}),
                )
            conn.wake.set()
            if self.core.pending(cid) * 2 >= self.core.client_buffer:
                # Messages parsed from one read arrive without a suspension: let the writer
                # take the answers first, so only a client that does not read overflows.
                await asyncio.sleep(0)

    async def _write(self, cid: int, conn: _Conn) -> None:
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            if conn.too_slow:
                return
            for frame in self.core.drain(cid):
                await conn.ws.send_text(self._as_text(frame))

    def _as_text(self, frame: bytes) -> str:
        """Decode a shared frame once, not once per client (ASGI wants str for text frames)."""
        hit = self._text.get(id(frame))
        if hit is not None and hit[0] is frame:
            return hit[1]
        text = frame.decode()
        self._text[id(frame)] = (frame, text)
        if len(self._text) > 64:
            self._text.popitem(last=False)
        return text


async def _close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Send the close frame, then read (and drop) until the peer's close reply.

    Without the reads the server stops reading a client that still has messages
    in flight, closes the socket with them unread, and the kernel answers with a
    reset that destroys the close frame (and its code) before the client reads it.
    """
    await ws.close(code, reason)
    while ws.client_state != WebSocketState.DISCONNECTED:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return


async def _refuse(ws: WebSocket, reason: str, code: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(orjson.dumps({"type": "error", "reason": reason}).decode())
        await ws.close(code, reason)


def _as_str(v: Any) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= 64 else None


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    return None


class FeedCollector(Collector):
    """Exposes the feed's counters to Prometheus (register on the app's CollectorRegistry)."""

    def __init__(self, core: FeedCore) -> None:
        self.core = core

    def collect(self) -> Iterator[Any]:
        s = self.core.stats
        yield GaugeMetricFamily(
            "fleetwatch_ws_clients", "Live feed websocket clients connected", value=s.clients
        )
        frames = CounterMetricFamily(
            "fleetwatch_feed_frames", "Frames queued to live feed clients", labels=["type"]
        )
        frames.add_metric(["positions"], s.frames_positions)
        frames.add_metric(["alarm"], s.frames_alarm)
        frames.add_metric(["snapshot"], s.frames_snapshot)
        yield frames
        yield CounterMetricFamily(
            "fleetwatch_feed_items", "Vehicle items sent in position frames", value=s.items_sent
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_superseded",
            "Position frames dropped because a newer one replaced them (slow client)",
            value=s.superseded,
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_slow_disconnects",
            "Clients disconnected because their outbox overflowed",
            value=s.slow_disconnects,
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_replies", "Replies (pong, error) queued to clients", value=s.replies
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_refused_requests",
            "Client messages refused (bad, too large, over the subscription limits)",
            value=s.refused_requests,
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_resumes",
            "Reconnects given exactly the alarm frames they missed (by seq or global id)",
            value=s.resumes,
        )
        yield CounterMetricFamily(
            "fleetwatch_feed_resume_gaps",
            "Reconnects told that alarm changes may be missing (gap: true)",
            value=s.resume_gaps,
        )
        yield GaugeMetricFamily(
            "fleetwatch_feed_cached_filters",
            "Subscription masks held for connected clients",
            value=self.core.cached_filters,
        )
        yield GaugeMetricFamily(
            "fleetwatch_feed_seq", "Live feed sequence number", value=self.core.seq
        )
