"""Alarm episodes as events: what the rules engine emits and every later stage consumes.

An alarm is an *episode*: opened once, updated while it lasts, closed when it
ends. The engine emits one :class:`AlarmEvent` per change of an episode:
``open`` (the first), ``update`` (peak speed grew, distance out of area grew,
an order covered it...), ``close`` (the last). Stores upsert by ``id``; the
live feed pushes each event; the notifier sends on ``open`` and ``close``.

``id`` is deterministic — ``{vehicle_id}:{kind}:{started_at}`` — so that a
replay of history finds the same episodes with the same ids as the live run.
A rule that keeps several episodes per vehicle at once names which after a
slash (``{vehicle_id}:terminal_alarm/sos:{started_at}``); an episode found in
blind-area back-fill ends in ``:backfill`` so it never overwrites a live one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["KINDS", "AlarmEvent", "episode_id"]

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
)

Action = Literal["open", "update", "close"]


def episode_id(
    vehicle_id: str, kind: str, started_at: int, *, sub: str | None = None, backfill: bool = False
) -> str:
    key = f"{kind}/{sub}" if sub else kind
    tail = ":backfill" if backfill else ""
    return f"{vehicle_id}:{key}:{started_at}{tail}"


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
