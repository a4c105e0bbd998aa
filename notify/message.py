"""What a notification says: the :class:`Notice` stored in the outbox, and its Chinese text.

A notice is a snapshot taken when the alarm event is queued (plate and
organisation name as they were then), so that a message delivered an hour late
after an outage says what the operator saw. Rendering is pure: the same notice
gives the same text, whatever the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

__all__ = [
    "KIND_NAMES",
    "ORDER_KIND_NAMES",
    "PURPOSE_NAMES",
    "Notice",
    "digest_markdown",
    "digest_subject",
    "notice_markdown",
    "notice_subject",
    "notice_text",
]

# The rule kinds as staff name them (rules/events.py KINDS).
KIND_NAMES: Mapping[str, str] = {
    "speeding": "超速",
    "off_hours": "非工作时间用车",
    "out_of_area": "越界",
    "forbidden_zone": "进入禁入区域",
    "parking_violation": "未按规定停放",
    "offline": "离线",
    "terminal_alarm": "终端报警",
    "fatigue": "疲劳驾驶",
    "sealed_moving": "封存车辆移动",
    "record_due": "证照到期提醒",
    "no_order": "无单派车",
    "order_mismatch": "派车单不符",
    "driver_mismatch": "人车不符",
    "cost_refuel_away": "加油时车辆不在加油站",
    "cost_tank_overfill": "加油量超过油箱容积",
    "cost_card_shared": "一卡多车加油",
    "cost_fuel_rate": "百公里油耗异常",
    "cost_repair_status": "封存或处置车辆产生维修费",
    "cost_odometer": "维修里程与GPS里程不符",
    "cost_no_trip": "无出车记录日产生费用",
    "cost_rest_day": "休息日无派车单产生费用",
}
# Dispatch-order messages (notify.orders; purpose "order"): not alarms, routed only to
# routes that name these kinds.
ORDER_KIND_NAMES: Mapping[str, str] = {
    "order_pending": "用车申请待审批",
    "order_approved": "用车申请已批准",
    "order_rejected": "用车申请被驳回",
    "order_dispatched": "已派车",
    "order_cancelled": "派车单已取消",
}
PURPOSE_NAMES: Mapping[str, str] = {
    "open": "报警",
    "close": "报警解除",
    "escalate": "报警升级",
    "order": "派车单",
}
SEVERITY_NAMES: Mapping[str, str] = {"info": "提示", "warning": "一般", "critical": "紧急"}
_TERMINAL_ALARMS: Mapping[str, str] = {
    "sos": "紧急报警",
    "power_cut": "主电源断电",
    "illegal_ignition": "非法点火",
    "illegal_move": "非法位移",
    "collision": "碰撞",
    "rollover": "侧翻",
}

Purpose = Literal["open", "close", "escalate", "order"]


@dataclass(frozen=True, slots=True)
class Notice:
    """One alarm message, self-contained (times epoch ms UTC, rendered in ``tz``)."""

    alarm_id: str
    purpose: Purpose
    route: str  # the route that sent it (for an escalation: the route escalated from)
    kind: str
    severity: str
    vehicle_id: str
    plate: str
    org: str
    org_name: str
    started_at: int
    ts: int
    lat: float
    lon: float
    tz: str
    link: str
    ended_at: int | None = None
    covered: bool = False
    escalate_after_s: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # The place name when queued ("武胜县 · 距 某KTV 300 米"); empty: the district is named
    # from the shipped boundaries when the message is written (geofence.places).
    place: str = ""

    def to_json(self) -> dict[str, Any]:
        # Shallow (dataclasses.asdict deep-copies and costs ~0.3 ms a notice).
        return {name: getattr(self, name) for name in _NOTICE_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notice:
        return cls(**data)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind) or ORDER_KIND_NAMES.get(self.kind, self.kind)

    def local_time(self, ms: int) -> str:
        t = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(self.tz))
        return t.strftime("%Y-%m-%d %H:%M:%S")


_NOTICE_FIELDS = tuple(f.name for f in fields(Notice))


def alarm_link(public_url: str, alarm_id: str) -> str:
    """``{public_url}/#alarm/{id}`` (the id's ``:`` and ``/`` are fine in a fragment)."""
    return f"{public_url.rstrip('/')}/#alarm/{quote(alarm_id, safe=':/')}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} 小时 {m} 分"
    if m:
        return f"{m} 分 {sec} 秒"
    return f"{sec} 秒"


def detail_text(kind: str, detail: Mapping[str, Any]) -> str:
    """The episode's details in a few Chinese words (unknown keys are left out)."""
    parts: list[str] = []
    d = detail
    if kind == "speeding":
        if "limit_kmh" in d:
            parts.append(f"限速 {d['limit_kmh']:g} km/h")
        if "peak_kmh" in d:
            parts.append(f"最高 {d['peak_kmh']:g} km/h")
        if d.get("zone"):
            parts.append("区域限速")
    elif kind == "off_hours":
        parts.append(
            {"after_hours": "工作时间以外", "rest_day": "休息日"}.get(str(d.get("reason")), "")
        )
        if d.get("holiday"):
            parts.append(str(d["holiday"]))
    elif kind == "out_of_area" and "distance_km" in d:
        parts.append(f"区域外行驶 {d['distance_km']:g} km")
    elif kind == "forbidden_zone" and (d.get("fence_name") or "fence" in d):
        # staff know a place by its name (某KTV), not by the fence's id
        parts.append(f"区域 {d.get('fence_name') or d['fence']}")
    elif kind == "parking_violation":
        parts.append(
            {"night": "夜间未入库", "rest_day": "休息日未入库"}.get(str(d.get("reason")), "")
        )
    elif kind == "terminal_alarm" and "name" in d:
        parts.append(_TERMINAL_ALARMS.get(str(d["name"]), str(d["name"])))
    elif kind == "fatigue" and "driving_s" in d:
        parts.append(f"连续驾驶 {_duration(float(d['driving_s']))}")
    if "duration_s" in d:
        parts.append(f"持续 {_duration(float(d['duration_s']))}")
    return "，".join(p for p in parts if p)


