"""The composition root: build every stage from the configuration and run them together.

``run_service`` is used by ``fleetwatch serve`` (external broker, PostgreSQL
or SQLite, Redis or memory) and by ``fleetwatch demo`` (embedded broker,
SQLite, memory). The same pipeline code runs in both.

Shutdown (SIGTERM, SIGINT or ``stop``): ingest flushes its last partial
batch, the pipeline writes it and acknowledges it to the broker, the rule
state is saved, then the web server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import Counter, Gauge

from fleet import aio
from fleet.errors import ConfigError, ServiceUnavailable
from fleet.interfaces import CommandBus, FeedSink, FenceSource, RulesEngine
from fleet.metrics import Metrics
from fleet.registry import Registry
from fleetwatch.config import Config
from fleetwatch.pipeline import Pipeline
from ingest.core import Flush, IngestCore
from ingest.json_codec import JsonLimits
from ingest.mqtt import MqttIngestBase, make_ingest
from store.history import StoreHealth

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from geofence.index import LiveFences
    from notify.routing import Router
    from notify.worker import Notifier
    from rules.orders import DispatchOrder
    from store.fanout import Fanout
    from store.history import HistoryStore
    from store.live import LiveState
    from store.records import RecordStore
    from store.retention import RetentionMetrics
    from stream.feed import FeedCore
    from stream.relay import RelayOut

__all__ = ["Service", "build_service", "run_service", "run_web", "serve_forever", "web_forever"]

log = logging.getLogger(__name__)

RULE_STATE_KEY = "rules-engine"
RULE_STATE_EVERY_S = 30.0


@dataclass
class Service:
    cfg: Config
    registry: Registry
    metrics: Metrics
    ingest: MqttIngestBase
    pipeline: Pipeline
    feed: FeedCore  # the root holds the concrete core (the relay needs more than fleet's Feed)
    history: HistoryStore | None
    live: LiveState
    engine: RulesEngine[DispatchOrder]
    fences: FenceSource
    app: Starlette | None
    notifier: Notifier | None = None
    relay: RelayOut | None = None
    fanout: Fanout | None = None
    commands: CommandBus | None = None
    retention: RetentionMetrics | None = None
    rule_state_repaired: Counter | None = None  # vehicles whose saved state lay in the future
    records: RecordStore | None = None  # the fleet on file (records issue)
    started_at: float = field(default_factory=time.time)

    def health(self) -> dict[str, Any]:
        """``/healthz``: ``ok`` is false while anything is down or degraded, with the reason.

        A degraded history (PostgreSQL down, positions spooling to disk) or live state
        (Redis down, in-process fallback) keeps the live feed and alarms working; the
        monitoring room still needs to know, so it shows here and in ``/metrics``.
        """
        mqtt_ok = self.ingest.connected.is_set()
        history = self.history.health() if self.history is not None else StoreHealth()
        history_degraded = history.degraded
        live_degraded = self.live.degraded
        problems = [
            what
            for what, bad in (
                ("mqtt disconnected", not mqtt_ok),
                ("history degraded: positions spooling to local disk", history_degraded),
                ("live state degraded: Redis unreachable, serving from memory", live_degraded),
            )
            if bad
        ]
        out: dict[str, Any] = {
            "ok": not problems,
            "problems": problems,
            "mqtt": "connected" if mqtt_ok else "disconnected",
            "uptime_s": round(time.time() - self.started_at, 1),
            "positions_processed": self.pipeline.positions_processed,
            "positions_stored": self.pipeline.positions_stored,
            "dropped_qos0": self.ingest.dropped_qos0,
        }
        if history.status is not None:
            out["history"] = history.status
        return out

    def register_gauges(self) -> None:
        """Degradation gauges, read when ``/metrics`` is scraped."""
        m = self.metrics
        m.degraded.labels("history").set_function(lambda: float(self._history_health.degraded))
        m.degraded.labels("live").set_function(lambda: float(self.live.degraded))
        m.spooled_rows.set_function(lambda: float(self._history_health.spooled_rows))
        Gauge(
            "fleetwatch_store_refused_rows",
            "positions the history refused: dated outside the days it makes partitions for",
            registry=m.registry,
        ).set_function(lambda: float(self._history_health.refused_rows))

    @property
    def _history_health(self) -> StoreHealth:
        return self.history.health() if self.history is not None else StoreHealth()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides how to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _history(cfg: Config, router: Router | None = None) -> HistoryStore | None:
    if cfg.store.kind == "memory":
        return None
    from store.factory import create_history

    return create_history(cfg.store, cfg.vehicle_state, notify_router=router)


def _live(cfg: Config) -> LiveState:
    from store.factory import create_live

    return create_live(cfg.live, cfg.vehicle_state)


def _jt808_decoder(cfg: Config) -> Any:
    from ingest.jt808.position import decode_position_payloads

    lenient = cfg.gateway.is_lenient

    def decode(payloads: list[bytes]) -> Any:
        return decode_position_payloads(payloads, lenient=lenient)

    return decode


def _fences(cfg: Config) -> LiveFences:
    from geofence.geojson import fences_from_config
    from geofence.index import LiveFences

    base = Path(cfg.source).parent if cfg.source != "<memory>" else Path.cwd()
    return LiveFences(fences_from_config(cfg.fences, cfg.fence_files, base))


def build_service(cfg: Config) -> Service:
    """Construct every stage; nothing connects until :func:`run_service`."""
    from rules.engine import RulesEngine
    from store.records import create_records
    from stream.feed import FeedCore, FeedLimits
    from web.app import create_app
    from web.context import AppContext

    registry = Registry.from_config(cfg)
    records = create_records(cfg.store)
    metrics = Metrics()
    fences = _fences(cfg)
    engine = RulesEngine(
        cfg.rules,
        registry,
        fences=lambda: fences.index,
        timezone=cfg.service.timezone,
        vehicle_state=cfg.vehicle_state,
    )
    router = None
    notifier = None
    if cfg.notify.enabled and cfg.store.kind != "memory":  # no history, no outbox
        from notify.routing import Router
        from notify.worker import build_notifier

        router = Router(
            cfg.notify,
            registry,
            timezone=cfg.service.timezone,
            public_url=cfg.service.public_url,
            source=cfg.source,
            fences=lambda: fences.index,
            places=cfg.web.places,
        )
        notifier = build_notifier(cfg.notify, cfg.store)
    # Notifications are queued in the alarm write's own transaction (the store's outbox).
    history = _history(cfg, router)
    live = _live(cfg)
    feed = FeedCore(
        registry,
        interval_ms=cfg.web.feed_interval_ms,
        client_buffer=cfg.web.feed_client_buffer,
        vehicle_state=cfg.vehicle_state,
        limits=FeedLimits(
            max_message_bytes=cfg.web.feed_max_message_bytes,
            max_vehicles=cfg.web.feed_max_vehicles,
            max_orgs=cfg.web.feed_max_orgs,
        ),
    )
    ic = cfg.ingest
    core = IngestCore(
        registry,
        limits=JsonLimits(
            max_payload_bytes=ic.max_payload_bytes,
            max_positions=ic.max_positions_per_payload,
            max_future_ms=ic.max_future_s * 1000,
            max_past_ms=ic.max_past_days * 86_400_000,
        ),
        max_rows=ic.batch_max_rows,
        max_age_ms=ic.batch_max_age_ms,
        jt808_decoder=_jt808_decoder(cfg),
    )
    # Several nodes: positions and alarms go through Redis so every node's feed sees the fleet.
    relay = fanout = commands = None
    pipeline_feed: FeedSink = feed
    if cfg.live.kind == "redis":
        from store.fanout import Fanout
        from stream.relay import RelayCollector, RelayOut
        from web.commands import RedisCommands

        fanout = Fanout.from_config(cfg.live)
        relay = RelayOut(fanout, registry, local=feed)
        commands = RedisCommands(cfg.live.redis_url, cfg.live.key_prefix, node=relay.node)
        metrics.registry.register(RelayCollector(relay.stats))
        pipeline_feed = relay
    q_in: asyncio.Queue[Flush | None] = asyncio.Queue(ic.queue_batches)
    ingest = make_ingest(cfg.mqtt, core, q_in, metrics)
    pipeline = Pipeline(
        q_in=q_in,
        engine=engine,
        history=history,
        feed=pipeline_feed,
        live=live,
        metrics=metrics,
        ack=ingest.ack,
        finished=ingest.finished,
        store_queue=ic.queue_batches,
    )
    svc = Service(
        cfg,
        registry,
        metrics,
        ingest,
        pipeline,
        feed,
        history,
        live,
        engine,
        fences,
        app=None,
        notifier=notifier,
        relay=relay,
        fanout=fanout,
        commands=commands,
    )
    ctx = AppContext(
        config=cfg,
        registry=registry,
        feed=feed,
        history=history,
        live=live,
        rules=engine,
        fences=fences,
        metrics=metrics.registry,
        health=svc.health,
        on_events=pipeline.inject_events,
        relay=relay,
        commands=commands,
        vehicle_records=records,
        notifier=notifier,
        workday=lambda d: bool(engine.calendar.day(d).workday),
    )
    svc.records = records
    svc.app = create_app(ctx)
    svc.register_gauges()
    if history is not None:
        from store.retention import RetentionMetrics

        svc.retention = RetentionMetrics(metrics.registry)
    svc.rule_state_repaired = Counter(
        "fleetwatch_rule_state_repaired_total",
        "vehicles whose saved rule state lay beyond now + ingest.max_future_s, reset at start",
        registry=metrics.registry,
    )
    return svc


async def _restore_rule_state(svc: Service) -> list[Any]:
    """Load the saved rule state; repair, loudly, what lies in the future (issue 12).

    Returns the close events of the repair (already in history) for the live state."""
    history = svc.history
    if history is None:
        return []
    blob = await history.load_rule_state(RULE_STATE_KEY)
    if not blob:
        return []
    svc.engine.restore(blob)
    log.info("rule state restored (%d bytes)", len(blob))
    now_ms = int(time.time() * 1000)
    vehicles, closes = svc.engine.repair_future(now_ms, svc.cfg.ingest.max_future_s * 1000)
    if not vehicles:
        return []
    if svc.rule_state_repaired is not None:
        svc.rule_state_repaired.inc(len(vehicles))
    log.error(
        "rule state: %d vehicle(s) had a last point after now + %d s (an impossible date let"
        " through before); their state starts afresh and %d open episode(s) are closed: %s",
        len(vehicles),
        svc.cfg.ingest.max_future_s,
        len(closes),
        ", ".join(vehicles[:50]) + (" ..." if len(vehicles) > 50 else ""),
    )
    if closes:
        await history.write_alarm_events(closes)
    await _save_rule_state(svc)
    return closes


async def _save_rule_state(svc: Service) -> None:
    """Persist the engine's per-vehicle state; a database outage only postpones it."""
    if svc.history is None:
        return
    try:
        await svc.history.save_rule_state(RULE_STATE_KEY, svc.engine.state_bytes())
    except ServiceUnavailable as exc:
        log.warning("rule state not saved (%s); will try again", exc)


