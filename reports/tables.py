"""The six reports, built from rollup aggregates only (never positions). Pure.

Levels: ``city`` (the root) → ``county`` (区县, depth 1) → ``unit`` (单位: the leaves
of the organisation tree) → ``vehicle``. A report asked for organisation ``org`` at a
level has one row per organisation of that level inside ``org``'s subtree (one per
vehicle at ``vehicle``); each row sums the vehicles of its own subtree. ``totals`` sum
every vehicle of ``org``'s subtree, so a vehicle booked on an inner organisation counts
in the totals even where no leaf row holds it.

Each row carries ``org`` (or ``vehicle``) and ``name`` for drill-down; the page asks
again with ``org=row.org`` and ``level=children_level``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.registry import OrgTree
from notify.message import KIND_NAMES, SEVERITY_NAMES
from rules.events import KINDS

__all__ = [
    "LEVELS",
    "REPORTS",
    "BadReport",
    "ReportInput",
    "build_report",
    "children_level",
    "level_of",
    "report_list",
]

LEVELS = ("city", "county", "unit", "vehicle")
TEN_MIN_S = 600.0  # JT/T 796: an alarm is to be handled within 10 minutes

KIND_EN: Mapping[str, str] = {
    "speeding": "Speeding",
    "off_hours": "Use outside working hours",
    "out_of_area": "Out of area",
    "forbidden_zone": "Banned place",
    "parking_violation": "Parked away from the lot",
    "offline": "Offline",
    "terminal_alarm": "Terminal alarm",
    "fatigue": "Fatigue driving",
    "no_order": "No dispatch order",
    "order_mismatch": "Trip unlike its order",
    "driver_mismatch": "Driver unlike the order",
    "sealed_moving": "Sealed vehicle moving",
    "record_due": "Record due",
}


class BadReport(ValueError):
    """A request the reports cannot answer (unknown name, level above the organisation)."""


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    en: str
    type: str = "int"  # int | float | rate (0..1) | text

    def json(self) -> dict[str, str]:
        return {"key": self.key, "zh": self.zh, "en": self.en, "type": self.type}


@dataclass(frozen=True)
class ReportInput:
    """What a report is built from: the rollup's aggregates over [from, to]."""

    tree: OrgTree
    org: str
    level: str
    from_day: str
    to_day: str
    # store.rollup.VEHICLE_SUM_KEYS per vehicle, or ORG_SUM_KEYS per organisation (then
    # ``vehicle_id`` is the organisation and n_vehicles / n_active count its vehicles)
    vehicle_sums: Sequence[Mapping[str, Any]]
    alarm_groups: Sequence[Mapping[str, Any]] = ()  # store.rollup.ALARM_GROUP_KEYS
    plates: Mapping[str, str] | None = None  # vehicle id -> plate
    idle_sums: Sequence[Mapping[str, Any]] = ()  # idle vehicles: {vehicle_id, org, last_trip_day}
    idle_days: int = 7
    quota: Sequence[Mapping[str, Any]] = ()  # {org, vehicle_class, authorised, actual, over}
    alarm_items: Sequence[Mapping[str, Any]] = ()  # the list behind the violation counts
    items_limit: int = 1000
    lang: str = "zh"  # the rows' "本级" suffix (OWN_SUFFIX); headers carry both languages


#: The suffix of an organisation's own row (its vehicles booked on itself), by language.
OWN_SUFFIX: Mapping[str, str] = {"zh": "（本级）", "en": " (own)"}


# -- organisation levels ---------------------------------------------------------------------


def _depth(tree: OrgTree) -> dict[str, int]:
    parent = tree.parent.tolist()
    out = {}
    for i, oid in enumerate(tree.ids):
        d, a = 0, parent[i]
        while a >= 0:
            d, a = d + 1, parent[a]
        out[oid] = d
    return out


def _children(tree: OrgTree) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {o: [] for o in tree.ids}
    for i, p in enumerate(tree.parent.tolist()):
        if p >= 0:
            out[tree.ids[p]].append(tree.ids[i])
    return out


