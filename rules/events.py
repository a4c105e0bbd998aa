"""The rules' alarm kinds; the alarm event and its id, re-exported from the kernel.

:class:`AlarmEvent` (one change of one episode), :func:`episode_id` and
:data:`ALARM_ID_RE` live in :mod:`fleet.events`, since every stage after the rules
passes them on; :data:`KINDS` (the rules staff know by name) stays with the rules.
"""

from __future__ import annotations

# The event and its id are the kernel's (fleet.events): every stage passes them on.
from fleet.events import (
    ALARM_ID_RE,
    LEGACY_SUB_KEY,
    Action,
    AlarmEvent,
    episode_id,
    legacy_alarm_id,
)

__all__ = [
    "ALARM_ID_RE",
    "KINDS",
    "LEGACY_SUB_KEY",
    "Action",
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
    "no_order",  # 无单派车: away from the lot with no approved order (opt-in per org)
    "order_mismatch",  # 派车单不符: wrong region, outside the window, or not the order's car
    "driver_mismatch",  # 人车不符: the driver card is not the order's driver
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