def _place(n: Notice) -> str:
    from geofence.places import district_text

    return n.place or district_text(n.lon, n.lat)


def notice_subject(n: Notice) -> str:
    if n.purpose == "order":
        return f"【派车单】{n.kind_name} {n.detail.get('order', '')}（{n.org_name}）"
    return f"【{PURPOSE_NAMES[n.purpose]}】{n.kind_name} {n.plate}（{n.org_name}）"


def _order_lines(n: Notice) -> list[tuple[str, str]]:
    d = n.detail
    rows = [
        ("单位", n.org_name),
        ("用车人", str(d.get("requester") or "")),
        ("事由", str(d.get("purpose") or "")),
        ("目的地", str(d.get("destination") or "")),
        ("用车时间", f"{n.local_time(n.started_at)} 至 {n.local_time(n.ended_at or n.started_at)}"),
    ]
    if n.plate:
        rows.append(("车辆", n.plate))
    if d.get("driver_name"):
        rows.append(("驾驶员", str(d["driver_name"])))
    if d.get("by"):
        rows.append(("处理人", str(d["by"])))
    if d.get("reason"):
        rows.append(("原因", str(d["reason"])))
    if d.get("step"):
        rows.append(("待审批", str(d["step"])))
    if d.get("to"):
        rows.append(("通知", "、".join(str(x) for x in d["to"])))
    return [(k, v) for k, v in rows if v]


def _lines(n: Notice) -> list[tuple[str, str]]:
    if n.purpose == "order":
        return _order_lines(n)
    rows = [
        ("车牌", n.plate),
        ("单位", n.org_name),
        ("类型", f"{n.kind_name}（{SEVERITY_NAMES.get(n.severity, n.severity)}）"),
        ("开始", n.local_time(n.started_at)),
    ]
    if n.ended_at is not None:
        rows.append(("结束", n.local_time(n.ended_at)))
    rows.append(("位置", f"{_place(n)}（{n.lat:.5f}, {n.lon:.5f}）"))
    text = detail_text(n.kind, n.detail)
    if text:
        rows.append(("详情", text))
    if n.covered:
        rows.append(("说明", "已有审批派车单"))
    if n.purpose == "escalate":
        minutes = (n.escalate_after_s or 0) // 60
        rows.append(("升级", f"报警 {minutes} 分钟内无人确认处理"))
    return rows


def notice_markdown(n: Notice) -> str:
    """Markdown for the WeCom and DingTalk robots (the subset both render)."""
    head = f"### {notice_subject(n)}"
    body = "\n".join(f"- {k}：{v}" for k, v in _lines(n))
    what = "派车单" if n.purpose == "order" else "报警"
    return f"{head}\n{body}\n\n[查看{what}]({n.link})"


def notice_text(n: Notice) -> str:
    """Plain text (e-mail body)."""
    body = "\n".join(f"{k}：{v}" for k, v in _lines(n))
    what = "派车单" if n.purpose == "order" else "报警"
    return f"{notice_subject(n)}\n\n{body}\n\n查看{what}：{n.link}\n"


def digest_subject(notices: Sequence[Notice]) -> str:
    return f"【报警汇总】{len(notices)} 条报警消息"


def _digest_line(n: Notice) -> str:
    t = n.local_time(n.ts)[11:]
    return f"{t} {n.plate} {n.kind_name} {PURPOSE_NAMES[n.purpose]}（{n.org_name}）"


def digest_markdown(notices: Sequence[Notice], max_items: int, alarms_url: str) -> str:
    """One message standing for many (a storm on one route)."""
    shown = sorted(notices, key=lambda n: (n.ts, n.alarm_id))[:max_items]
    lines = [f"- {_digest_line(n)}" for n in shown]
    if len(notices) > len(shown):
        lines.append(f"- ……另有 {len(notices) - len(shown)} 条")
    return f"### {digest_subject(notices)}\n" + "\n".join(lines) + f"\n\n[查看报警台]({alarms_url})"


def digest_text(notices: Sequence[Notice], max_items: int, alarms_url: str) -> str:
    shown = sorted(notices, key=lambda n: (n.ts, n.alarm_id))[:max_items]
    lines = [_digest_line(n) for n in shown]
    if len(notices) > len(shown):
        lines.append(f"……另有 {len(notices) - len(shown)} 条")
    return f"{digest_subject(notices)}\n\n" + "\n".join(lines) + f"\n\n查看报警台：{alarms_url}\n"