def level_of(tree: OrgTree, org: str) -> str:
    d = _depth(tree)[org]
    return LEVELS[min(d, 2)]


def children_level(level: str) -> str | None:
    i = LEVELS.index(level)
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None


def _row_orgs(
    tree: OrgTree, org: str, level: str, holders: frozenset[str] = frozenset()
) -> tuple[list[str], set[str]]:
    """The rows' organisations, and which of them are "本级" rows: an organisation above
    the level that holds vehicles itself gets a row of its own vehicles only, so that the
    rows of a level add up to the totals (``holders``: organisations holding vehicles)."""
    depth, kids = _depth(tree), _children(tree)
    sub = tree.subtree(org)
    own = level_of(tree, org)
    if LEVELS.index(level) < LEVELS.index(own):
        raise BadReport(f"level {level!r} is above organisation {org!r} ({own})")
    if level == own:
        return [org], set()
    ordered = [o for o in tree.ids if o in sub]
    if level == "county":
        rows = {o for o in ordered if depth[o] == 1}
    else:
        rows = {o for o in ordered if not kids[o] and depth[o] >= 1}  # units: the leaves
    inner = {o for o in ordered if o not in rows and o in holders and not (rows & _above(tree, o))}
    return [o for o in ordered if o in rows or o in inner], inner


def _above(tree: OrgTree, org: str) -> set[str]:
    out, a = set(), tree.parent[tree.index(org)]
    while a >= 0:
        out.add(tree.ids[a])
        a = tree.parent[a]
    return out


def _owner_of_orgs(tree: OrgTree, rows: Sequence[str], inner: set[str]) -> dict[str, str]:
    """Each organisation -> the row that counts its vehicles (an inner row: only its own)."""
    out: dict[str, str] = {}
    for r in rows:
        if r in inner:
            out.setdefault(r, r)
            continue
        for o in tree.subtree(r):
            out[o] = r
    return out


# -- the reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    name: str
    title_zh: str
    title_en: str
    columns: tuple[Column, ...]
    # per vehicle additive figures, from the input
    base: Callable[[ReportInput], dict[str, dict[str, float]]]
    # derived (ratio) columns from a row's sums
    derive: Callable[[dict[str, float]], dict[str, Any]] = lambda s: {}
    vehicle_level: bool = True


def _f(x: Any) -> float:
    return float(x or 0)


