"""Typed configuration of the rules engine (``[rules]`` table).

Every duration is in seconds, every speed in km/h, every local time ``HH:MM``
in the fleet's time zone (``[service] timezone``). Each rule has ``enabled``;
the debounced rules have ``min_duration_s`` (how long the condition must hold
before an episode opens) and ``close_after_s`` (how long it must stay false
before the episode closes) — the hysteresis that keeps jitter from opening a
storm of alarms.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ORDER_TYPES",
    "CalendarConfig",
    "DriverMismatchConfig",
    "FatigueConfig",
    "ForbiddenZoneConfig",
    "NoOrderConfig",
    "OffHoursConfig",
    "OfflineConfig",
    "OrderMismatchConfig",
    "OrdersConfig",
    "OutOfAreaConfig",
    "ParkingConfig",
    "RulesConfig",
    "Schedule",
    "SpeedingConfig",
    "TerminalAlarmConfig",
    "WorkingHoursConfig",
]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):([0-5]\d)|24:00)$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")

# Dispatch order types (派车单类型) and the excuse tokens each authorises by default.
ORDER_TYPES: tuple[str, ...] = ("local", "out_of_area", "holiday", "overnight")
EXCUSE_TOKENS: tuple[str, ...] = (
    "off_hours.after_hours",  # moving on a workday outside the working windows
    "off_hours.rest_day",  # moving on a weekend or statutory holiday
    "out_of_area",  # outside the allowed region (出市)
    "parking_violation.night",  # parked away from the lot at night
    "parking_violation.rest_day",  # parked away from the lot on a rest day
)
_DEFAULT_EXCUSES: dict[str, list[str]] = {
    "local": ["off_hours.after_hours"],
    "out_of_area": ["out_of_area", "off_hours.after_hours", "off_hours.rest_day"],
    "holiday": ["off_hours.rest_day", "parking_violation.rest_day"],
    "overnight": ["parking_violation.night", "off_hours.after_hours"],
}


def hhmm_minutes(text: str) -> int:
    """``"08:30"`` → 510; ``"24:00"`` → 1440."""
    h, m = text.split(":")
    return int(h) * 60 + int(m)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpeedingConfig(_Frozen):
    enabled: bool = True
    min_duration_s: float = Field(10.0, ge=0, description="over the limit this long opens")
    close_after_s: float = Field(10.0, ge=0, description="below the limit this long closes")
    default_limit_kmh: float = Field(80.0, gt=0)
    limits_by_type: dict[str, float] = Field(default_factory=dict)
    update_step_kmh: float = Field(
        10.0, gt=0, description="an update each time the peak crosses another multiple of this"
    )


class Schedule(_Frozen):
    """Working windows of one organisation, ``"HH:MM-HH:MM"`` local time, per season."""

    summer: list[str] = Field(default_factory=lambda: ["08:30-12:00", "14:30-18:00"])
    winter: list[str] = Field(default_factory=lambda: ["08:30-12:00", "14:00-17:30"])

    @field_validator("summer", "winter")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            if not _WINDOW.match(w):
                raise ValueError(f"window {w!r} is not HH:MM-HH:MM")
            a, b = w.split("-")
            if hhmm_minutes(a) >= hhmm_minutes(b):
                raise ValueError(f"window {w!r} ends before it starts")
        return v

    def minutes(self, season: str) -> list[tuple[int, int]]:
        out = []
        for w in self.summer if season == "summer" else self.winter:
            a, b = w.split("-")
            out.append((hhmm_minutes(a), hhmm_minutes(b)))
        return out


class WorkingHoursConfig(_Frozen):
    """Summer hours run from ``summer_start`` to ``summer_end`` inclusive (MM-DD)."""

    summer_start: str = "05-01"
    summer_end: str = "09-30"
    default: Schedule = Schedule()
    by_org: dict[str, Schedule] = Field(
        default_factory=dict, description="org id → schedule; a unit inherits its parent's"
    )

    @field_validator("summer_start", "summer_end")
    @classmethod
    def _mmdd(cls, v: str) -> str:
        if not _MMDD.match(v):
            raise ValueError(f"{v!r} is not MM-DD")
        return v


class CalendarConfig(_Frozen):
    override_file: str | None = Field(
        None, description="TOML or CSV of local holidays / make-up workdays (date,kind,name)"
    )


class OffHoursConfig(_Frozen):
    enabled: bool = True
    moving_speed_kmh: float = Field(5.0, ge=0, description="ACC on and faster than this = moving")
    min_duration_s: float = Field(60.0, ge=0)
    close_after_s: float = Field(300.0, ge=0)
    working_hours: WorkingHoursConfig = WorkingHoursConfig()


class OutOfAreaConfig(_Frozen):
    enabled: bool = True
    min_duration_s: float = Field(60.0, ge=0)
    close_after_s: float = Field(60.0, ge=0)
    update_step_km: float = Field(5.0, gt=0, description="an update every this many km outside")


class ForbiddenZoneConfig(_Frozen):
    enabled: bool = True
    min_duration_s: float = Field(30.0, ge=0)
    close_after_s: float = Field(60.0, ge=0)


class ParkingConfig(_Frozen):
    enabled: bool = True
    parked_speed_kmh: float = Field(1.0, ge=0, description="ACC off, or at most this = parked")
    grace_s: float = Field(1800.0, ge=0, description="parked away this long opens")
    close_after_s: float = Field(120.0, ge=0)
    night_start: str = "22:00"
    night_end: str = "06:00"
    on_rest_days: bool = True

    @field_validator("night_start", "night_end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r} is not HH:MM")
        return v


class OfflineConfig(_Frozen):
    enabled: bool = True
    after_s: float = Field(600.0, gt=0, description="no report this long = offline")


# JT/T 808-2019 table 24 (alarm flags): bit → name.
ALARM_BITS: dict[str, int] = {
    "sos": 0,
    "overspeed": 1,
    "fatigue": 2,
    "danger_warning": 3,
    "gnss_fault": 4,
    "gnss_antenna_cut": 5,
    "gnss_antenna_short": 6,
    "power_low": 7,
    "power_cut": 8,
    "lcd_fault": 9,
    "tts_fault": 10,
    "camera_fault": 11,
    "ic_card_fault": 12,
    "overspeed_warning": 13,
    "fatigue_warning": 14,
    "driving_overtime_today": 18,
    "parking_overtime": 19,
    "area_in_out": 20,
    "route_in_out": 21,
    "route_time": 22,
    "route_deviation": 23,
    "vss_fault": 24,
    "fuel_abnormal": 25,
    "theft": 26,
    "illegal_ignition": 27,
    "illegal_displacement": 28,
    "collision": 29,
    "rollover": 30,
    "illegal_door_open": 31,
}


class TerminalAlarmConfig(_Frozen):
    enabled: bool = True
    bits: list[str] = Field(
        default_factory=lambda: [
            "sos",
            "power_cut",
            "gnss_antenna_cut",
            "theft",
            "illegal_ignition",
            "illegal_displacement",
            "collision",
            "rollover",
        ],
        description="which JT/T 808 alarm bits open an episode, by name",
    )
    critical: list[str] = Field(default_factory=lambda: ["sos", "collision", "rollover"])
    close_after_s: float = Field(30.0, ge=0, description="bit cleared this long closes")

    @field_validator("bits", "critical")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in ALARM_BITS:
                raise ValueError(f"unknown alarm bit {name!r}; known: {sorted(ALARM_BITS)}")
        return v


class FatigueConfig(_Frozen):
    enabled: bool = True
    max_driving_s: float = Field(4 * 3600.0, gt=0, description="continuous driving over this")
    rest_s: float = Field(20 * 60.0, gt=0, description="a stop (or silence) this long is a rest")
    moving_speed_kmh: float = Field(5.0, ge=0)


class SealedConfig(_Frozen):
    """封存: a sealed vehicle must not move; any movement opens a critical alarm."""

    enabled: bool = True
    moving_speed_kmh: float = Field(5.0, ge=0, description="ACC on, or faster than this: moving")
    min_duration_s: float = Field(0.0, ge=0, description="0: the first moving point")
    close_after_s: float = Field(300.0, ge=0, description="still this long: the episode closes")


class OrdersConfig(_Frozen):
    excuses: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in _DEFAULT_EXCUSES.items()},
        description="order type → what it authorises",
    )
    lookback_h: float = Field(72.0, gt=0, description="closed episodes an order can still cover")

    @field_validator("excuses")
    @classmethod
    def _tokens(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for typ, toks in v.items():
            if typ not in ORDER_TYPES:
                raise ValueError(f"unknown order type {typ!r}; use one of {ORDER_TYPES}")
            for t in toks:
                if t not in EXCUSE_TOKENS:
                    raise ValueError(f"unknown excuse {t!r}; use one of {EXCUSE_TOKENS}")
        return v


class NoOrderConfig(_Frozen):
    """无单派车: a vehicle away from its lot without a covering valid order.

    Opt-in per organisation: ``orgs`` lists the organisations (a unit inherits its
    parent's choice) whose vehicles are checked; empty (the default) checks nobody.
    Only vehicles whose organisation has a lot fence are checked. The trip counts
    from the first position outside the lot with no covering order; once it has gone
    ``min_km`` (straight steps between positions) or lasted ``min_minutes``, one
    episode opens — at any hour — and closes once the vehicle has been back in its
    lot (or under an order) for ``close_after_s``."""

    enabled: bool = True
    orgs: list[str] = Field(default_factory=list, description="organisations checked (opt-in)")
    min_km: float = Field(2.0, gt=0, description="a trip longer than this without an order")
    min_minutes: float = Field(20.0, gt=0, description="or away from the lot longer than this")
    close_after_s: float = Field(300.0, ge=0, description="back in the lot this long closes")


class OrderMismatchConfig(_Frozen):
    """派车单不符: a trip under an order that does not keep to it.

    * region: a position outside the order's ``region`` (``county:<name>``, ``city``,
      ``out_of_city:<city>``) by more than ``region_tolerance_km``; for an
      out-of-city order the corridor between the home city and the destination city
      (``corridor_km`` each side of the line between their centres) is allowed too;
    * window: a trip (away from the lot) that began under the order is still away
      ``window_tolerance_minutes`` after the order's end, or began more than that
      before its start;
    * vehicle: a vehicle away from its lot with no order of its own while an order of
      its own organisation names another vehicle (the dispatched car is not the one
      on the order), after ``vehicle_grace_s``."""

    enabled: bool = True
    region_tolerance_km: float = Field(2.0, ge=0)
    corridor_km: float = Field(15.0, ge=0)
    window_tolerance_minutes: float = Field(30.0, ge=0)
    vehicle_check: bool = True
    vehicle_grace_s: float = Field(300.0, ge=0)
    min_duration_s: float = Field(60.0, ge=0)
    close_after_s: float = Field(300.0, ge=0)


class DriverMismatchConfig(_Frozen):
    """人车不符: the driver card the terminal reports (JT/T 808 0x0702) is not the
    order's driver while the vehicle moves under that order."""

    enabled: bool = True
    min_duration_s: float = Field(0.0, ge=0)
    close_after_s: float = Field(300.0, ge=0)


class RulesConfig(_Frozen):
    speeding: SpeedingConfig = SpeedingConfig()
    off_hours: OffHoursConfig = OffHoursConfig()
    out_of_area: OutOfAreaConfig = OutOfAreaConfig()
    forbidden_zone: ForbiddenZoneConfig = ForbiddenZoneConfig()
    parking_violation: ParkingConfig = ParkingConfig()
    offline: OfflineConfig = OfflineConfig()
    terminal_alarm: TerminalAlarmConfig = TerminalAlarmConfig()
    fatigue: FatigueConfig = FatigueConfig()
    sealed_moving: SealedConfig = SealedConfig()
    no_order: NoOrderConfig = NoOrderConfig()
    order_mismatch: OrderMismatchConfig = OrderMismatchConfig()
    driver_mismatch: DriverMismatchConfig = DriverMismatchConfig()
    orders: OrdersConfig = OrdersConfig()
    calendar: CalendarConfig = CalendarConfig()
