"""What the web app is given by the composition root (``fleetwatch.service``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from fleet.events import AlarmEvent
from fleet.model import ServiceConfig, VehicleConfig
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from ingest.config import MqttConfig
from ingest.jt808.config import CommandsConfig, GatewayConfig
from notify.config import NotifyConfig
from rules.config import RulesConfig
from store.config import StoreConfig
from stream.feed import FeedCore
from web.config import WebConfig

__all__ = ["AppContext", "SiteConfig"]


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


@dataclass
class AppContext:
    """Everything :func:`web.app.create_app` needs; ``None`` parts degrade their routes to 503.

    ``history`` is a :class:`store.history.HistoryStore`, ``live`` a live state
    (``store.live``), ``rules`` the :class:`rules.engine.RulesEngine` and ``fences``
    the :class:`geofence.index.LiveFences` — typed loosely here so that the web
    layer does not import the pipeline.

    ``on_events(events)`` (sync or async) takes alarm events the web caused — an
    order approved after the fact covering episodes, an operator closing one — to
    the feed, the live state and history, as the pipeline does with its own; when
    None the web writes them there itself. ``relay`` is a :class:`stream.relay.RelayOut`
    when several nodes serve one feed: operator acknowledgements then reach every
    node's desks through it instead of only this node's :class:`FeedCore`.
    ``commands`` is a :class:`web.commands.RedisCommands` when several nodes each run
    an engine for their shard: approved orders, fence changes and closes by hand
    then reach every node's engine. ``notifier`` is the :class:`notify.worker.Notifier`
    (its dead messages are listed and retried from the web).
    """

    config: SiteConfig
    registry: Registry
    feed: FeedCore
    history: Any = None
    live: Any = None
    rules: Any = None
    fences: Any = None
    metrics: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"ok": True})
    clock_ms: Callable[[], int] = _now_ms
    on_events: Callable[[list[AlarmEvent]], Any] | None = None
    relay: Any = None
    commands: Any = None
    vehicle_records: Any = None  # store.records.RecordStore (一车一档、一人一档, the quota)
    notifier: Any = None
