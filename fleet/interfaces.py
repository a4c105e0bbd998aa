"""The typed seams between the stages (``typing.Protocol``): what one stage may ask of another.

The composition root (``fleetwatch.service``, ``fleetwatch.pipeline``) holds every stage
by one of these types, never by ``Any``; each stage's own class has the shape
(``mypy`` checks it where the root builds them). A protocol lists what crosses the seam,
not everything the class can do: the web's read side of the history store, for example,
stays :class:`store.history.HistoryStore`.

=================  ===========================================  ==================================
protocol           implemented by                               used by
=================  ===========================================  ==================================
HistoryStore       store.sqlite.SQLiteHistory,                  fleetwatch.pipeline (writes),
                   store.postgres.PostgresHistory,              the root (open, rule state)
                   store.spool.SpoolingWriter
LiveState          store.live.MemoryLiveState, RedisLiveState   fleetwatch.pipeline, web
FeedSink           stream.feed.FeedCore, stream.relay.RelayOut  fleetwatch.pipeline
Feed               stream.feed.FeedCore                         the root, web
RulesEngine        rules.engine.RulesEngine                     fleetwatch.pipeline, web (commands)
FenceIndex         geofence.index.FenceIndex                    rules, notify, web
FenceSource        geofence.index.LiveFences                    the root, web (fence changes)
Outbox             notify.outbox (SQLite, PostgreSQL)           notify.worker
CommandBus         web.commands.RedisCommands                   web (operator actions, many nodes)
=================  ===========================================  ==================================

Call order, where it matters: ``open`` before anything else and ``close`` last; a
``HistoryStore`` or ``LiveState`` is given the :class:`~fleet.registry.Registry` at ``open``
and follows its ``version`` afterwards (vehicles added live).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from fleet.batch import PositionBatch
from fleet.deadletter import DeadLetter
from fleet.events import AlarmEvent
from fleet.registry import Registry

__all__ = [
    "CommandBus",
    "CommandHandler",
    "Feed",
    "FeedSink",
    "FenceIndex",
    "FenceSource",
    "HistoryStore",
    "LiveState",
    "Outbox",
    "RulesEngine",
]

Order_contra = TypeVar("Order_contra", contravariant=True)
Row_co = TypeVar("Row_co", covariant=True)

#: A command as the bus carries it: ``{"op": ..., **fields}`` (see ``web.commands``).
CommandHandler = Callable[[dict[str, Any]], Awaitable[None]]


@runtime_checkable
class HistoryStore(Protocol):
    """Positions, alarm episodes and dead letters, durably; the engine's saved state."""

    async def open(self, registry: Registry) -> None: ...
    async def close(self) -> None: ...
    async def write_positions(self, batch: PositionBatch) -> int:
        """Rows written (all of them, or raise ``ServiceUnavailable``)."""
        ...

    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        """Upsert by episode id; a close always lands (store.history's order rule)."""
        ...

    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None: ...
    async def save_rule_state(self, name: str, blob: bytes) -> None: ...
    async def load_rule_state(self, name: str) -> bytes | None: ...


@runtime_checkable
class LiveState(Protocol):
    """The latest position and open alarms per vehicle, shared by the nodes (memory | Redis)."""

    async def open(self, registry: Registry) -> None: ...
    async def close(self) -> None: ...
    async def update(self, batch: PositionBatch) -> list[str]:
        """Take each vehicle's latest row (if newer); the ids of the vehicles that moved."""
        ...

    async def update_alarms(self, events: Sequence[AlarmEvent]) -> None: ...
    async def snapshot(self, now_ms: int) -> dict[str, list[dict[str, Any]]]:
        """``{"vehicles": [...], "alarms": [...]}`` in the live feed's shapes."""
        ...


@runtime_checkable
class FeedSink(Protocol):
    """What the pipeline gives the live feed: this node's :class:`Feed`, or the relay that
    shares it with the other nodes (``stream.relay.RelayOut``)."""

    def positions(self, batch: PositionBatch) -> int:
        """Take a batch; the number of vehicles whose item changed."""
        ...

    def alarm(self, event: AlarmEvent) -> object:
        """Take one alarm event (alarms are never dropped); what it reports is not used."""
        ...


@runtime_checkable
class Feed(FeedSink, Protocol):
    """The live feed's pure core: fed positions and alarm events, asked for states."""

    def alarm(self, event: AlarmEvent) -> list[int]:
        """Take one alarm event; the clients it was queued for (alarms are never dropped)."""
        ...

    def state_codes(self, now_ms: int) -> npt.NDArray[np.int8]:
        """State per vehicle (``fleet.vehicle_state.STATES`` codes) at ``now_ms``."""
        ...


@runtime_checkable
class RulesEngine(Protocol[Order_contra]):
    """Batches in, alarm events out; time passed in. Operator actions are methods too, so
    the web reaches the engine through this seam (or the command bus), never ``getattr``."""

    def process(self, batch: PositionBatch) -> list[AlarmEvent]: ...
    def tick(self, now_ms: int) -> list[AlarmEvent]:
        """Timer rules (offline) at ``now_ms``."""
        ...

    def add_order(self, order: Order_contra) -> list[AlarmEvent]:
        """An approved dispatch order; the events of the episodes it now covers."""
        ...

    def close_episode(self, alarm_id: str, now_ms: int) -> list[AlarmEvent]:
        """Close an episode by hand (an operator's decision)."""
        ...

    def state_bytes(self) -> bytes: ...
    def restore(self, blob: bytes) -> None: ...
    def repair_future(self, now_ms: int, max_ahead_ms: int) -> tuple[list[str], list[AlarmEvent]]:
        """Start afresh the vehicles whose saved last point lies after ``now + max_ahead``;
        their ids and the close events of their open episodes."""
        ...


@runtime_checkable
class FenceIndex(Protocol):
    """Exact, vectorized membership of points in fences (an immutable snapshot)."""

    @property
    def version(self) -> int: ...
    @property
    def ids(self) -> tuple[str, ...]: ...
    def membership(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """(point, fence) index pairs of every point inside or on every fence."""
        ...


@runtime_checkable
class FenceSource(Protocol):
    """The current fence index, replaced as fences change (readers take ``index`` once)."""

    @property
    def index(self) -> FenceIndex: ...
    @property
    def version(self) -> int: ...


@runtime_checkable
class Outbox(Protocol[Row_co]):
    """Notifications queued in the alarm's own transaction, claimed by the worker."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def claim(self, now: int, lease_ms: int, limit: int, owner: str) -> Sequence[Row_co]: ...
    async def mark_sent(self, ids: Sequence[int], now: int) -> int: ...
    async def counts(self) -> dict[str, int]: ...


@runtime_checkable
class CommandBus(Protocol):
    """Operator changes every node's engine must hear (``web.commands``)."""

    async def publish(self, op: str, **fields: Any) -> bool:
        """Send ``{"op": op, **fields}`` to every node; False when the bus is down."""
        ...

    async def listen(self, handle: CommandHandler) -> None:
        """Call ``handle`` for every command from another node, until cancelled."""
        ...

    async def close(self) -> None: ...