def _rate(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _sums_by_vehicle(inp: ReportInput) -> dict[str, Mapping[str, Any]]:
    return {str(v["vehicle_id"]): v for v in inp.vehicle_sums}


def _use_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    idle: dict[str, float] = {}
    for v in inp.idle_sums:  # keyed like the sums: by vehicle, or by its organisation
        k = str(v["vehicle_id"]) if inp.level == "vehicle" else str(v["org"])
        idle[k] = idle.get(k, 0) + 1
    out = {}
    for vid, v in _sums_by_vehicle(inp).items():
        out[vid] = {
            "vehicles": _f(v.get("n_vehicles", 1)),
            "active": _f(v.get("n_active", 1 if _f(v["trips"]) > 0 else 0)),
            "idle_vehicles": idle.get(vid, 0),
            "trips": _f(v["trips"]),
            "km": _f(v["km"]),
            "driving_s": _f(v["driving_s"]),
            "idle_s": _f(v["idle_s"]),
            "outside_s": _f(v["outside_s"]),
        }
    return out


def _use_derive(s: dict[str, float]) -> dict[str, Any]:
    return {
        "trips": int(s["trips"]),
        "km": round(s["km"], 1),
        "driving_h": round(s["driving_s"] / 3600, 2),
        "idle_h": round(s["idle_s"] / 3600, 2),
        "outside_h": round(s["outside_s"] / 3600, 2),
        "km_per_vehicle": round(s["km"] / s["vehicles"], 1) if s["vehicles"] else None,
    }


def _violations_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for g in inp.alarm_groups:
        d = out.setdefault(str(g["vehicle_id"]), {k: 0.0 for k in KINDS} | {"total": 0.0})
        d[str(g["kind"])] = d.get(str(g["kind"]), 0.0) + _f(g["n"])
        d["total"] += _f(g["n"])
        if g["severity"] == "critical":
            d["critical"] = d.get("critical", 0.0) + _f(g["n"])
    for d in out.values():
        d.setdefault("critical", 0.0)
    return out


def _handling_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    keys = ("n", "acked", "ack_s", "acked_10min", "handled", "handle_s", "handled_10min")
    for g in inp.alarm_groups:
        d = out.setdefault(str(g["vehicle_id"]), dict.fromkeys(keys, 0.0))
        for k in keys:
            d[k] += _f(g[k])
    return out


def _handling_derive(s: dict[str, float]) -> dict[str, Any]:
    return {
        "alarms": int(s["n"]),
        "acked": int(s["acked"]),
        "ack_avg_min": round(s["ack_s"] / s["acked"] / 60, 1) if s["acked"] else None,
        "acked_10min_rate": _rate(s["acked_10min"], s["n"]),
        "handled": int(s["handled"]),
        "handle_avg_min": round(s["handle_s"] / s["handled"] / 60, 1) if s["handled"] else None,
        "handled_10min_rate": _rate(s["handled_10min"], s["n"]),
    }


def _online_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    return {
        vid: {
            "vehicles": _f(v.get("n_vehicles", 1)),
            "online_s": _f(v["online_s"]),
            "span_s": _f(v["span_s"]),
        }
        for vid, v in _sums_by_vehicle(inp).items()
    }


def _online_derive(s: dict[str, float]) -> dict[str, Any]:
    return {
        "online_h": round(s["online_s"] / 3600, 1),
        "span_h": round(s["span_s"] / 3600, 1),
        "online_rate": _rate(s["online_s"], s["span_s"]),
    }


def _coverage_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    return {
        vid: {
            "trips": _f(v["trips"]),
            "trips_covered": _f(v["trips_covered"]),
            "orders": _f(v["orders"]),
        }
        for vid, v in _sums_by_vehicle(inp).items()
    }


def _coverage_derive(s: dict[str, float]) -> dict[str, Any]:
    return {
        "trips_uncovered": int(s["trips"] - s["trips_covered"]),
        "coverage_rate": _rate(s["trips_covered"], s["trips"]),
    }


def _quota_base(inp: ReportInput) -> dict[str, dict[str, float]]:
    # keyed by organisation, not vehicle: build_report groups it by org directly
    out: dict[str, dict[str, float]] = {}
    for q in inp.quota:
        d = out.setdefault(str(q["org"]), {"authorised": 0.0, "actual": 0.0, "over": 0.0})
        d["authorised"] += _f(q.get("authorised"))
        d["actual"] += _f(q.get("actual"))
        d["over"] += _f(q.get("over"))
    return out


def _c(key: str, zh: str, en: str, t: str = "int") -> Column:
    return Column(key, zh, en, t)


_NAME = _c("name", "名称", "Name", "text")
REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "violations",
            "违规统计",
            "Violations",
            (
                _NAME,
                *(_c(k, KIND_NAMES.get(k, k), KIND_EN.get(k, k)) for k in KINDS),
                _c("critical", SEVERITY_NAMES["critical"], "Critical"),
                _c("total", "合计", "Total"),
            ),
            _violations_base,
        ),
        Report(
            "use",
            "车辆使用",
            "Vehicle use",
            (
                _NAME,
                _c("vehicles", "车辆数", "Vehicles"),
                _c("active", "出车车辆", "Vehicles used"),
                _c("idle_vehicles", "闲置车辆", "Idle vehicles"),
                _c("trips", "出行数", "Trips"),
                _c("km", "里程（公里）", "Distance (km)", "float"),
                _c("driving_h", "行驶时长（小时）", "Driving (h)", "float"),
                _c("idle_h", "怠速时长（小时）", "Idling (h)", "float"),
                _c("outside_h", "离开停车场（小时）", "Away from the lot (h)", "float"),
                _c("km_per_vehicle", "车均里程（公里）", "km per vehicle", "float"),
            ),
            _use_base,
            _use_derive,
        ),
        Report(
            "handling",
            "报警处置",
            "Alarm handling",
            (
                _NAME,
                _c("alarms", "报警数", "Alarms"),
                _c("acked", "已确认", "Acknowledged"),
                _c(
                    "ack_avg_min", "平均确认时长（分钟）", "Mean time to acknowledge (min)", "float"
                ),
                _c("acked_10min_rate", "10分钟内确认率", "Acknowledged within 10 min", "rate"),
                _c("handled", "已处理", "Handled"),
                _c("handle_avg_min", "平均处理时长（分钟）", "Mean time to handle (min)", "float"),
                _c("handled_10min_rate", "10分钟内处理率", "Handled within 10 min", "rate"),
            ),
            _handling_base,
            _handling_derive,
        ),
        Report(
            "online",
            "终端在线率",
            "Terminal online rate",
            (
                _NAME,
                _c("vehicles", "车辆数", "Vehicles"),
                _c("online_h", "在线时长（小时）", "Online (h)", "float"),
                _c("span_h", "统计时长（小时）", "Period (h)", "float"),
                _c("online_rate", "在线率", "Online rate", "rate"),
            ),
            _online_base,
            _online_derive,
        ),
        Report(
            "coverage",
            "派车单覆盖",
            "Order coverage",
            (
                _NAME,
                _c("trips", "出行数", "Trips"),
                _c("trips_covered", "有派车单", "With an order"),
                _c("trips_uncovered", "无派车单", "Without an order"),
                _c("coverage_rate", "覆盖率", "Coverage", "rate"),
                _c("orders", "派车单数", "Orders"),
            ),
            _coverage_base,
            _coverage_derive,
        ),
        Report(
            "quota",
            "编制情况",
            "Quota",
            (
                _NAME,
                _c("authorised", "编制数", "Authorised"),
                _c("actual", "实有数", "Actual"),
                _c("over", "超编数", "Over quota"),
            ),
            _quota_base,
            vehicle_level=False,
        ),
    )
}


