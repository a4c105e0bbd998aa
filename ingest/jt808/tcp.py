"""``fleetwatch gateway``: JT/T 808 terminals over TCP → MQTT ``jt808/{phone}/up``.

Per connection: cut the stream into frames (:class:`FrameSplitter`), decode
each, publish the raw frame with QoS 1, and only once the broker has taken it
(``await publish``) reply 0x8001 (or 0x8100 to a registration). Sub-packages
of a split message are held until the last one arrives, then published
together as one payload and acknowledged one by one.

Each connection is its own task with its own limits — idle timeout (three
heartbeat intervals), maximum frame size, a token-bucket rate limit that slows
only that reader, a write timeout — so one slow or hostile terminal never
holds up another. If the broker goes away, terminals are disconnected (their
unacknowledged frames will be resent) and the gateway reconnects with backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field

import aiomqtt

from fleetwatch.errors import ConfigError, FrameError
from ingest.jt808.codec import (
    Decoded,
    decode_frame,
    encode_platform_reply,
    encode_registration_reply,
)
from ingest.jt808.config import GatewayConfig
from ingest.jt808.framing import FrameSplitter
from ingest.jt808.messages import (
    MSG_AUTHENTICATION,
    MSG_LOGOUT,
    MSG_REGISTRATION,
    Authentication,
    SplitPart,
)

__all__ = ["Gateway", "GatewayStats", "gateway_main", "run_gateway"]

log = logging.getLogger("fleetwatch.gateway")

# 0x8001 results (JT/T 808-2019 §8.2)
_OK, _FAIL, _BAD = 0, 1, 2
_MAX_PENDING_SPLITS = 16


@dataclass
class GatewayStats:
    """Counters, for /metrics and tests."""

    connections: int = 0
    connections_total: int = 0
    frames: int = 0
    published: int = 0
    bad_frames: int = 0
    unauthenticated: int = 0
    rate_limited: int = 0
    oversize: int = 0
    idle_closed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class _Bucket:
    """Token bucket; :meth:`delay` says how long to wait before the next frame."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, float(burst), float(burst), now

    def delay(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Gateway:
    """The JT/T 808 server around one MQTT client. Use :func:`run_gateway`."""

    def __init__(self, cfg: GatewayConfig, client: aiomqtt.Client) -> None:
        self.cfg = cfg
        self.client = client
        self.stats = GatewayStats()
        self._secret = (cfg.auth_secret or secrets.token_hex(16)).encode()
        self._tasks: set[asyncio.Task[None]] = set()
        self.broker_lost = asyncio.Event()

    def auth_code(self, phone: str) -> str:
        """The authentication code given to ``phone`` at registration."""
        return hmac.new(self._secret, phone.encode(), hashlib.sha256).hexdigest()[:16]

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
            await _Connection(self, reader, writer).run()
        except (ConnectionError, TimeoutError) as exc:
            log.debug("connection %s ended: %r", peer, exc)
        except aiomqtt.MqttError as exc:
            log.error("broker lost while serving %s: %s", peer, exc)
            self.broker_lost.set()
        finally:
            st.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            if task is not None:
                self._tasks.discard(task)

    async def close_all(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


class _Connection:
    def __init__(
        self, gw: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gw = gw
        self.cfg = gw.cfg
        self.reader = reader
        self.writer = writer
        self.splitter = FrameSplitter(gw.cfg.max_frame_bytes)
        self.bucket = _Bucket(gw.cfg.rate_per_s, gw.cfg.rate_burst, time.monotonic())
        self.serial = 0
        self.authenticated: set[str] = set()
        self.bad_in_row = 0
        self.splits: dict[tuple[str, int, int, int], list[tuple[Decoded, bytes]]] = {}

    def _next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    async def _send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await asyncio.wait_for(self.writer.drain(), self.cfg.write_timeout_s)

    async def _reply(self, d: Decoded, result: int) -> None:
        h = d.header
        await self._send(
            encode_platform_reply(
                h.phone,
                self._next_serial(),
                reply_serial=h.serial,
                reply_msg_id=h.msg_id,
                result=result,
                version=h.version,
            )
        )

    async def _publish(self, phone: str, payload: bytes) -> None:
        await self.gw.client.publish(f"{self.cfg.topic_prefix}/{phone}/up", payload, qos=1)
        self.gw.stats.published += 1

    async def run(self) -> None:
        st = self.gw.stats
        while True:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), self.cfg.idle_timeout_s)
            except TimeoutError:
                st.idle_closed += 1
                return
            if not data:
                return
            frames = self.splitter.feed(data)
            if self.splitter.errors:
                st.oversize += len(self.splitter.errors)
                self.splitter.errors.clear()
                return  # a frame beyond the limit: not a terminal we want to talk to
            for raw in frames:
                wait = self.bucket.delay(time.monotonic())
                if wait > 0:
                    st.rate_limited += 1
                    await asyncio.sleep(wait)
                if not await self._frame(raw):
                    return

    async def _frame(self, raw: bytes) -> bool:
        """Handle one frame; False closes the connection."""
        st = self.gw.stats
        st.frames += 1
        try:
            d = decode_frame(raw, lenient=self.cfg.is_lenient)
        except FrameError as exc:
            st.bad_frames += 1
            st.by_reason[exc.reason] = st.by_reason.get(exc.reason, 0) + 1
            self.bad_in_row += 1
            log.debug("bad frame from %s: %s", self.writer.get_extra_info("peername"), exc)
            return self.bad_in_row < self.cfg.max_bad_frames
        self.bad_in_row = 0
        h, msg = d.header, d.message
        if isinstance(msg, SplitPart):
            return await self._split(d, raw)
        if h.msg_id == MSG_REGISTRATION:
            await self._publish(h.phone, raw)
            await self._send(
                encode_registration_reply(
                    h.phone,
                    self._next_serial(),
                    reply_serial=h.serial,
                    result=0,
                    auth_code=self.gw.auth_code(h.phone),
                    version=h.version,
                )
            )
            return True
        if h.msg_id == MSG_AUTHENTICATION:
            ok = isinstance(msg, Authentication) and hmac.compare_digest(
                msg.code, self.gw.auth_code(h.phone)
            )
            if ok:
                self.authenticated.add(h.phone)
                await self._publish(h.phone, raw)
            await self._reply(d, _OK if ok else _FAIL)
            return True
        if self.cfg.require_auth and h.phone not in self.authenticated:
            st.unauthenticated += 1
            await self._reply(d, _FAIL)
            return True
        await self._publish(h.phone, raw)
        await self._reply(d, _OK)
        if h.msg_id == MSG_LOGOUT:
            self.authenticated.discard(h.phone)
        return True

    async def _split(self, d: Decoded, raw: bytes) -> bool:
        part = d.message
        assert isinstance(part, SplitPart)
        h = d.header
        if self.cfg.require_auth and h.phone not in self.authenticated:
            self.gw.stats.unauthenticated += 1
            await self._reply(d, _FAIL)
            return True
        first = (h.serial - (part.index - 1)) & 0xFFFF
        key = (h.phone, part.msg_id, part.total, first)
        group = self.splits.setdefault(key, [])
        if len(self.splits) > _MAX_PENDING_SPLITS:
            return False
        if any(p.message.index == part.index for p, _ in group):  # type: ignore[union-attr]
            await self._reply(d, _BAD)
            return True
        group.append((d, raw))
        if len(group) < part.total:
            return True
        del self.splits[key]
        group.sort(key=lambda g: g[0].message.index)  # type: ignore[union-attr]
        await self._publish(h.phone, b"".join(r for _, r in group))
        for p, _ in group:
            await self._reply(p, _OK)
        return True


async def run_gateway(
    cfg: GatewayConfig,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[tuple[str, int]] | None = None,
) -> None:
    """Serve until ``stop`` is set. ``started`` receives the bound (host, port).

    Reconnects to the broker with exponential backoff (0.5 s … 30 s); while
    the broker is away no terminal is served.
    """
    stop = stop or asyncio.Event()
    backoff = 0.5
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                cfg.mqtt_host,
                cfg.mqtt_port,
                username=cfg.mqtt_username,
                password=cfg.mqtt_password,
                identifier=f"{cfg.mqtt_client_id}-{secrets.token_hex(3)}",
                max_inflight_messages=cfg.mqtt_max_inflight,
                timeout=10,
            ) as client:
                backoff = 0.5
                await _serve(cfg, client, stop, started)
        except aiomqtt.MqttError as exc:
            log.error("MQTT broker %s:%d: %s", cfg.mqtt_host, cfg.mqtt_port, exc)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, 30.0)