async def _rule_state_saver(svc: Service, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(stop.wait(), RULE_STATE_EVERY_S)
        await _save_rule_state(svc)


async def run_service(
    cfg: Config,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    service: Service | None = None,
) -> Service:
    """Run until ``stop`` is set; returns the service (for tests to inspect)."""
    svc = service or build_service(cfg)
    repaired: list[Any] = []
    if svc.records is not None:  # the database is the source of truth of the fleet
        from store.records import load_fleet

        await svc.records.open()
        got = await load_fleet(
            svc.records,
            svc.registry,
            cfg.vehicles,
            int(time.time() * 1000),
            cfg.web.establishment,
        )
        log.info("records: %s", got)
    if svc.history is not None:
        await svc.history.open(svc.registry)
        repaired = await _restore_rule_state(svc)
    await svc.live.open(svc.registry)
    if repaired:  # a shared live state (Redis) may still list them as open
        await svc.live.update_alarms(repaired)
    from web.headers import HTTP_SERVER_OPTIONS  # no Server banner

    if svc.app is None:
        raise RuntimeError("the service was built without its web app")
    server = _Server(
        uvicorn.Config(
            svc.app,
            host=cfg.web.host,
            port=cfg.web.port,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            # a longer client message is refused by uvicorn before it is buffered whole
            ws_max_size=cfg.web.feed_max_message_bytes,
            log_level="warning",
            lifespan="on",
            loop="none",
            **HTTP_SERVER_OPTIONS,
        )
    )
    try:
        async with asyncio.TaskGroup() as tg:
            web = tg.create_task(server.serve())
            tg.create_task(svc.ingest.run(stop))
            pipe = tg.create_task(svc.pipeline.run())
            tg.create_task(_rule_state_saver(svc, stop))
            if svc.history is not None and svc.retention is not None:
                from store.retention import retention_loop

                tg.create_task(
                    retention_loop(
                        svc.history,
                        stop,
                        interval_s=cfg.store.retention_interval_s,
                        metrics=svc.retention,
                    )
                )
            if svc.records is not None:  # 到期提醒, daily (records issue)
                from store.records_reminders import reminder_loop

                tg.create_task(
                    reminder_loop(
                        svc.records,
                        svc.registry,
                        svc.pipeline.inject_events,
                        stop,
                        tz=cfg.service.timezone,
                        clock_ms=lambda: int(time.time() * 1000),
                    )
                )
            notifier = tg.create_task(svc.notifier.run()) if svc.notifier is not None else None
            relay_tasks = []
            if svc.relay is not None:
                from stream.relay import relay_in

                relay_tasks = [
                    tg.create_task(svc.relay.run()),
                    tg.create_task(
                        relay_in(
                            svc.fanout,
                            svc.feed,
                            live=svc.live,
                            node=svc.relay.node,
                            stats=svc.relay.stats,
                        )
                    ),
                ]
            while not server.started and not web.done():
                await asyncio.sleep(0.02)
            log.info("FleetWatch serving on http://%s:%s/", cfg.web.host, cfg.web.port)
            if started is not None:
                started.set()
            await pipe
            await _save_rule_state(svc)
            if svc.relay is not None:
                await svc.relay.drained(5.0)
            for t in relay_tasks:
                t.cancel()
            if notifier is not None and svc.notifier is not None:
                svc.notifier.stop()
            server.should_exit = True
    finally:
        if svc.fanout is not None:
            await svc.fanout.close()
        if svc.commands is not None:
            await svc.commands.close()
        await svc.live.close()
        if svc.history is not None:
            await svc.history.close()
        if svc.records is not None:
            await svc.records.close()
    return svc


def serve_forever(cfg: Config) -> int:
    """``fleetwatch serve``: run until SIGINT/SIGTERM, then shut down cleanly."""
    if cfg.cluster.partitions > 0:
        raise ConfigError(
            cfg.source,
            "cluster.partitions",
            f"{cfg.cluster.partitions}: this is a cluster. Run engine"
            " nodes (`fleetwatch engine --config F --node NAME --http-port P`, two or more:"
            " they share the partitions and stand by for each other) and web nodes"
            " (`fleetwatch web --config F --port P`, behind the load balancer); see"
            " docs/cluster.md",
            "`fleetwatch serve` is the single process of partitions = 0",
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_service(cfg, stop)

    try:
        import uvloop

        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    return 0


async def run_web(
    cfg: Config,
    stop: asyncio.Event,
    *,
    port: int | None = None,
    started: asyncio.Event | None = None,
) -> Any:
    """``fleetwatch web``: a stateless web and feed node of a cluster (issue 19).

    No ingest and no engine: the feed is fed from Redis (``stream.relay.relay_in``: every
    engine node's positions and alarms), the API reads history and the live state, and
    operator actions go on the command bus to the engine nodes, which apply them to the
    partition owning the vehicle. The events an action causes here (a close by hand of an
    episode no engine holds) are written to history and the live state and go out on the
    relay, so every web node's desks see them. Kill it: nothing is lost, a page reconnects
    to another web node.
    """
    from store.fanout import Fanout
    from store.records import create_records, load_fleet
    from stream.feed import FeedCore, FeedLimits
    from stream.relay import RelayCollector, RelayOut, relay_in
    from web.app import create_app
    from web.commands import RedisCommands
    from web.context import AppContext
    from web.headers import HTTP_SERVER_OPTIONS

    if cfg.live.kind != "redis":
        raise ConfigError(cfg.source, "live.kind", "web nodes are fed through Redis", '"redis"')
    from rules.engine import RulesEngine

    registry = Registry.from_config(cfg)
    metrics = Metrics()
    records = create_records(cfg.store)
    fences = _fences(cfg)
    calendar = RulesEngine(  # the working calendar only (AppContext.workday); never fed
        cfg.rules, registry, fences=lambda: fences.index, timezone=cfg.service.timezone,
        vehicle_state=cfg.vehicle_state,
    ).calendar  # fmt: skip
    history = _history(cfg)
    live = _live(cfg)
    feed = FeedCore(
        registry,
        interval_ms=cfg.web.feed_interval_ms,
        client_buffer=cfg.web.feed_client_buffer,
        vehicle_state=cfg.vehicle_state,
        limits=FeedLimits(
            max_message_bytes=cfg.web.feed_max_message_bytes,
            max_vehicles=cfg.web.feed_max_vehicles,
            max_orgs=cfg.web.feed_max_orgs,
        ),
    )
    fanout = Fanout(cfg.live.redis_url, cfg.live.key_prefix)
    relay = RelayOut(fanout, registry, local=feed)
    metrics.registry.register(RelayCollector(relay.stats))
    commands = RedisCommands(cfg.live.redis_url, cfg.live.key_prefix, node=f"web-{relay.node}")
    started_at = time.time()

    async def on_events(events: list[Any]) -> None:
        if history is not None:
            await history.write_alarm_events(events)
        await live.update_alarms(events)
        for ev in events:
            relay.alarm(ev)

    def health() -> dict[str, Any]:
        h = history.health() if history is not None else StoreHealth()
        problems = [
            what
            for what, bad in (
                ("history degraded", h.degraded),
                ("live state degraded: Redis unreachable", live.degraded),
            )
            if bad
        ]
        return {
            "ok": not problems,
            "problems": problems,
            "role": "web",
            "uptime_s": round(time.time() - started_at, 1),
            "feed_clients": feed.stats.clients,
        }

    ctx = AppContext(
        config=cfg,
        registry=registry,
        feed=feed,
        history=history,
        live=live,
        rules=None,
        fences=fences,
        metrics=metrics.registry,
        health=health,
        on_events=on_events,
        relay=relay,
        commands=commands,
        vehicle_records=records,
        workday=lambda d: bool(calendar.day(d).workday),
    )
    app = create_app(ctx)
    server = _Server(
        uvicorn.Config(
            app,
            host=cfg.web.host,
            port=cfg.web.port if port is None else port,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_max_size=cfg.web.feed_max_message_bytes,
            log_level="warning",
            lifespan="on",
            loop="none",
            **HTTP_SERVER_OPTIONS,
        )
    )
    await records.open()
    await load_fleet(
        records, registry, cfg.vehicles, int(time.time() * 1000), cfg.web.establishment
    )
    if history is not None:
        await history.open(registry)
    await live.open(registry)
    try:
        async with asyncio.TaskGroup() as tg:
            web = tg.create_task(server.serve())
            tasks = [
                tg.create_task(relay.run()),
                tg.create_task(
                    relay_in(fanout, feed, live=live, node=relay.node, stats=relay.stats)
                ),
            ]
            while not server.started and not web.done():
                await asyncio.sleep(0.02)
            log.info("FleetWatch web node on http://%s:%s/", cfg.web.host, server.config.port)
            if started is not None:
                started.set()
            await stop.wait()
            await relay.drained(5.0)
            for t in tasks:
                t.cancel()
            server.should_exit = True
    finally:
        await fanout.close()
        await commands.close()
        await live.close()
        if history is not None:
            await history.close()
        await records.close()
    return ctx


def web_forever(cfg: Config, port: int | None = None) -> int:
    """``fleetwatch web``: run until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_web(cfg, stop, port=port)

    try:
        import uvloop

        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    return 0