def report_list() -> list[dict[str, str]]:
    return [
        {"name": r.name, "title_zh": r.title_zh, "title_en": r.title_en} for r in REPORTS.values()
    ]


def _finish(report: Report, sums: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for c in report.columns:
        if c.key in sums:
            row[c.key] = int(sums[c.key]) if c.type == "int" else round(sums[c.key], 3)
    row.update(report.derive(defaultdict(float, sums)))  # a row without data: zeros
    for c in report.columns:
        row.setdefault(c.key, 0 if c.type == "int" else None)
    return row


def _add(into: dict[str, float], d: Mapping[str, float]) -> None:
    for k, v in d.items():
        into[k] = into.get(k, 0.0) + v


def build_report(name: str, inp: ReportInput) -> dict[str, Any]:
    """The report's JSON (see CONTRACTS.md "Reports")."""
    report = REPORTS.get(name)
    if report is None:
        raise BadReport(f"no report {name!r}; one of {', '.join(REPORTS)}")
    if inp.level not in LEVELS:
        raise BadReport(f"level must be one of {', '.join(LEVELS)}")
    if inp.level == "vehicle" and not report.vehicle_level:
        raise BadReport(f"report {name!r} has no vehicle level")
    tree = inp.tree
    names = dict(zip(tree.ids, tree.names, strict=True))
    sub = tree.subtree(inp.org)
    base = report.base(inp)
    zero = {c.key: 0.0 for c in report.columns if c.type != "text"}
    if report is REPORTS["quota"]:
        vorg = {o: o for o in base}  # quota rows are per organisation
    else:
        vorg = {str(v["vehicle_id"]): str(v["org"]) for v in inp.vehicle_sums}
        for g in inp.alarm_groups:
            vorg.setdefault(str(g["vehicle_id"]), str(g["org"]))
    members = {k for k, o in vorg.items() if o in sub}
    rows: list[dict[str, Any]] = []
    totals: dict[str, float] = dict(zero)
    for k in members:
        _add(totals, base.get(k, {}))
    if report is REPORTS["use"]:
        totals["vehicles"] = totals.get("vehicles", 0.0)
    nxt = children_level(inp.level)
    if inp.level == "vehicle":
        plates = inp.plates or {}
        for vid in sorted(members, key=lambda v: (vorg[v], plates.get(v, v), v)):
            s = dict(zero)
            _add(s, base.get(vid, {}))
            row: dict[str, Any] = {"vehicle": vid, "org": vorg[vid]}
            row.update(_finish(report, s))
            row["name"] = plates.get(vid, vid)
            rows.append(row)
        nxt = None
    else:
        row_orgs, inner = _row_orgs(tree, inp.org, inp.level, frozenset(vorg[k] for k in members))
        owner = _owner_of_orgs(tree, row_orgs, inner)
        acc: dict[str, dict[str, float]] = {o: dict(zero) for o in row_orgs}
        for k in members:
            r = owner.get(vorg[k])
            if r is not None:
                _add(acc[r], base.get(k, {}))
        for o in row_orgs:
            row = {"org": o}
            row.update(_finish(report, acc[o]))
            row["name"] = names[o] + (
                OWN_SUFFIX.get(inp.lang, OWN_SUFFIX["zh"]) if o in inner else ""
            )
            if o in inner:
                row["own"] = True  # its own vehicles only; drill-down: level=vehicle&own=1
            rows.append(row)
        if nxt == "vehicle" and not report.vehicle_level:
            nxt = None
    out: dict[str, Any] = {
        "name": name,
        "title_zh": report.title_zh,
        "title_en": report.title_en,
        "from": inp.from_day,
        "to": inp.to_day,
        "org": inp.org,
        "org_name": names[inp.org],
        "level": inp.level,
        "columns": [c.json() for c in report.columns],
        "rows": rows,
        "totals": {k: v for k, v in _finish(report, totals).items() if k != "name"},
        "children_level": nxt,
    }
    if name == "use":
        out["idle_days"] = inp.idle_days
        plates = inp.plates or {}
        out["idle"] = [
            {
                "vehicle": str(v["vehicle_id"]),
                "name": plates.get(str(v["vehicle_id"]), str(v["vehicle_id"])),
                "org": str(v["org"]),
                "last_trip_day": v.get("last_trip_day"),
            }
            for v in inp.idle_sums
            if str(v["org"]) in sub
        ]
    if name == "violations":
        items = [dict(a) for a in inp.alarm_items if a.get("org") in sub]
        plates = inp.plates or {}
        for a in items:
            a["plate"] = plates.get(str(a["vehicle_id"]), "")
            a["kind_zh"] = KIND_NAMES.get(str(a["kind"]), str(a["kind"]))
        out["items"] = items[: inp.items_limit]
        out["items_truncated"] = len(items) > inp.items_limit
        out["by_month"] = _violations_by_month(inp, sub, tree, inp.level)
    return out


def _violations_by_month(
    inp: ReportInput, sub: frozenset[str], tree: OrgTree, level: str
) -> list[dict[str, Any]]:
    """unit × kind × month: ``[{org|vehicle, month, kind, n}]`` at the report's level."""
    owner: dict[str, str] = {}
    if level != "vehicle":
        holders = frozenset(str(g["org"]) for g in inp.alarm_groups) | frozenset(
            str(v["org"]) for v in inp.vehicle_sums
        )
        row_orgs, inner = _row_orgs(tree, inp.org, level, holders)
        owner = _owner_of_orgs(tree, row_orgs, inner)

    def key_of(g: Mapping[str, Any]) -> str | None:
        return str(g["vehicle_id"]) if level == "vehicle" else owner.get(str(g["org"]))

    acc: dict[tuple[str, str, str], int] = {}
    for g in inp.alarm_groups:
        if str(g["org"]) not in sub:
            continue
        k = key_of(g)
        if k is None:
            continue
        t = (k, str(g["month"]), str(g["kind"]))
        acc[t] = acc.get(t, 0) + int(g["n"])
    field = "vehicle" if level == "vehicle" else "org"
    return [{field: k, "month": m, "kind": kind, "n": n} for (k, m, kind), n in sorted(acc.items())]
