"""编制 routes: the quota per organisation and vehicle class, and the board's figures.

``GET /api/quota`` lists 编制数 (authorised), 实有数 (actual: vehicles 在用 and
封存) and 超编 (over) per organisation and class of the caller's subtree;
``PUT /api/quota/{org}`` (admin, audited) replaces an organisation's quota.
:func:`board_quota` gives ``/api/stats`` its figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from store.records_core import VEHICLE_CLASSES, QuotaRow, quota_table
from web.api import ApiState, audit, body_json, fail, visible
from web.auth import Principal
from web.routes import RouteTable
from web.vehicles_api import records_of

__all__ = ["board_quota"]

ROUTES = RouteTable()
route = ROUTES.route

_BODY = {
    "type": "object",
    "required": ["by_class"],
    "properties": {
        "by_class": {
            "type": "object",
            "description": "编制类别 → 编制数",
            "additionalProperties": {"type": "integer", "minimum": 0},
        }
    },
}


async def _rows(st: ApiState, orgs: Iterable[str]) -> list[QuotaRow]:
    # 实有数 from the registry: what is tracked, including configured vehicles not on file.
    wanted = set(orgs)
    rows = quota_table(await records_of(st).quota(), st.registry.vehicles)
    return [r for r in rows if r.org in wanted]


def _row(r: QuotaRow) -> dict[str, Any]:
    return {
        "org": r.org,
        "vehicle_class": r.vehicle_class,
        "authorised": r.authorised,
        "actual": r.actual,
        "over": r.over,
    }


@route(
    "GET", "/api/quota", "viewer", "编制数 / 实有数 / 超编 per organisation and class", tag="quota"
)
async def quota_list(request: Request, st: ApiState, p: Principal) -> Any:
    return {
        "classes": list(VEHICLE_CLASSES),
        "quota": [_row(r) for r in await _rows(st, visible(st, p))],
    }


@route(
    "PUT",
    "/api/quota/{org}",
    "admin",
    "Replace an organisation's quota (编制数 by class)",
    body=_BODY,
    tag="quota",
)
async def quota_put(request: Request, st: ApiState, p: Principal) -> Any:
    org = request.path_params["org"]
    if org not in visible(st, p):
        raise fail(404, f"no organisation {org!r}")
    data = await body_json(request)
    by_class = data.get("by_class")
    if not isinstance(by_class, dict):
        raise fail(400, "by_class: 应为 {编制类别: 编制数}")
    for cls, n in by_class.items():
        if cls not in VEHICLE_CLASSES:
            raise fail(400, f"编制类别 {cls!r} 不存在; 应为: " + "、".join(VEHICLE_CLASSES))
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > 100_000:
            raise fail(400, f"{cls} 的编制数应为不小于 0 的整数")
    await records_of(st).set_quota(org, dict(by_class), by=p.name, at=st.now())
    await audit(st, p, "quota.update", org, by_class=by_class)
    return {"org": org, "quota": [_row(r) for r in await _rows(st, [org])]}


async def board_quota(st: ApiState, sub: Iterable[str]) -> dict[str, dict[str, Any]] | None:
    """Per organisation of ``sub``: ``authorised`` (编制数; None where no quota is set),
    ``actual`` (实有数), ``over`` (超编, summed per class — a surplus in one class is not
    offset by room in another). None without a record store."""
    if st.ctx.vehicle_records is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for r in await _rows(st, sub):
        o = out.setdefault(r.org, {"authorised": None, "actual": 0, "over": 0})
        if r.authorised is not None:
            o["authorised"] = (o["authorised"] or 0) + r.authorised
        o["actual"] += r.actual
        o["over"] += r.over
    return out
