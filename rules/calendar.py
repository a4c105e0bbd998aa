"""Workdays, rest days and statutory holidays (节假日 and 调休).

The official calendar comes from ``chinese-calendar`` (State Council notices,
2004 up to the year it was last updated). A local override file adds what it
does not know: the next year's notice before the package is updated, and
local arrangements. Override file formats:

CSV (header required)::

    date,kind,name
    2027-01-01,holiday,元旦
    2027-02-07,workday,春节调休

TOML::

    years = [2027]            # optional: years this file fully covers
    [[days]]
    date = 2027-01-01
    kind = "holiday"          # or "workday" (a make-up workday)
    name = "元旦"

A year is *covered* when ``chinese-calendar`` knows it, or the override file
lists it in ``years`` or has at least one day in it. For a year that is not
covered the calendar logs a warning (once per year) and falls back to
**Monday–Friday workdays, Saturday–Sunday rest days**; every day it answers
that way carries ``source="fallback"`` so alarms can say so. It never raises
and never silently calls a holiday a workday without saying so.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import chinese_calendar

from fleet.errors import ConfigError

__all__ = ["DayInfo", "WorkCalendar"]

log = logging.getLogger(__name__)

DayKind = Literal["workday", "makeup_workday", "weekend", "holiday"]
Source = Literal["official", "override", "fallback"]


@dataclass(frozen=True, slots=True)
class DayInfo:
    workday: bool
    kind: DayKind
    name: str | None
    source: Source


class WorkCalendar:
    """Answers :meth:`day` for any local date; pure apart from its one warning per year."""

    def __init__(
        self,
        override_file: str | Path | None = None,
        *,
        overrides: dict[dt.date, tuple[str, str | None]] | None = None,
        covered_years: set[int] | None = None,
    ) -> None:
        self._over: dict[dt.date, tuple[str, str | None]] = dict(overrides or {})
        self._years: set[int] = set(covered_years or ())
        if override_file is not None:
            days, years = _read_override(Path(override_file))
            self._over.update(days)
            self._years |= years
        self._years |= {d.year for d in self._over}
        self._warned: set[int] = set()
        self._cache: dict[dt.date, DayInfo] = {}

    def day(self, d: dt.date) -> DayInfo:
        info = self._cache.get(d)
        if info is None:
            info = self._cache[d] = self._compute(d)
        return info

    def _compute(self, d: dt.date) -> DayInfo:
        over = self._over.get(d)
        if over is not None:
            kind, name = over
            if kind == "holiday":
                return DayInfo(False, "holiday", name, "override")
            return DayInfo(
                True, "makeup_workday" if d.weekday() >= 5 else "workday", name, "override"
            )
        weekend = d.weekday() >= 5
        try:
            is_holiday, name = chinese_calendar.get_holiday_detail(d)
        except NotImplementedError:
            if d.year in self._years:
                # The override file covers this year: days it does not list are ordinary.
                return DayInfo(not weekend, "weekend" if weekend else "workday", None, "override")
            if d.year not in self._warned:
                self._warned.add(d.year)
                log.warning(
                    "holiday calendar: no data for %d (chinese-calendar %s and no override); "
                    "falling back to Monday-Friday workdays - add the State Council notice for "
                    "%d to [rules.calendar] override_file",
                    d.year,
                    getattr(chinese_calendar, "__version__", "?"),
                    d.year,
                )
            return DayInfo(not weekend, "weekend" if weekend else "workday", None, "fallback")
        if is_holiday:
            return DayInfo(False, "holiday" if name else "weekend", name, "official")
        return DayInfo(
            True, "makeup_workday" if weekend else "workday", name if weekend else None, "official"
        )


def _read_override(path: Path) -> tuple[dict[dt.date, tuple[str, str | None]], set[int]]:
    src = str(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            src,
            "rules.calendar.override_file",
            f"cannot read: {exc.strerror}",
            "give an existing CSV or TOML file",
        ) from exc
    rows: list[dict[str, object]]
    years: set[int] = set()
    if path.suffix.lower() == ".toml":
        try:
            doc = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(src, "<file>", f"not valid TOML: {exc}", "fix the syntax") from exc
        rows = list(doc.get("days", []))
        years = {int(y) for y in doc.get("years", [])}
    else:
        rows = list(csv.DictReader(raw.splitlines()))
    out: dict[dt.date, tuple[str, str | None]] = {}
    for i, row in enumerate(rows):
        key = f"days[{i}]"
        value = row.get("date")
        try:
            day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value).strip())
        except ValueError as exc:
            raise ConfigError(
                src, f"{key}.date", f"{value!r} is not a date", "write YYYY-MM-DD"
            ) from exc
        kind = str(row.get("kind", "")).strip()
        if kind not in ("holiday", "workday"):
            raise ConfigError(
                src, f"{key}.kind", f"{kind!r} is not holiday/workday", "write holiday or workday"
            )
        name = row.get("name")
        out[day] = (kind, str(name).strip() if name else None)
    return out, years
