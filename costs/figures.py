"""The figures of 运行费用: per vehicle, per unit, per km and per trip, by month and kind — pure.

:func:`summary` takes a month's items (``store.costs`` dicts), each vehicle's GPS
km and trips that month, the organisation names and the budgets, and returns the
``GET /api/costs/summary`` body (CONTRACTS.md, "Costs"). The budget is per
organisation and **year** (yuan); ``budget_used_share`` is what the organisation's
subtree spent from January to the end of the month over that budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from costs.kinds import KINDS

__all__ = ["by_kind", "month_total", "summary"]


def by_kind(items: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    out = dict.fromkeys(KINDS, 0.0)
    for it in items:
        out[it["kind"]] = out.get(it["kind"], 0.0) + float(it["amount"])
    return {k: round(v, 2) for k, v in out.items()}


def month_total(items: Iterable[Mapping[str, Any]]) -> float:
    """The board's 运行费用: the sum of the items (yuan, to the fen)."""
    return round(sum(float(it["amount"]) for it in items), 2)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def _row(
    key: dict[str, Any], items: list[Mapping[str, Any]], km: float, trips: float
) -> dict[str, Any]:
    total = month_total(items)
    return {
        **key,
        "total": total,
        "by_kind": by_kind(items),
        "km": round(km, 1),
        "trips": int(trips),
        "per_km": _ratio(total, km),
        "per_trip": _ratio(total, trips),
        "items": len(items),
    }


def summary(
    *,
    month: str,
    org: str,
    level: str,
    items: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Mapping[str, float]],
    vehicles: Mapping[str, tuple[str, str]],
    org_name: Callable[[str], str],
    unit_of: Callable[[str], str],
    budget: float | None,
    year_to_date: float,
) -> dict[str, Any]:
    """The summary of ``org``'s subtree for ``month``.

    ``items``: the month's items of the subtree; ``usage``: vehicle → ``{"km", "trips"}``
    (every vehicle of the subtree, with or without costs); ``vehicles``: vehicle → (plate,
    org); ``unit_of(org)``: the row an organisation's costs fall in at ``level="unit"``
    (the child of ``org`` it belongs to, or ``org`` itself)."""
    km = sum(u["km"] for u in usage.values())
    trips = sum(u["trips"] for u in usage.values())
    body = _row({}, list(items), km, trips)
    rows: list[dict[str, Any]] = []
    if level == "vehicle":
        groups: dict[str, list[Mapping[str, Any]]] = {v: [] for v in usage}
        for it in items:
            groups.setdefault(it["vehicle"], []).append(it)
        for vid, its in groups.items():
            plate, vorg = vehicles.get(vid, (vid, ""))
            u = usage.get(vid, {"km": 0.0, "trips": 0.0})
            rows.append(
                _row(
                    {"vehicle": vid, "plate": plate, "org": vorg, "name": plate},
                    its,
                    u["km"],
                    u["trips"],
                )
            )
    else:
        units: dict[str, list[Mapping[str, Any]]] = {}
        ukm: dict[str, list[float]] = {}
        for vid, u in usage.items():
            unit = unit_of(vehicles.get(vid, ("", org))[1])
            units.setdefault(unit, [])
            acc = ukm.setdefault(unit, [0.0, 0.0])
            acc[0] += u["km"]
            acc[1] += u["trips"]
        for it in items:
            units.setdefault(unit_of(it["org"]), []).append(it)
        for unit, its in units.items():
            k, t = ukm.get(unit, [0.0, 0.0])
            rows.append(_row({"org": unit, "name": org_name(unit)}, its, k, t))
    rows.sort(key=lambda r: (-r["total"], r.get("org", ""), r.get("vehicle", "")))
    return {
        "month": month,
        "org": org,
        "level": level,
        **body,
        "budget": budget,
        "year_to_date": round(year_to_date, 2),
        "budget_used_share": None if not budget else round(year_to_date / budget, 4),
        "rows": rows,
    }
