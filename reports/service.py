"""Reports and the board summary from a :class:`store.rollup.RollupStore`.

What the API, the monthly job and the bench share: one fetch of the rollup's aggregates
per request, then the pure tables of :mod:`reports.tables`. No positions are read here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.registry import OrgTree
from reports.tables import (
    LEVELS,
    REPORTS,
    BadReport,
    ReportInput,
    build_report,
    children_level,
    level_of,
)
from store.rollup import REAL, RollupStore

__all__ = ["MAX_DAYS", "ReportQuery", "board_summary", "fetch_input", "parse_day", "report_levels"]

MAX_DAYS = 366  # a report covers at most a year (the annual report)
IDLE_LOOKBACK_DAYS = 60  # an idle vehicle's last trip is looked up this far before its window


FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2099, 12, 31)  # what a report may ask


def parse_day(text: str | None, name: str, default: dt.date) -> dt.date:
    if not text:
        return default
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise BadReport(f"{name} must be YYYY-MM-DD, not {text!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadReport(f"{name} must be between {FIRST_DAY} and {LAST_DAY}")
    return day


@dataclass(frozen=True)
class ReportQuery:
    name: str
    org: str
    from_day: dt.date
    to_day: dt.date
    level: str | None = None  # default: the level below the organisation's own
    idle_days: int = 7
    kind: str | None = None  # violations: only this kind in the list behind the counts
    scenario: str = REAL
    items_limit: int = 1000
    quota: Sequence[Mapping[str, Any]] = field(default=())
    own: bool = False  # only the vehicles booked on ``org`` itself (a 本级 row's drill-down)
    lang: str = "zh"  # the rows' names: "（本级）" or " (own)"

    def check(self, tree: OrgTree) -> str:
        if self.name not in REPORTS:
            raise BadReport(f"no report {self.name!r}; one of {', '.join(REPORTS)}")
        if self.to_day < self.from_day:
            raise BadReport("to is before from")
        if (self.to_day - self.from_day).days + 1 > MAX_DAYS:
            raise BadReport(f"at most {MAX_DAYS} days in one report")
        if not 1 <= self.idle_days <= 365:
            raise BadReport("idle_days must be 1..365")
        level = self.level or children_level(level_of(tree, self.org)) or "vehicle"
        if self.own:
            level = self.level or "vehicle"
        if level not in LEVELS:
            raise BadReport(f"level must be one of {', '.join(LEVELS)}")
        if self.own and level != "vehicle":
            raise BadReport("own=1 lists vehicles: level must be vehicle")
        return level


async def fetch_input(
    rollup: RollupStore,
    tree: OrgTree,
    plates: Mapping[str, str],
    q: ReportQuery,
    level: str,
) -> ReportInput:
    sub: list[str] | None = sorted(tree.subtree(q.org))
    if q.own:
        sub = [q.org]
    elif tree.parent[tree.index(q.org)] < 0:
        sub = None  # a root: every row (rows of unknown organisations are dropped later)
    f, t = q.from_day.isoformat(), q.to_day.isoformat()
    vsums: Sequence[Mapping[str, Any]] = ()
    groups: Sequence[Mapping[str, Any]] = ()
    idle: Sequence[Mapping[str, Any]] = ()
    items: Sequence[Mapping[str, Any]] = ()
    by_vehicle = level == "vehicle"
    if q.name in ("use", "online", "coverage") or (by_vehicle and q.name != "quota"):
        # per vehicle at the vehicle level, else per organisation (summed in SQL)
        vsums = await (rollup.vehicle_sums if by_vehicle else rollup.org_sums)(
            q.scenario, f, t, sub
        )
    if q.name in ("violations", "handling"):
        groups = await rollup.alarm_groups(q.scenario, f, t, sub)
    if q.name == "violations":
        items = await rollup.alarm_items(
            q.scenario, f, t, sub, kind=q.kind, limit=q.items_limit + 1
        )
    if q.name == "use":
        idle_from = q.to_day - dt.timedelta(days=q.idle_days - 1)
        since = (idle_from - dt.timedelta(days=IDLE_LOOKBACK_DAYS)).isoformat()
        idle = await rollup.idle_vehicles(q.scenario, idle_from.isoformat(), t, sub, since=since)
    return ReportInput(
        tree=tree,
        org=q.org,
        level=level,
        from_day=f,
        to_day=t,
        vehicle_sums=vsums,
        alarm_groups=groups,
        plates=plates,
        idle_sums=idle,
        idle_days=q.idle_days,
        quota=q.quota,
        alarm_items=items,
        items_limit=q.items_limit,
        lang=q.lang,
    )


async def report_json(
    rollup: RollupStore, tree: OrgTree, plates: Mapping[str, str], q: ReportQuery
) -> dict[str, Any]:
    level = q.check(tree)
    inp = await fetch_input(rollup, tree, plates, q, level)
    out = build_report(q.name, inp)
    out["scenario"] = q.scenario
    return out


async def report_levels(
    rollup: RollupStore, tree: OrgTree, plates: Mapping[str, str], q: ReportQuery
) -> list[dict[str, Any]]:
    """The report at the requested level and every level below it (the XLSX's sheets)."""
    level = q.check(tree)
    inp = await fetch_input(rollup, tree, plates, q, level)
    by_vehicle: ReportInput | None = None
    out = []
    lv: str | None = level
    while lv is not None:
        if lv == "vehicle" and not REPORTS[q.name].vehicle_level:
            break
        if lv == "vehicle" and level != "vehicle":
            by_vehicle = by_vehicle or await fetch_input(rollup, tree, plates, q, "vehicle")
        src = by_vehicle if lv == "vehicle" and by_vehicle is not None else inp
        try:
            rep = build_report(q.name, _with_level(src, lv))
        except BadReport:
            break
        if not rep["rows"] and lv != level:
            lv = children_level(lv)
            continue
        out.append(rep)
        lv = children_level(lv)
    return out


def _with_level(inp: ReportInput, level: str) -> ReportInput:
    from dataclasses import replace

    return replace(inp, level=level)


async def board_summary(
    rollup: RollupStore,
    tree: OrgTree,
    plates: Mapping[str, str],
    org: str,
    day: dt.date,
    *,
    scenario: str = REAL,
    idle_days: int = 7,
    attention_n: int = 5,
) -> dict[str, Any]:
    """The board's figures for one day from the rollup (quota/actual/online/costs are
    added by the caller, who holds the records, the live feed and the cost store)."""
    keep = tree.subtree(org)
    sub = sorted(keep)
    d = day.isoformat()
    vs = [v for v in await rollup.org_sums(scenario, d, d, sub) if v["org"] in keep]
    groups = [g for g in await rollup.alarm_groups(scenario, d, d, sub) if g["org"] in keep]
    by_kind: dict[str, int] = {}
    for g in groups:
        by_kind[str(g["kind"])] = by_kind.get(str(g["kind"]), 0) + int(g["n"])

    def trend(n: int) -> list[dict[str, Any]]:
        first = day - dt.timedelta(days=n - 1)
        got = {r["date"]: r for r in days}
        out = []
        for i in range(n):
            k = (first + dt.timedelta(days=i)).isoformat()
            r = got.get(k)
            out.append(
                {
                    "date": k,
                    "trips": r["trips"] if r else 0,
                    "km": round(r["km"], 1) if r else 0.0,
                    "alarms": r["alarms"] if r else 0,
                }
            )
        return out

    days = await rollup.day_totals(scenario, (day - dt.timedelta(days=29)).isoformat(), d, sub)
    # Attention: units over the last 7 days.
    week = ReportQuery("violations", org, day - dt.timedelta(days=6), day, scenario=scenario)
    lvl = "unit"  # a unit asking sees its own row
    viol = await report_json(rollup, tree, plates, _q(week, "violations", lvl))
    hand = await report_json(rollup, tree, plates, _q(week, "handling", lvl))
    onl = await report_json(rollup, tree, plates, _q(week, "online", lvl))
    use = await report_json(
        rollup,
        tree,
        plates,
        ReportQuery("use", org, day, day, idle_days=idle_days, level=lvl, scenario=scenario),
    )
    return {
        "org": org,
        "date": d,
        "trips": sum(int(v["trips"] or 0) for v in vs),
        "km": round(sum(float(v["km"] or 0) for v in vs), 1),
        "alarms": sum(by_kind.values()),
        "vehicles_used": sum(int(v["n_active"] or 0) for v in vs),
        "online_rate": _ratio(
            sum(float(v["online_s"] or 0) for v in vs), sum(float(v["span_s"] or 0) for v in vs)
        ),
        "costs": None,
        "alarms_by_kind": by_kind,
        "trend7": trend(7),
        "trend30": trend(30),
        "attention": {
            "violations": [
                {"org": r["org"], "name": r["name"], "alarms": r["total"]}
                for r in sorted(viol["rows"], key=lambda r: -r["total"])
                if r["total"]
            ][:attention_n],
            "slow_handling": [
                {
                    "org": r["org"],
                    "name": r["name"],
                    "ack_avg_min": r["ack_avg_min"],
                    "acked_10min_rate": r["acked_10min_rate"],
                }
                for r in sorted(
                    (r for r in hand["rows"] if r["alarms"]),
                    key=lambda r: (r["acked_10min_rate"] or 0.0, -(r["ack_avg_min"] or 1e9)),
                )
            ][:attention_n],
            "low_online": [
                {"org": r["org"], "name": r["name"], "online_rate": r["online_rate"]}
                for r in sorted(
                    (r for r in onl["rows"] if r["online_rate"] is not None),
                    key=lambda r: r["online_rate"],
                )
            ][:attention_n],
        },
        "idle_days": idle_days,
        "idle": use["idle"],
    }


def _q(base: ReportQuery, name: str, level: str) -> ReportQuery:
    from dataclasses import replace

    return replace(base, name=name, level=level)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None
