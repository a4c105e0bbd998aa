"""一车一档、一人一档: the vehicle and driver records, their checks, the quota (编制) — pure.

No I/O and no clock here: :mod:`store.records` keeps these in the history
database, :mod:`web.vehicles_api` and :mod:`web.drivers_api` expose them. Every
check answers in Chinese first (the office reads it), with the field named.

Field names. GB/T 45241-2025 (公务用车管理平台数据规范) could not be consulted
while this was written (its text was not available); the names below are plain
English with the Chinese label of each field in :data:`VEHICLE_LABELS`, which is
also the header of the XLSX/CSV export and what the import accepts.

Statuses (车辆状态): ``在用`` in service, ``封存`` sealed (any movement is a
critical alarm), ``待处置`` handed over for disposal, ``已处置`` disposed. The
quota's 实有数 counts 在用 and 封存 (先移交处置、后注册登记: a car handed over for
disposal frees its place in the quota); a vehicle in 待处置 or 已处置 is no
longer expected to report (no offline alarm), and keeps its history.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "COUNTED",
    "DRIVER_LABELS",
    "DRIVER_STATUSES",
    "ENERGY_TYPES",
    "EXPECTED",
    "STATUSES",
    "VEHICLE_CLASSES",
    "VEHICLE_LABELS",
    "DriverRecord",
    "QuotaRow",
    "RecordError",
    "VehicleRecord",
    "changes",
    "due_reminders",
    "first_error",
    "quota_table",
    "registration_refusal",
]

#: 编制类别 of official vehicles (the last one catches what the office adds).
VEHICLE_CLASSES = ("机要通信", "应急保障", "执法执勤", "特种专业技术", "一般公务", "其他")
ENERGY_TYPES = ("燃油", "纯电", "混动")
STATUSES = ("在用", "封存", "待处置", "已处置")
#: counted in 实有数 (and held against the quota)
COUNTED = frozenset({"在用", "封存"})
#: expected to report positions (offline alarms apply)
EXPECTED = COUNTED
DRIVER_STATUSES = ("在岗", "停用", "离职")

_PLATE = re.compile(r"^[\u4e00-\u9fa5][A-Z][A-Z0-9\u4e00-\u9fa5]{4,6}$")
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")  # GB 16735: 17 characters, no I, O or Q
_PHONE = re.compile(r"^[0-9]{1,20}$")
_ID = re.compile(r"^[A-Za-z0-9._~:-]{1,64}$")  # safe in a URL path (ARCHITECTURE: interfaces)


class RecordError(ValueError):
    """A record that fails its checks: ``field`` and a Chinese ``message``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class VehicleRecord(_Record):
    """车辆档案: one vehicle's file. ``id`` is stable; everything else may change."""

    id: str = Field(description="车辆编号, stable id")
    plate: str = Field(description="车牌号")
    org: str = Field(description="所属单位 (organisation id)")
    vehicle_class: str = Field("一般公务", description="编制类别")
    terminal: str = Field(description="终端手机号/SIM 卡号")
    status: Literal["在用", "封存", "待处置", "已处置"] = "在用"
    type: str = Field("car", description="车辆类型 (speed limits by type)")
    vin: str | None = Field(None, description="车辆识别代号 VIN")
    engine_no: str | None = Field(None, description="发动机号")
    brand: str | None = Field(None, description="品牌")
    model: str | None = Field(None, description="型号")
    energy: Literal["燃油", "纯电", "混动"] | None = Field(None, description="能源类型")
    seats: int | None = Field(None, ge=1, le=80, description="核定座位数")
    displacement_l: float | None = Field(None, ge=0, le=20, description="排量 (L)")
    colour: str | None = Field(None, description="车身颜色")
    purchase_date: dt.date | None = Field(None, description="购置日期")
    price_yuan: float | None = Field(None, ge=0, description="购置价格 (元)")
    funding: str | None = Field(None, description="经费来源")
    lot: str | None = Field(None, description="定点停放 (lot fence id)")
    driver: str | None = Field(None, description="默认驾驶员 (driver id)")
    terminal_maker: str | None = Field(None, description="终端厂商")
    terminal_model: str | None = Field(None, description="终端型号")
    speed_limit_kmh: float | None = Field(None, gt=0, le=250, description="限速 (km/h)")
    fuel_tank_l: float | None = Field(None, gt=0, le=1000, description="油箱容积 (L)")
    insurance_due: dt.date | None = Field(None, description="保险到期日")
    inspection_due: dt.date | None = Field(None, description="年检到期日")
    fuel_card: str | None = Field(None, description="加油卡号")
    photos: tuple[str, ...] = Field((), description="照片 (URLs)")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("车辆编号只能用字母、数字和 ._~:-, 最多 64 个字符")
        return v

    @field_validator("plate")
    @classmethod
    def _plate(cls, v: str) -> str:
        v = v.upper()
        if not _PLATE.match(v):
            raise ValueError("车牌号格式不对, 例如 川X12345")
        return v

    @field_validator("terminal")
    @classmethod
    def _terminal(cls, v: str) -> str:
        if not _PHONE.match(v):
            raise ValueError("终端手机号只能是数字, 最多 20 位")
        return v

    @field_validator("vin")
    @classmethod
    def _vin(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        v = v.upper()
        if not _VIN.match(v):
            raise ValueError("车辆识别代号应为 17 位字母或数字 (不含 I、O、Q)")
        return v

    @field_validator("vehicle_class")
    @classmethod
    def _class(cls, v: str) -> str:
        if v not in VEHICLE_CLASSES:
            raise ValueError("编制类别应为: " + "、".join(VEHICLE_CLASSES))
        return v

    @property
    def counted(self) -> bool:
        return self.status in COUNTED


class DriverRecord(_Record):
    """驾驶员档案."""

    id: str = Field(description="驾驶员编号")
    name: str = Field(min_length=1, max_length=32, description="姓名")
    phone: str | None = Field(None, description="手机号")
    org: str = Field(description="所属单位")
    licence_no: str = Field(description="驾驶证号")
    licence_class: str = Field("C1", description="准驾车型")
    licence_expiry: dt.date | None = Field(None, description="驾驶证有效期至")
    status: Literal["在岗", "停用", "离职"] = "在岗"
    vehicles: tuple[str, ...] = Field((), description="常驾车辆 (vehicle ids)")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("驾驶员编号只能用字母、数字和 ._~:-, 最多 64 个字符")
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not re.match(r"^1[0-9]{10}$", v):
            raise ValueError("手机号应为 11 位数字, 以 1 开头")
        return v

    @field_validator("licence_no")
    @classmethod
    def _licence(cls, v: str) -> str:
        v = v.upper()
        if not re.match(r"^[0-9A-Z]{12,18}$", v):
            raise ValueError("驾驶证号应为 12 到 18 位数字或字母")
        return v

    @field_validator("licence_class")
    @classmethod
    def _lclass(cls, v: str) -> str:
        v = v.upper()
        if not re.match(
            r"^(A[1-3]|B[12]|C[1-6]|D|E|F|M|N|P)(\s*[,、/]\s*(A[1-3]|B[12]|C[1-6]|D|E|F|M|N|P))*$",
            v,
        ):
            raise ValueError("准驾车型不对, 例如 C1 或 A1、B2")
        return v


# The Chinese names of the fields (export headers; the import accepts them or the keys).
VEHICLE_LABELS: dict[str, str] = {
    name: (f.description or name).split(" (")[0].split(",")[0]
    for name, f in VehicleRecord.model_fields.items()
}
VEHICLE_LABELS.update(id="车辆编号", terminal="终端手机号", status="状态", type="车辆类型")
DRIVER_LABELS: dict[str, str] = {
    name: (f.description or name).split(" (")[0] for name, f in DriverRecord.model_fields.items()
}
DRIVER_LABELS.update(status="状态")

_TYPE_WORDS = {
    "missing": "必填",
    "literal_error": "取值不在允许范围内",
    "int_parsing": "应为整数",
    "float_parsing": "应为数字",
    "date_from_datetime_parsing": "应为日期, 例如 2026-03-31",
    "date_parsing": "应为日期, 例如 2026-03-31",
    "greater_than": "应大于 {gt}",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "string_too_short": "不能为空",
    "string_too_long": "太长",
    "extra_forbidden": "不是档案的字段",
    "string_type": "应为文字",
}


def first_error(exc: ValidationError, labels: Mapping[str, str]) -> RecordError:
    """The first problem of a pydantic error as a :class:`RecordError` in Chinese."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    label = labels.get(field, field)
    if err["type"] == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
    else:
        msg = _TYPE_WORDS.get(err["type"], err["msg"]).format(**err.get("ctx", {}))
    return RecordError(field, f"{label}: {msg}")


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Fields that differ: ``{field: [before, after]}`` (all of them for a new record)."""
    old = before or {}
    return {
        k: [old.get(k), v]
        for k, v in after.items()
        if old.get(k) != v and not (old.get(k) in (None, (), []) and v in (None, (), []))
    }


class QuotaRow(BaseModel):
    """编制: one organisation and vehicle class. ``authorised`` None: no quota set."""

    model_config = ConfigDict(frozen=True)

    org: str
    vehicle_class: str
    authorised: int | None  # 编制数
    actual: int  # 实有数

    @property
    def over(self) -> int:
        """超编: vehicles beyond the quota (none where no quota is set)."""
        return 0 if self.authorised is None else max(0, self.actual - self.authorised)


def quota_table(quota: Mapping[tuple[str, str], int], vehicles: Iterable[Any]) -> list[QuotaRow]:
    """编制数 / 实有数 per (org, class): every class with a quota or a counted vehicle.

    ``vehicles``: anything with ``org``, ``vehicle_class`` and ``status`` (records, or the
    registry's vehicles — which also hold configured vehicles not on file)."""
    actual: dict[tuple[str, str], int] = {}
    for v in vehicles:
        if v.status in COUNTED:
            key = (v.org, v.vehicle_class)
            actual[key] = actual.get(key, 0) + 1
    return [
        QuotaRow(org=o, vehicle_class=c, authorised=quota.get((o, c)), actual=actual.get((o, c), 0))
        for o, c in sorted(set(quota) | set(actual))
    ]


def registration_refusal(
    record: VehicleRecord,
    quota: Mapping[tuple[str, str], int],
    vehicles: Iterable[VehicleRecord],
    *,
    previous: VehicleRecord | None = None,
) -> dict[str, Any] | None:
    """Why ``record`` may not be registered (or changed into a counted place), or None.

    先移交处置、后注册登记: when the organisation's class is at its quota, a vehicle
    of that organisation and class must be handed over for disposal first. An
    organisation and class without a quota row has no quota (nothing is refused).
    """
    if not record.counted:
        return None
    key = (record.org, record.vehicle_class)
    if key not in quota:
        return None
    if previous is not None and previous.counted and (previous.org, previous.vehicle_class) == key:
        return None  # already holds its place
    used = sum(
        1 for v in vehicles if v.counted and (v.org, v.vehicle_class) == key and v.id != record.id
    )
    if used < quota[key]:
        return None
    return {
        "error": "over_quota",
        "message": (
            f"{record.org} 的{record.vehicle_class}编制数为 {quota[key]}, 实有 {used} 辆, "
            "已满: 请先将一辆同单位同类别的车辆移交处置, 再注册登记"
        ),
        "org": record.org,
        "vehicle_class": record.vehicle_class,
        "authorised": quota[key],
        "actual": used,
    }


def due_reminders(
    vehicles: Iterable[VehicleRecord],
    drivers: Iterable[DriverRecord],
    today: dt.date,
    *,
    within_days: int = 30,
) -> list[dict[str, Any]]:
    """保险、年检、驾驶证 expiring within ``within_days`` of ``today`` (or already past).

    Disposed vehicles and drivers who left are not reminded about."""
    out: list[dict[str, Any]] = []
    horizon = today + dt.timedelta(days=within_days)
    for v in vehicles:
        if v.status == "已处置":
            continue
        for what, label, due in (
            ("insurance", "保险", v.insurance_due),
            ("inspection", "年检", v.inspection_due),
        ):
            if due is not None and due <= horizon:
                out.append(
                    {
                        "kind": what,
                        "record": "vehicle",
                        "id": v.id,
                        "org": v.org,
                        "due": due.isoformat(),
                        "days_left": (due - today).days,
                        "text": _due_text(f"{v.plate} {label}", due, today),
                    }
                )
    for d in drivers:
        if d.status == "离职" or d.licence_expiry is None or d.licence_expiry > horizon:
            continue
        due = d.licence_expiry
        out.append(
            {
                "kind": "licence",
                "record": "driver",
                "id": d.id,
                "org": d.org,
                "due": due.isoformat(),
                "days_left": (due - today).days,
                "text": _due_text(f"驾驶员 {d.name} 驾驶证", due, today),
            }
        )
    return out


def _due_text(what: str, due: dt.date, today: dt.date) -> str:
    if due < today:
        return f"{what}已于 {due.isoformat()} 过期"
    return f"{what}将于 {due.isoformat()} 到期"
