"""Rows of a supplier file → cost items or bad rows (with line and reason) — pure.

:func:`validate_rows` takes the rows of one file (each a dict by header plus
``_line``, as :func:`web.vehicles_api.table_file` reads them), the kind, the
supplier's mapping, the vehicles on file and ``now``; it returns the good rows
as :class:`CostItem` and every other row as :class:`BadRow` — nothing is
dropped. A bad row's reason is in Chinese and names the field.

Each item carries a **fingerprint**: a hash of its kind and its normalised
fields (not of the file, the line or the header names). Importing the same
file twice, or the same transactions under another supplier's headers, gives
the same fingerprints, and the store adds nothing the second time. A row that
repeats an earlier row of the same file is bad (``与第 N 行重复``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from costs.kinds import AMOUNT_LIMITS, FIELDS, KIND_LABELS, ColumnMapping, header_keys

__all__ = [
    "LIMITS",
    "BadRow",
    "CostItem",
    "ImportPlan",
    "VehicleLike",
    "fingerprint",
    "validate_rows",
]

#: Plausibility limits of one row (beyond them the row is bad, not an anomaly).
LIMITS: Mapping[str, float] = {
    "max_litres": 500.0,  # the largest tank of a vehicle on the register (a coach) is below
    "min_yuan_per_litre": 3.0,  # 92# has not cost less than 5 yuan/L since 2009
    "max_yuan_per_litre": 20.0,
    "future_ms": 86_400_000,  # a row dated more than a day after the import is impossible
    "max_odometer_km": 2_000_000.0,
    "max_policy_days": 3 * 366,
}
_EARLIEST = dt.datetime(2000, 1, 1)


class VehicleLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def plate(self) -> str: ...
    @property
    def org(self) -> str: ...
    @property
    def fuel_card(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CostItem:
    """One good row: a cost of one vehicle at one time (epoch ms UTC)."""

    fingerprint: str
    kind: str
    vehicle: str
    plate: str
    org: str
    ts: int
    amount: float
    fields: dict[str, Any]
    line: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "vehicle": self.vehicle,
            "plate": self.plate,
            "org": self.org,
            "ts": self.ts,
            "amount": self.amount,
            "fields": self.fields,
        }


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str
    row: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "row": self.row}


@dataclass(slots=True)
class ImportPlan:
    items: list[CostItem] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


class _Bad(ValueError):
    pass


def fingerprint(kind: str, values: Mapping[str, Any]) -> str:
    """The row's identity: sha256 of its kind and normalised fields (first 32 hex digits)."""
    text = json.dumps([kind, dict(sorted(values.items()))], ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _plain(v: Any) -> Any:
    """A cell as JSON-safe text for the bad-row record."""
    if v is None:
        return None
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, float | int | str | bool):
        return v
    return str(v)


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _number(v: Any, label: str) -> float:
    if isinstance(v, bool):
        raise _Bad(f"{label}: 应为数字")
    if isinstance(v, int | float):
        x = float(v)
    else:
        try:
            x = float(str(v).strip().replace(",", "").replace("，", "").replace("¥", ""))
        except ValueError:
            raise _Bad(f"{label}: 应为数字, 而不是 {str(v)[:40]!r}") from None
    if not math.isfinite(x):
        raise _Bad(f"{label}: 应为数字")
    return x


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d")


def _moment(v: Any, label: str, *, date_only: bool) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    s = _text(v).replace("T", " ")
    for f in (() if date_only else _TIME_FORMATS) + _DATE_FORMATS:
        try:
            return dt.datetime.strptime(s, f)
        except ValueError:
            continue
    example = "2026-11-03" if date_only else "2026-11-03 08:15:00"
    raise _Bad(f"{label}: 时间格式不对 ({s[:40]!r}), 例如 {example}")


