"""What the web app is given by the composition root (``fleetwatch.service``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from fleet.events import AlarmEvent
from fleet.interfaces import CommandBus, RulesEngine
from fleet.model import ServiceConfig, VehicleConfig
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from geofence.index import LiveFences
from ingest.config import MqttConfig
from ingest.jt808.config import CommandsConfig, GatewayConfig
from notify.config import NotifyConfig
from notify.worker import Notifier
from rules.config import RulesConfig
from rules.orders import DispatchOrder
from store.config import StoreConfig
from store.costs import CostStore
from store.history import HistoryStore
from store.live import LiveState
from store.records import RecordStore
from stream.feed import FeedCore
from stream.relay import RelayOut
from web.config import WebConfig

if TYPE_CHECKING:
    from web.reports_api import ReportsState

__all__ = ["AppContext", "EventSink", "SiteConfig"]


class SiteConfig(Protocol):
    """What the web reads of the whole configuration. ``fleetwatch.config.Config`` has this
    shape; the web never imports the composition root (the import-linter contracts)."""

    @property
    def service(self) -> ServiceConfig: ...
    @property
    def web(self) -> WebConfig: ...
    @property
    def store(self) -> StoreConfig: ...
    @property
    def commands(self) -> CommandsConfig: ...
    @property
    def mqtt(self) -> MqttConfig: ...
    @property
    def gateway(self) -> GatewayConfig: ...
    @property
    def vehicle_state(self) -> VehicleStateConfig: ...
    @property
    def vehicles(self) -> Sequence[VehicleConfig]: ...
    @property
    def notify(self) -> NotifyConfig: ...
    @property
    def rules(self) -> RulesConfig: ...


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


#: What the web takes alarm events it caused to: the pipeline's ``inject_events`` (the one
#: fan-out to the feed, the live state and history), sync or async.
EventSink = Callable[[list[AlarmEvent]], Awaitable[None] | None]


@dataclass
class AppCaches:
    """What the resource modules open on first use and keep for the app's life, typed here
    rather than set on the context from outside: the cost store (``web.costs_api``), a
    month's GPS km and trips per (vehicle, month) with the time they were read, and the
    reports' rollup store and job (``web.reports_api``)."""

    cost_store: CostStore | None = None
    cost_usage: dict[tuple[str, str], tuple[int, dict[str, float]]] = field(default_factory=dict)
    reports: ReportsState | None = None


@dataclass
class AppContext:
    """Everything :func:`web.app.create_app` needs; ``None`` parts degrade their routes to 503.

    Each seam is typed by its protocol or its class (mypy checks the root's wiring):
    ``history`` the history store's read and write side (:class:`store.history.HistoryStore`),
    ``live`` the live state (:class:`store.live.LiveState`), ``rules`` the engine
    (:class:`fleet.interfaces.RulesEngine` over :class:`rules.orders.DispatchOrder`),
    ``fences`` the live fence index (:class:`geofence.index.LiveFences`: the fence routes
    replace and delete fences in it).

    ``on_events(events)`` (sync or async) takes alarm events the web caused — an
    order approved after the fact covering episodes, an operator closing one — to
    the feed, the live state and history, as the pipeline does with its own; when
    None the web writes them there itself (a web without a pipeline: the tests).
    ``relay`` is a :class:`stream.relay.RelayOut` when several nodes serve one feed:
    operator acknowledgements then reach every node's desks through it instead of only
    this node's :class:`FeedCore`. ``commands`` is the command bus
    (:class:`fleet.interfaces.CommandBus`: :class:`web.commands.RedisCommands`) when several
    nodes each run an engine for their shard: approved orders, fence changes and closes by
    hand then reach every node's engine (``web.bus``). ``notifier`` is the
    :class:`notify.worker.Notifier` (its dead messages are listed and retried from the web).
    """

    config: SiteConfig
    registry: Registry
    feed: FeedCore
    history: HistoryStore | None = None
    live: LiveState | None = None
    rules: RulesEngine[DispatchOrder] | None = None
    fences: LiveFences | None = None
    metrics: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"ok": True})
    clock_ms: Callable[[], int] = _now_ms
    on_events: EventSink | None = None
    relay: RelayOut | None = None
    commands: CommandBus | None = None
    vehicle_records: RecordStore | None = None  # 一车一档、一人一档, the quota
    notifier: Notifier | None = None
    # The rules' working calendar (holidays and 调休): is this date a working day? Given by
    # the root from the engine it built; None → Monday to Friday.
    workday: Callable[[dt.date], bool] | None = None
    caches: AppCaches = field(default_factory=AppCaches)
