"""The one command interface from the web into the engines: operator actions and the
changes every node's engine must hear.

A change made through this node's API is applied to this node's engine
(``AppContext.rules``, typed by :class:`fleet.interfaces.RulesEngine`) and sent to the
other nodes on the command bus (``AppContext.commands``, :class:`fleet.interfaces.CommandBus`;
nothing on a single node); a node applies what it receives with :func:`handle_command`.
Alarm events an action causes go out through :func:`publish_events` only — to the
pipeline's own fan-out (``AppContext.on_events``) when the web runs in the service.

=========  =====================================  =============================================
op         sent by                                applied by
=========  =====================================  =============================================
close      :func:`close_by_hand` (the alarm desk)  the engine's ``close_episode``
orders     web.orders_api (approve, cancel, ...)   :func:`add_orders` (the engine's ``add_order``)
fences     web.fences_api                          web.fences_api.restore_fences
vehicles   web.vehicles_api                        web.vehicles_api.on_command
resync     a node that was cut off                 all of the above, from the databases
=========  =====================================  =============================================
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fleet.events import AlarmEvent
from rules.orders import DispatchOrder

if TYPE_CHECKING:
    from web.api import ApiState

__all__ = [
    "acknowledge",
    "add_orders",
    "broadcast",
    "close_by_hand",
    "engine_close",
    "handle_command",
    "publish_events",
]


async def broadcast(st: ApiState, op: str, **fields: Any) -> None:
    """Tell the other nodes' engines (``ctx.commands``; nothing on a single node)."""
    if st.ctx.commands is not None:
        await st.ctx.commands.publish(op, **fields)


async def handle_command(st: ApiState, cmd: dict[str, Any]) -> None:
    """Apply another node's command (:mod:`web.commands`) to this node's engine."""
    from web.fences_api import restore_fences
    from web.orders_api import apply_orders

    op = cmd.get("op")
    if op == "orders" and st.orders is not None:
        found = [await st.orders.get(str(k[0]), str(k[1])) for k in cmd.get("keys") or ()]
        for i in cmd.get("ids") or ():  # from a node of an earlier version
            found.extend(await st.orders.by_id(str(i)))
        await apply_orders(st, [o for o in found if o is not None])
    elif op == "close":
        by = cmd.get("by")
        events = engine_close(st, str(cmd["id"]), int(cmd["at"]), by, str(cmd.get("note", "")))
        await publish_events(st, events)
    elif op == "vehicles":  # records changed on another node (web.vehicles_api)
        from web.vehicles_api import on_command

        await on_command(st, cmd)
    elif op == "fences":
        await restore_fences(st)
    elif op == "resync":
        from web.vehicles_api import resync_vehicles

        await restore_fences(st)
        await resync_vehicles(st)
        if st.orders is not None:
            await apply_orders(st, await st.orders.select())


async def publish_events(st: ApiState, events: list[AlarmEvent]) -> None:
    """Alarm events the web caused: to ``ctx.on_events`` (the pipeline), or written here."""
    if not events:
        return
    ctx = st.ctx
    if ctx.on_events is not None:
        res = ctx.on_events(events)
        if inspect.isawaitable(res):
            await res
        return
    if ctx.history is not None:
        await ctx.history.write_alarm_events(events)
    for ev in events:
        ctx.feed.alarm(ev)
    if ctx.live is not None:
        await ctx.live.update_alarms(events)


def engine_close(
    st: ApiState, alarm_id: str, at: int, by: str | None, note: str
) -> list[AlarmEvent]:
    """Close an episode in this node's engine (nothing when it is not open here); the
    close events, marked with who closed it and why."""
    if st.ctx.rules is None:
        return []
    extra = {"closed_by": by, "note": note}
    return [
        dataclasses.replace(e, detail={**e.detail, **extra})
        for e in st.ctx.rules.close_episode(alarm_id, at)
    ]


async def close_by_hand(
    st: ApiState, alarm_id: str, at: int, by: str, note: str, fallback: list[AlarmEvent]
) -> None:
    """An operator closes an episode: this node's engine closes it (or, when it is not open
    here, the ``fallback`` close events close the record and the desks), the events go out,
    and every other node's engine hears of it."""
    events = engine_close(st, alarm_id, at, by, note)
    if not events:
        events = [
            dataclasses.replace(e, detail={**e.detail, "closed_by": by, "note": note})
            for e in fallback
        ]
    await publish_events(st, events)
    await broadcast(st, "close", id=alarm_id, at=at, by=by, note=note)


async def add_orders(st: ApiState, orders: Sequence[DispatchOrder]) -> list[AlarmEvent]:
    """Orders to this node's engine (an id it knows replaces the earlier version); the
    events of the episodes they now cover, published. Nothing without an engine."""
    if st.ctx.rules is None:
        return []
    events: list[AlarmEvent] = []
    for o in orders:
        events.extend(st.ctx.rules.add_order(o))
    await publish_events(st, events)
    return events


def acknowledge(st: ApiState, alarm_id: str, entry: dict[str, Any]) -> None:
    """One entry of an alarm's handling record, to every node's desks (the relay) or to
    this node's feed."""
    if st.ctx.relay is not None:
        st.ctx.relay.acknowledge(alarm_id, entry)  # every node's desks, this one's included
    else:
        st.ctx.feed.acknowledge(alarm_id, entry)
