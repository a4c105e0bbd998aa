"""What the web app is given by the composition root (``fleetwatch.service``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from fleetwatch.config import Config
from fleetwatch.registry import Registry
from stream.feed import FeedCore

__all__ = ["AppContext"]


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
    """

    config: Config
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
