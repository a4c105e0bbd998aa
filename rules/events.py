"""Alarm episodes as events: what the rules engine emits and every later stage consumes.

An alarm is an *episode*: opened once, updated while it lasts, closed when it
ends. The engine emits one :class:`AlarmEvent` per change of an episode:
``open`` (the first), ``update`` (peak speed grew, distance out of area grew,
an order covered it...), ``close`` (the last). Stores upsert by ``id``; the
live feed pushes each event; the notifier sends on ``open`` and ``close``.

``id`` is deterministic — ``{vehicle_id}:{kind}:{started_at}`` — so that a
replay of history finds the same episodes with the same ids as the live run.
A rule that keeps several episodes per vehicle at once names which after a
dot (``{vehicle_id}:terminal_alarm.sos:{started_at}``); an episode found in
blind-area back-fill ends in ``:backfill`` so it never overwrites a live one.

Ids are safe in a URL path without encoding (:data:`ALARM_ID_RE`): the API
routes ``/api/alarms/{id}/ack``, and a ``/`` in an id made SOS episodes
unreachable. Ids stored before the change (``terminal_alarm/sos``) are rewritten
by :func:`legacy_alarm_id` when the history stores open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetwatch.errors import Misuse

__all__ = [
    "ALARM_ID_RE",
    "KINDS",
    "LEGACY_SUB_KEY",
    "AlarmEvent",
    "episode_id",
    "legacy_alarm_id",
]

# The rule kinds, in the words staff use (see ARCHITECTURE.md, "Domain rules").
KINDS: tuple[str, ...] = (
    "speeding",  # 超速
    "off_hours",  # 非工作时间用车
    "out_of_area",  # 越界 / 出市
    "forbidden_zone",  # 进入禁入区域
    "parking_violation",  # 未按规定停放
    "offline",  # 离线
    "terminal_alarm",  # 终端报警
    "fatigue",  # 疲劳驾驶
    "sealed_moving",  # 封存车辆移动 (always critical)
    "record_due",  # 到期提醒: insurance, inspection, licence (store.records_reminders)
    # 运行费用 checks against the tracks (costs.checks ANOMALY_KINDS, raised on import)
    "cost_refuel_away",  # 加油时车辆不在加油站 (or parked at its lot: 私车公养)
    "cost_tank_overfill",  # 加油量超过油箱容积
    "cost_card_shared",  # 一卡多车加油
    "cost_fuel_rate",  # 百公里油耗异常
    "cost_repair_status",  # 封存或处置车辆产生维修费
    "cost_odometer",  # 维修里程与GPS里程不符
    "cost_no_trip",  # 无出车记录日产生费用
    "cost_rest_day",  # 休息日无派车单产生费用
)

Action = Literal["open", "update", "close"]


#: What every alarm id matches: RFC 3986 unreserved characters plus ``:``, all safe in a
#: URL path segment without percent-encoding.
ALARM_ID_RE = re.compile(r"^[A-Za-z0-9._~:-]+$")
_SUB_RE = re.compile(r"^[A-Za-z0-9_~-]+$")


def episode_id(
    vehicle_id: str, kind: str, started_at: int, *, sub: str | None = None, backfill: bool = False
) -> str:
    """The deterministic id of an episode; ``sub`` names one of several per vehicle and kind."""
    if sub is not None and not _SUB_RE.match(sub):
        raise Misuse(f"episode sub-key {sub!r} must be letters, digits, '_', '~' or '-'")
    key = f"{kind}.{sub}" if sub else kind
    tail = ":backfill" if backfill else ""
    return f"{vehicle_id}:{key}:{started_at}{tail}"


#: The one sub-key separator earlier versions stored with a slash, and its current form.
LEGACY_SUB_KEY = (":terminal_alarm/", ":terminal_alarm.")


def legacy_alarm_id(alarm_id: str) -> str:
    """The current form of an id stored by an earlier version (``terminal_alarm/sos`` →
    ``terminal_alarm.sos``); the stores run the same ``replace`` in SQL when they open."""
    return alarm_id.replace(*LEGACY_SUB_KEY)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One change of one alarm episode.

    Times are epoch milliseconds UTC, taken from positions (never the wall
    clock) except for timer-driven rules (offline), which use the ``now``
    passed to the engine.
    """

    id: str
    vehicle: int  # dense registry index
    vehicle_id: str
    kind: str
    action: Action
    started_at: int
    ts: int  # the time of this change
    lat: float
    lon: float
    ended_at: int | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    backfill: bool = False  # found in blind-area back-fill: recorded, never a live alarm
    covered: bool = False  # excused after the fact by an approved dispatch order
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Literal["open", "closed"]:
        return "closed" if self.action == "close" else "open"