def _normalise(kind: str, keyed: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in FIELDS[kind]:
        v = keyed.get(f.key)
        if v is None or (isinstance(v, str) and not v.strip()):
            if f.required:
                raise _Bad(f"{f.header}: 必填")
            continue
        if f.type == "number":
            out[f.key] = round(_number(v, f.header), 3)
        elif f.type in ("time", "date"):
            m = _moment(v, f.header, date_only=f.type == "date")
            out[f.key] = m.date().isoformat() if f.type == "date" else m.isoformat(sep=" ")
        else:
            t = _text(v)
            out[f.key] = t.upper() if f.key in ("plate", "card") else t
    return out


def _local_ms(iso: str, zone: ZoneInfo) -> int:
    m = dt.datetime.fromisoformat(iso)
    if m < _EARLIEST:
        raise _Bad(f"时间 {iso} 早于 2000 年")
    return int(m.replace(tzinfo=zone).timestamp() * 1000)


def _check(kind: str, v: dict[str, Any], now_ms: int, zone: ZoneInfo) -> int:
    """Plausibility of one normalised row; returns its time (epoch ms UTC)."""
    label = KIND_LABELS[kind]
    amount = v["amount"]
    if amount <= 0:
        raise _Bad(f"金额: 应大于 0 (而不是 {amount:g})")
    if amount > AMOUNT_LIMITS[kind]:
        raise _Bad(f"金额: {amount:g} 元超过单笔{label}上限 {AMOUNT_LIMITS[kind]:g} 元")
    when = v.get("time") or v.get("date") or v.get("start")
    ts = _local_ms(str(when), zone)
    if ts > now_ms + LIMITS["future_ms"]:
        raise _Bad(f"时间 {when} 晚于导入时间")
    if kind == "fuel":
        litres = v["litres"]
        if litres <= 0 or litres > LIMITS["max_litres"]:
            raise _Bad(f"加油量: {litres:g} 升不可能 (应在 0 到 {LIMITS['max_litres']:g} 升之间)")
        price = amount / litres
        if not LIMITS["min_yuan_per_litre"] <= price <= LIMITS["max_yuan_per_litre"]:
            raise _Bad(f"单价 {price:.2f} 元/升不可能 (金额 {amount:g} 元 / 加油量 {litres:g} 升)")
        lat, lon = v.get("station_lat"), v.get("station_lon")
        if (lat is None) != (lon is None):
            raise _Bad("加油站坐标: 纬度和经度应同时填写")
        if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):  # type: ignore[operator]
            raise _Bad("加油站坐标: 超出范围")
    elif kind == "insurance":
        start, end = dt.date.fromisoformat(v["start"]), dt.date.fromisoformat(v["end"])
        if end <= start:
            raise _Bad("终保日期应晚于起保日期")
        if (end - start).days > LIMITS["max_policy_days"]:
            raise _Bad("保险期间超过 3 年")
    elif kind == "repair":
        parts, labour = v.get("parts"), v.get("labour")
        for name, x in (("材料费", parts), ("工时费", labour)):
            if x is not None and x < 0:
                raise _Bad(f"{name}: 不能为负数")
        if parts is not None and labour is not None and abs(parts + labour - amount) > 1.0:
            raise _Bad(f"金额 {amount:g} 元不等于材料费 {parts:g} + 工时费 {labour:g}")
        odo = v.get("odometer")
        if odo is not None and not 0 <= odo <= LIMITS["max_odometer_km"]:
            raise _Bad(f"里程表读数 {odo:g} 公里不可能")
    return ts


def validate_rows(
    kind: str,
    rows: Iterable[Mapping[str, Any]],
    vehicles: Sequence[VehicleLike],
    *,
    mapping: ColumnMapping | None,
    now_ms: int,
    tz: str,
) -> ImportPlan:
    """Good rows and bad rows of one file (see the module docstring). Raises ValueError when
    the headers themselves do not fit the kind (unknown column, required column missing)."""
    if kind not in FIELDS:
        raise ValueError(f"kind must be one of {', '.join(FIELDS)}")
    rows = list(rows)
    plan = ImportPlan()
    if not rows:
        return plan
    headers: list[str] = []
    for r in rows:
        for h in r:
            if h != "_line" and h not in headers:
                headers.append(h)
    keys = header_keys(kind, headers, mapping)
    zone = ZoneInfo(tz)
    by_plate = {v.plate.upper(): v for v in vehicles}
    cards = {v.fuel_card.upper(): v for v in vehicles if v.fuel_card}
    seen: dict[str, int] = {}
    for r in rows:
        line = int(r.get("_line", 0))
        raw = {h: _plain(x) for h, x in r.items() if h != "_line"}
        try:
            keyed = {keys[h]: x for h, x in r.items() if h in keys}
            values = _normalise(kind, keyed)
            veh = by_plate.get(values["plate"])
            if veh is None:
                raise _Bad(f"车牌号 {values['plate']} 不在车辆档案中")
            if kind == "fuel" and values["card"] not in cards:
                raise _Bad(f"加油卡号 {values['card']} 未登记在任何车辆档案上")
            ts = _check(kind, values, now_ms, zone)
            fp = fingerprint(kind, values)
            if fp in seen:
                raise _Bad(f"与第 {seen[fp]} 行重复")
            seen[fp] = line
        except _Bad as exc:
            plan.bad.append(BadRow(line, str(exc), raw))
            continue
        plan.items.append(
            CostItem(
                fp, kind, veh.id, veh.plate, veh.org, ts, float(values["amount"]), values, line
            )
        )
    return plan
