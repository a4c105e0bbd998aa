"""Reminders (到期提醒): insurance, annual inspection and driving licence due within 30 days.

A daily job (:func:`reminder_loop`, started by the service) turns
:func:`store.records_core.due_reminders` into alarm events of kind
``record_due`` (severity ``info``), so that they travel the notification routes
the office already has (a route may select the kind) and show on the alarm desk
to be acknowledged. Each reminder is one closed episode whose id names the
record, what is due and the due date: running the job again — the next day, or
on another node — upserts the same id and queues nothing new (the outbox is
idempotent per event). A driver's reminder is attached to the first vehicle
they drive (alarms belong to a vehicle); a driver with no vehicle is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from fleet import aio
from fleet.events import AlarmEvent
from fleet.registry import Registry
from store.records import RecordStore
from store.records_core import due_reminders

__all__ = ["REMINDER_DAYS", "reminder_events", "reminder_loop"]

log = logging.getLogger(__name__)

REMINDER_DAYS = 30  # the issue: licence, insurance and inspection expiring in 30 days
_EVERY_S = 86_400.0  # daily; the first run at start-up


def reminder_events(
    reminders: list[dict[str, Any]],
    registry: Registry,
    driver_vehicle: dict[str, str],
    now_ms: int,
    tz: str,
) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    zone = ZoneInfo(tz)
    for r in reminders:
        vid = r["id"] if r["record"] == "vehicle" else driver_vehicle.get(r["id"])
        v = registry.by_id(vid) if vid else None
        if v is None:
            log.warning("reminder without a vehicle to attach it to: %s", r["text"])
            continue
        due = dt.date.fromisoformat(r["due"])
        due_ms = int(dt.datetime(due.year, due.month, due.day, tzinfo=zone).timestamp() * 1000)
        sub = f"{r['kind']}.{r['record']}.{r['id']}"
        out.append(
            AlarmEvent(
                id=f"{registry.ids[v]}:record_due.{sub}:{due_ms}",
                vehicle=v,
                vehicle_id=registry.ids[v],
                kind="record_due",
                action="close",
                started_at=now_ms,
                ts=now_ms,
                lat=0.0,  # a reminder has no place (detail.record says what it is about)
                lon=0.0,
                ended_at=now_ms,
                severity="info",
                detail={**r, "name": r["kind"]},
            )
        )
    return out


async def reminder_loop(
    records: RecordStore,
    registry: Registry,
    emit: Callable[[list[AlarmEvent]], Awaitable[None]],
    stop: asyncio.Event,
    *,
    tz: str,
    clock_ms: Callable[[], int],
) -> None:
    """Run the reminders now and then daily until ``stop``; an error only skips a day."""
    while not stop.is_set():
        try:
            now = clock_ms()
            today = dt.datetime.fromtimestamp(now / 1000, ZoneInfo(tz)).date()
            drivers = await records.drivers()
            due = due_reminders(await records.vehicles(), drivers, today, within_days=REMINDER_DAYS)
            by_driver = {d.id: d.vehicles[0] for d in drivers if d.vehicles}
            events = reminder_events(due, registry, by_driver, now, tz)
            await emit(events)
            log.info("reminders: %d due within %d days", len(events), REMINDER_DAYS)
        except Exception:  # a reminder run must never stop the service
            log.exception("reminder run failed; next run in a day")
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(stop.wait(), _EVERY_S)