async def _serve(
    cfg: GatewayConfig,
    client: aiomqtt.Client,
    stop: asyncio.Event,
    started: asyncio.Future[tuple[str, int]] | None,
) -> None:
    gw = Gateway(cfg, client)
    server = await asyncio.start_server(
        gw.handle, cfg.listen_host, cfg.listen_port, backlog=1024, limit=cfg.max_frame_bytes
    )
    host, port = server.sockets[0].getsockname()[:2]
    log.info("JT/T 808 gateway on %s:%d → mqtt %s:%d", host, port, cfg.mqtt_host, cfg.mqtt_port)
    if started is not None and not started.done():
        started.set_result((host, port))
    try:
        stopping = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(gw.broker_lost.wait())
        await asyncio.wait([stopping, lost], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        lost.cancel()
    finally:
        server.close()
        await gw.close_all()
        await server.wait_closed()
    if gw.broker_lost.is_set():
        raise aiomqtt.MqttError("broker connection lost")


def _load(argv: list[str]) -> GatewayConfig:
    p = argparse.ArgumentParser(prog="fleetwatch gateway", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML file; its [gateway] table is read")
    p.add_argument("--listen", help="HOST:PORT to accept terminals on (default 127.0.0.1:6808)")
    p.add_argument("--mqtt", help="broker HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--heartbeat", type=float, help="terminal heartbeat interval, seconds")
    p.add_argument("--lenient", action="append", default=[], help="phone of a quirky terminal")
    p.add_argument("--no-auth", action="store_true", help="accept positions before 0x0102")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    data: dict[str, object] = {}
    source = "<command line>"
    if args.config:
        source = args.config
        try:
            with open(args.config, "rb") as fh:
                data = dict(tomllib.load(fh).get("gateway", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                args.config, "gateway", str(exc), "give a readable TOML file"
            ) from exc
    for key, value in (("listen", args.listen), ("mqtt", args.mqtt)):
        if value:
            host, _, port = value.rpartition(":")
            data[f"{key}_host"], data[f"{key}_port"] = host or "127.0.0.1", int(port)
    if args.heartbeat:
        data["heartbeat_s"] = args.heartbeat
    if args.lenient:
        data["lenient_terminals"] = [*data.get("lenient_terminals", []), *args.lenient]  # type: ignore[misc]
    if args.no_auth:
        data["require_auth"] = False
    try:
        return GatewayConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(source, "gateway", str(exc), "see GatewayConfig") from exc


def gateway_main(argv: list[str]) -> int:
    """Entry point of ``fleetwatch gateway``; returns the exit status."""
    try:
        cfg = _load(argv)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(cfg, stop=stop)

    asyncio.run(main())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(gateway_main(sys.argv[1:]))
