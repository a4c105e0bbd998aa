"""The work calendar: official days, make-up workdays, overrides and the loud fallback."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from rules.calendar import WorkCalendar


def test_official_days() -> None:
    cal = WorkCalendar()
    assert cal.day(dt.date(2026, 10, 1)).kind == "holiday"
    assert cal.day(dt.date(2026, 10, 1)).name == "National Day"
    sat = cal.day(dt.date(2026, 10, 10))
    assert sat.workday and sat.kind == "makeup_workday" and sat.source == "official"
    assert cal.day(dt.date(2026, 11, 21)).kind == "weekend"
    assert cal.day(dt.date(2026, 11, 25)).kind == "workday"


def test_missing_year_warns_once_per_year(caplog: pytest.LogCaptureFixture) -> None:
    cal = WorkCalendar()
    with caplog.at_level(logging.WARNING, logger="rules.calendar"):
        days = [cal.day(dt.date(2027, 1, d)) for d in range(1, 11)]
        cal.day(dt.date(2028, 3, 1))
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "holiday calendar: no data for 2027 (chin",
        "holiday calendar: no data for 2028 (chin",
    ]
    assert all(d.source == "fallback" for d in days)
    assert days[1].kind == "weekend" and not days[1].workday  # 2027-01-02, a Saturday
    assert days[0].workday  # 2027-01-01 unknown: the fallback says so, it does not guess


def test_override_beats_the_package(tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    path.write_text("date,kind,name\n2026-11-25,holiday,地方节日\n", encoding="utf-8")
    cal = WorkCalendar(path)
    d = cal.day(dt.date(2026, 11, 25))
    assert (d.workday, d.kind, d.name, d.source) == (False, "holiday", "地方节日", "override")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.csv", "date,kind\n2027-13-01,holiday\n"),
        ("bad2.csv", "date,kind\n2027-01-01,party\n"),
        ("bad.toml", "[[days]\n"),
    ],
)
def test_bad_override_file_is_a_config_error(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):
        WorkCalendar(path)
    with pytest.raises(ConfigError):
        WorkCalendar(tmp_path / "missing.csv")
