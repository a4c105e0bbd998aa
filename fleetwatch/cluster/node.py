"""``fleetwatch engine``: a node that owns partitions of the fleet through an etcd lease.

::

    etcd ◀─ keep-alive every renew_every_s ─┐        watchdog (every 0.1 s, no I/O):
         ◀─ snapshot (nodes, owners) ───────┤          Ownership.tick(now) → Stop
         ◀─ claim / release txn ────────────┤
                                            ▼
                         Ownership (pure) ─▶ Claim / Start / Release / Stop
                                            ▼
                  Partition k: MQTT {client_id}-p{k} → ingest → rules → history → Redis relay

Shared by the node's partitions: the registry (and the vehicle records), the fences,
the history store, the live state, the Redis relay and the command bus. Operator
actions arrive on the command bus (``web.commands``) and reach the engine of the
partition owning the vehicle (:class:`PartitionedRules`), through the web app's own
command handler (the app runs here for it, and serves ``/health`` and ``/metrics``
on ``--http-port``; its page and API work too).

SIGTERM: stop claiming; every owned partition stops cleanly (flush, write, ack, save
its state); the lease is revoked, so every key goes at once and a standby claims at its
next snapshot (≤ ``renew_every_s``) instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvicorn

from fleet import aio
from fleet.cluster import partition_of
from fleet.errors import ConfigError, ServiceUnavailable
from fleet.events import AlarmEvent
from fleet.metrics import Metrics
from fleet.registry import Registry
from fleetwatch.cluster.etcd import EtcdCluster
from fleetwatch.cluster.ownership import Action, Claim, Ownership, Release, Start, Stop
from fleetwatch.cluster.partition import Partition
from fleetwatch.config import Config
from rules.engine import RulesEngine
from rules.orders import DispatchOrder

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["EngineNode", "PartitionedRules", "engine_main", "run_engine"]

log = logging.getLogger(__name__)

WATCHDOG_S = 0.1  # the fencing check's period
STOP_TIMEOUT_S = 15.0  # a partition's clean stop, at most
MAX_ORDERS = 200_000  # orders kept to hand to a partition taken over later


def default_node_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class PartitionedRules:
    """The engines of this node's partitions behind the one ``RulesEngine`` seam the web
    uses (``AppContext.rules``): an action goes to the engine of the vehicle's partition
    when this node owns it, and does nothing otherwise (the owner hears it on the bus).

    Orders are also kept (newest version per id, at most ``MAX_ORDERS``) so that a
    partition this node takes over later starts with every order of its vehicles."""

    def __init__(self, registry: Registry, partitions: int, calendar_engine: RulesEngine) -> None:
        self.registry = registry
        self.partitions = partitions
        self.engines: dict[int, RulesEngine] = {}
        self.orders: dict[str, DispatchOrder] = {}
        self.calendar = calendar_engine.calendar
        self._calendar_engine = calendar_engine

    def _part(self, vehicle_id: str) -> int | None:
        v = self.registry.by_id(vehicle_id)
        if v is None:
            return None
        return partition_of(self.registry.terminals[v], self.partitions)

    def orders_of(self, k: int) -> list[DispatchOrder]:
        return [o for o in self.orders.values() if self._part(o.vehicle_id) == k]

    # -- RulesEngine ------------------------------------------------------------------------

    def process(self, batch: Any) -> list[AlarmEvent]:
        raise RuntimeError("positions reach a partition's own engine, not the node's")

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        return []

    def add_order(self, order: DispatchOrder) -> list[AlarmEvent]:
        if order.id not in self.orders and len(self.orders) >= MAX_ORDERS:
            self.orders.pop(next(iter(self.orders)))
        self.orders[order.id] = order
        k = self._part(order.vehicle_id)
        eng = self.engines.get(k) if k is not None else None
        return eng.add_order(order) if eng is not None else []

    def close_episode(self, alarm_id: str, now_ms: int) -> list[AlarmEvent]:
        out: list[AlarmEvent] = []
        for eng in list(self.engines.values()):
            out += eng.close_episode(alarm_id, now_ms)
        return out

    def state_bytes(self) -> bytes:
        raise RuntimeError("each partition saves its own state (rules-engine/p{k})")

    def restore(self, blob: bytes) -> None:
        raise RuntimeError("each partition restores its own state")

    def repair_future(self, now_ms: int, max_ahead_ms: int) -> tuple[list[str], list[AlarmEvent]]:
        return [], []


@dataclass
class EngineNode:
    cfg: Config
    node: str
    http_port: int
    registry: Registry
    metrics: Metrics
    rules: PartitionedRules
    machine: Ownership
    etcd: EtcdCluster
    parts: dict[int, Partition] = field(default_factory=dict)
    app: Starlette | None = None
    history: Any = None
    live: Any = None
    feed_sink: Any = None
    started_at: float = field(default_factory=time.time)
    observed: bool = False  # one snapshot of etcd seen since start
    takeovers: int = 0
    step_downs: int = 0
    _done_positions: int = 0

    def health(self) -> dict[str, Any]:
        owned = self.machine.owned()
        ready = (
            self.observed
            and self.machine.has_lease
            and all(k in self.parts and self.parts[k].ready.is_set() for k in owned)
        )
        return {
            "ok": bool(ready),
            "node": self.node,
            "owned": owned,
            "epochs": {str(k): e for k, e in self.machine.epochs().items()},
            "ready": bool(ready),
            "live_nodes": self.machine.live_nodes,
            "positions_processed": self._done_positions
            + sum(p.positions_processed for p in self.parts.values()),
            "takeovers": self.takeovers,
            "step_downs": self.step_downs,
            "replayed": {
                str(k): {"positions": p.replayed.positions, "seconds": round(p.replayed.seconds, 3)}
                for k, p in self.parts.items()
            },
            "uptime_s": round(time.time() - self.started_at, 1),
        }


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def run_engine(
    cfg: Config,
    stop: asyncio.Event,
    *,
    node: str = "",
    http_port: int = 0,
    started: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> EngineNode:
    """Run an engine node until ``stop``; returns it (tests inspect it)."""
    cc = cfg.cluster
    if cc.partitions <= 0:
        raise ConfigError(
            cfg.source, "cluster.partitions", "0 (no cluster)", "set it > 0 for engine nodes"
        )
    if cfg.live.kind != "redis":
        raise ConfigError(
            cfg.source, "live.kind", "engine nodes feed the web nodes through Redis", '"redis"'
        )
    if cfg.store.kind == "memory":
        raise ConfigError(cfg.source, "store.kind", "engine nodes share one history", '"postgres"')
    from fleetwatch.service import _fences
    from geofence.index import LiveFences
    from store.factory import create_history, create_live
    from store.fanout import Fanout
    from store.records import create_records, load_fleet
    from stream.feed import FeedCore
    from stream.relay import RelayCollector, RelayOut, relay_in
    from web.app import create_app
    from web.commands import RedisCommands
    from web.context import AppContext
    from web.headers import HTTP_SERVER_OPTIONS

    name = node or cc.node or default_node_name()
    registry = Registry.from_config(cfg)
    metrics = Metrics()
    records = create_records(cfg.store)
    fences: LiveFences = _fences(cfg)

    def make_engine() -> RulesEngine:
        return RulesEngine(
            cfg.rules,
            registry,
            fences=lambda: fences.index,
            timezone=cfg.service.timezone,
            vehicle_state=cfg.vehicle_state,
        )

    rules = PartitionedRules(registry, cc.partitions, make_engine())
    router = notifier = None
    if cfg.notify.enabled:  # queued in the alarm write's transaction; workers share the outbox
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
    history: Any
    if cfg.store.kind == "postgres":
        # No local spool on an engine node: a position is acknowledged only once it is in the
        # shared database, where a new owner's replay finds it. With PostgreSQL away the
        # partition's pipeline fails, the partition is released and claimed again, and its
        # restore waits for the database; meanwhile the broker keeps the messages.
        from store.postgres import PostgresHistory

        history = PostgresHistory(cfg.store, vehicle_state=cfg.vehicle_state, notify_router=router)
    else:
        history = create_history(cfg.store, cfg.vehicle_state, notify_router=router)
    live = create_live(cfg.live, cfg.vehicle_state)
    feed = FeedCore(registry, vehicle_state=cfg.vehicle_state)  # Redis-down fallback only
    fanout = Fanout(cfg.live.redis_url, cfg.live.key_prefix)
    relay = RelayOut(fanout, registry, local=feed)
    metrics.registry.register(RelayCollector(relay.stats))
    commands = RedisCommands(cfg.live.redis_url, cfg.live.key_prefix, node=f"engine-{name}")
    machine = Ownership(name, cc.partitions, cc.lease_ttl_s, cc.step_down_margin_s)
    etcd = EtcdCluster(cc.etcd, cc.prefix, name, timeout_s=min(1.0, cc.renew_every_s))
    en = EngineNode(
        cfg, name, http_port, registry, metrics, rules, machine, etcd,
        history=history, live=live, feed_sink=relay,
    )  # fmt: skip

    async def on_events(events: list[AlarmEvent]) -> None:
        """Events an operator caused: through the owning partition's pipeline, or (not
        owned here) to history, the live state and the relay directly."""
        by_part: dict[int | None, list[AlarmEvent]] = {}
        for ev in events:
            k = partition_of(registry.terminals[ev.vehicle], cc.partitions)
            by_part.setdefault(k if k in en.parts else None, []).append(ev)
        for part, evs in by_part.items():
            if part is not None:
                await en.parts[part].pipeline.inject_events(evs)
            else:
                await history.write_alarm_events(evs)
                await live.update_alarms(evs)
                for ev in evs:
                    relay.alarm(ev)

    ctx = AppContext(
        config=cfg,
        registry=registry,
        feed=feed,
        history=history,
        live=live,
        rules=rules,
        fences=fences,
        metrics=metrics.registry,
        health=en.health,
        on_events=on_events,
        relay=relay,
        commands=commands,
        vehicle_records=records,
        notifier=notifier,
        workday=lambda d: bool(rules.calendar.day(d).workday),
    )
    app = create_app(ctx)
    from prometheus_client import Gauge

    Gauge(
        "fleetwatch_cluster_owned_partitions",
        "partitions this engine node owns",
        registry=metrics.registry,
    ).set_function(lambda: float(len(machine.owned())))
    Gauge(
        "fleetwatch_cluster_step_downs",
        "partitions stopped without a clean release (fenced)",
        registry=metrics.registry,
    ).set_function(lambda: float(en.step_downs))
    Gauge(
        "fleetwatch_cluster_takeovers",
        "partitions this node started owning",
        registry=metrics.registry,
    ).set_function(lambda: float(en.takeovers))
    Gauge(
        "fleetwatch_cluster_etcd_failures",
        "etcd calls that failed (time-out, refused)",
        registry=metrics.registry,
    ).set_function(lambda: float(etcd.calls_failed))
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request: Request) -> JSONResponse:
        h = en.health()
        return JSONResponse(h, status_code=200 if h["ready"] else 503)

    app.router.routes.insert(0, Route("/health", health))
    en.app = app

    def on_fenced(k: int, reason: str) -> None:
        # a refused save: another owner has a higher epoch. Stop now, as a lost key.
        stops = machine.lost(k, reason)
        if stops:
            asyncio.get_running_loop().create_task(execute(stops))

    async def start_partition(k: int, epoch: int) -> None:
        part = Partition(
            k,
            epoch,
            cfg=cfg,
            registry=registry,
            history=history,
            live=live,
            feed=relay,
            metrics=metrics,
            make_engine=make_engine,
            on_fenced=on_fenced,
            clock=clock,
        )
        for o in rules.orders_of(k):
            part.engine.add_order(o)
        en.parts[k] = part
        rules.engines[k] = part.engine
        en.takeovers += 1
        log.info("node %s: partition %d owned (epoch %d)", name, k, epoch)
        task = part.start()

        def ended(t: asyncio.Task[None]) -> None:
            # a partition's pipeline that stops by itself (not by stop()) failed: say so and
            # hand the partition over instead of holding a key with nobody consuming
            if t.cancelled() or en.parts.get(k) is not part or part.stopping:
                return
            exc = t.exception()
            log.error("node %s: partition %d failed: %r; releasing it", name, k, exc)
            acts = machine.give_up(k)
            if acts:
                asyncio.get_running_loop().create_task(execute(acts))

        task.add_done_callback(ended)

    async def end_partition(k: int, clean: bool) -> None:
        part = en.parts.get(k)
        rules.engines.pop(k, None)
        if part is not None:
            await part.stop(clean=clean, timeout_s=STOP_TIMEOUT_S)
            en._done_positions += part.positions_processed
            en.parts.pop(k, None)

    async def execute(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Stop):
                en.step_downs += 1
                log.warning("node %s: partition %d stops: %s", name, a.partition, a.reason)
                await end_partition(a.partition, clean=False)
                machine.stopped(a.partition)
            elif isinstance(a, Release):
                log.info("node %s: releasing partition %d", name, a.partition)
                await end_partition(a.partition, clean=True)
                with contextlib.suppress(ServiceUnavailable):
                    await etcd.release(a.partition, a.epoch)
                machine.released(a.partition)
            elif isinstance(a, Claim):
                try:
                    epoch = await etcd.claim(a.partition)
                except ServiceUnavailable:
                    epoch = None
                if epoch is None:
                    machine.claim_failed(a.partition)
                else:
                    await execute(machine.claimed(a.partition, epoch))
            elif isinstance(a, Start):
                await start_partition(a.partition, a.epoch)

    leaving = asyncio.Event()

    async def watchdog() -> None:
        while True:
            stops = machine.tick(clock())
            if stops:
                # stop consuming at once: cancel each partition's ingest before anything else
                for a in stops:
                    if isinstance(a, Stop) and a.partition in en.parts:
                        en.parts[a.partition]._acking = False
                await execute(stops)
            await asyncio.sleep(WATCHDOG_S)

    async def grant() -> None:
        sent = clock()
        old = etcd.lease_id
        await etcd.grant(cc.lease_ttl_s, {"http": http_port})
        machine.lease_granted(sent)
        if old is not None:  # keys of a lease we stepped down from: free them now
            with contextlib.suppress(ServiceUnavailable):
                lid, etcd.lease_id = etcd.lease_id, old
                await etcd.revoke()
                etcd.lease_id = lid

    async def control() -> None:
        while not leaving.is_set():
            t0 = clock()
            try:
                if not machine.has_lease:
                    if not any(s.value == "fenced" for s in machine.state):
                        await grant()
                else:
                    sent = clock()
                    if await etcd.keepalive():
                        machine.renewed(sent)
                    else:
                        await execute(machine.lease_lost())
                if not leaving.is_set():
                    snap = await etcd.snapshot()
                    en.observed = True
                    await execute(machine.observe(clock(), snap.nodes, snap.owners))
            except ServiceUnavailable as exc:
                log.warning("node %s: etcd: %s", name, exc)
            except Exception:  # keep the control loop; the watchdog fences regardless
                log.exception("node %s: control loop", name)
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(leaving.wait(), max(0.05, cc.renew_every_s - (clock() - t0)))

    async def keep_renewing() -> None:
        """While leaving: only keep the lease alive (the clean stops may take seconds)."""
        while True:
            with contextlib.suppress(ServiceUnavailable):
                sent = clock()
                if await etcd.keepalive():
                    machine.renewed(sent)
            await asyncio.sleep(cc.renew_every_s)

    server = _Server(
        uvicorn.Config(
            app,
            host=cfg.web.host,
            port=http_port,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            log_level="warning",
            lifespan="on",
            loop="none",
            **HTTP_SERVER_OPTIONS,
        )
    )
    await records.open()
    got = await load_fleet(
        records, registry, cfg.vehicles, int(time.time() * 1000), cfg.web.establishment
    )
    log.info("records: %s", got)
    await history.open(registry)
    await live.open(registry)
    try:
        async with asyncio.TaskGroup() as tg:
            web = tg.create_task(server.serve())
            relay_tasks = [
                tg.create_task(relay.run()),
                tg.create_task(
                    relay_in(fanout, feed, live=live, node=relay.node, stats=relay.stats)
                ),
            ]
            while not server.started and not web.done():
                await asyncio.sleep(0.02)  # the app's lifespan (orders, fences) is done
            notify_task = tg.create_task(notifier.run()) if notifier is not None else None
            dog = tg.create_task(watchdog())
            ctl = tg.create_task(control())
            log.info("engine node %s: http://%s:%s/health", name, cfg.web.host, http_port)
            if started is not None:
                started.set()
            await stop.wait()
            leaving.set()
            await ctl
            renew = tg.create_task(keep_renewing())
            owned = list(en.parts)
            await asyncio.gather(*(end_partition(k, clean=True) for k in owned))
            renew.cancel()
            dog.cancel()
            with contextlib.suppress(ServiceUnavailable):
                await etcd.revoke()
            log.info("node %s: released %s, lease revoked", name, owned)
            await relay.drained(5.0)
            for t in relay_tasks:
                t.cancel()
            if notifier is not None and notify_task is not None:
                notifier.stop()
            server.should_exit = True
    finally:
        await fanout.close()
        await commands.close()
        await live.close()
        await history.close()
        await records.close()
    return en


def engine_main(cfg: Config, node: str, http_port: int) -> int:
    """``fleetwatch engine``: run until SIGINT/SIGTERM, then release cleanly."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_engine(cfg, stop, node=node, http_port=http_port)

    try:
        import uvloop

        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    return 0
