"""数据分析 routes: the reports and the board summary, from the daily rollup (#17).

``GET /api/reports`` lists the reports; ``GET /api/reports/{name}`` answers one as
JSON, CSV (the requested level) or XLSX (one sheet per level from the requested one
down); ``GET /api/board/summary`` gives the board its figures. All read the rollup
(:mod:`store.rollup`) only, and only inside the caller's organisation subtree.

The rollup is kept current by :func:`run_rollup` (started with the app): today so far
every ``REFRESH_S`` and each ended day once as closed; then, when ``[notify]`` has a
route named ``monthly_report``, the monthly report is sent on the 1st
(:mod:`reports.monthly`). A request that covers today
refreshes today first when its figures are older than ``STALE_S``, so the board, the
reports and their exports answer from the same rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from reports.daily import ORDER_STATES_IN_FORCE, RollupJob, local_day
from reports.files import report_csv, report_xlsx
from reports.monthly import MONTHLY_ROUTE, MonthlyJob
from reports.rollup import RollupParams
from reports.service import ReportQuery, board_summary, parse_day, report_json, report_levels
from reports.tables import BadReport, report_list
from store.history import day_bounds_ms
from store.rollup import REAL, RollupStore, rollup_store
from stream.feed import STATES
from web.api import ApiState, fail, today, visible
from web.auth import Principal
from web.costs_api import month_total_of
from web.routes import RouteTable

__all__ = ["REFRESH_S", "STALE_S", "reports_state", "run_rollup"]

ROUTES = RouteTable()
route = ROUTES.route

log = logging.getLogger(__name__)

REFRESH_S = 300.0  # the background refresh of today so far
STALE_S = 60.0  # a request covering today refreshes it when older than this
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class ReportsState:
    rollup: RollupStore | None = None
    job: RollupJob | None = None
    monthly: Any = None  # reports.monthly.MonthlyJob when the notify config has its route
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: bool = False


async def _orders(st: ApiState) -> list[dict[str, Any]]:
    """The orders in force, from the order store (#16) the order routes write; none while
    the app has not opened it."""
    if st.orders is None:
        return []
    return list(await st.orders.select(states=ORDER_STATES_IN_FORCE))


async def reports_state(st: ApiState) -> ReportsState:
    """The rollup store and its job for this app (made and opened on first use)."""
    s = st.ctx.caches.reports  # one rollup store and job per app
    if s is None:
        s = st.ctx.caches.reports = ReportsState()
    if s.opened:
        return s
    async with s.lock:
        if s.opened:
            return s
        if st.ctx.history is None:
            raise fail(503, "no history store: the reports need one")
        rollup = rollup_store(st.ctx.history)
        await rollup.open()

        async def context() -> tuple[Any, RollupStore, Any, Any, list[dict[str, Any]]]:
            fences = st.ctx.fences.index if st.ctx.fences is not None else None
            return st.ctx.history, rollup, st.registry, fences, await _orders(st)

        s.rollup = rollup
        cfg = st.ctx.config
        s.job = RollupJob(
            context,
            cfg.service.timezone,
            refresh_s=REFRESH_S,
            params=RollupParams.of(cfg.vehicle_state),
        )
        if any(r.name == MONTHLY_ROUTE for r in cfg.notify.routes):
            s.monthly = MonthlyJob(
                st.ctx.history,
                rollup,
                st.registry,
                cfg.service.timezone,
                cfg.notify,
                cfg.service.public_url,
            )
        s.opened = True
    return s


async def _fresh(st: ApiState, to_day: dt.date) -> RollupStore:
    s = await reports_state(st)
    assert s.rollup is not None and s.job is not None
    now = st.now()
    stale = now - s.job.last_today_ms >= STALE_S * 1000
    if (to_day >= local_day(now, s.job.tz) and stale) or s.job.closed_through is None:
        async with s.lock:
            if now - s.job.last_today_ms >= STALE_S * 1000 or s.job.closed_through is None:
                await s.job.tick(now, force=True)
    return s.rollup


async def run_rollup(st: ApiState, interval_s: float = 60.0) -> None:
    """Background: tick the rollup job every ``interval_s`` (the job decides what is due),
    then the monthly report. The first tick waits one interval: a request needing the
    rollup before then builds what it needs itself (:func:`_fresh`)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if st.ctx.history is not None:
                s = await reports_state(st)
                assert s.job is not None
                async with s.lock:
                    await s.job.tick(st.now())
                if s.monthly is not None:  # after the rollup closed the month's last day
                    await s.monthly.tick(st.now())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollup tick failed; next try in %.0f s", interval_s)


def _plates(st: ApiState) -> dict[str, str]:
    reg = st.registry
    return {vid: reg.plates[i] or vid for i, vid in enumerate(reg.ids)}


def _org(request: Request, st: ApiState, p: Principal) -> str:
    org = request.query_params.get("org") or p.org
    if org not in visible(st, p):
        raise fail(404, f"no organisation {org!r}")
    return org


async def _quota_rows(st: ApiState, org: str) -> list[dict[str, Any]]:
    from web.quota_api import board_quota

    sub = st.registry.orgs.subtree(org)
    q = await board_quota(st, sub)
    if q is None:
        return []
    return [{"org": o, **v} for o, v in q.items()]


def _query(request: Request, st: ApiState, p: Principal, name: str) -> ReportQuery:
    qp = request.query_params
    t = today(st)
    try:
        to_day = parse_day(qp.get("to"), "to", t)
        from_day = parse_day(qp.get("from"), "from", to_day.replace(day=1))
        idle = qp.get("idle_days") or "7"
        if not idle.isdigit():
            raise BadReport("idle_days must be a whole number of days")
    except BadReport as exc:
        raise fail(400, str(exc)) from None
    return ReportQuery(
        name=name,
        org=_org(request, st, p),
        from_day=from_day,
        to_day=to_day,
        level=qp.get("level") or None,
        idle_days=int(idle),
        kind=qp.get("kind") or None,
        scenario=qp.get("scenario") or REAL,
        own=qp.get("own") in ("1", "true"),
    )


@route("GET", "/api/reports", "viewer", "The reports (数据分析) there are", tag="reports")
async def reports_index(request: Request, st: ApiState, p: Principal) -> Any:
    return {"reports": report_list()}


@route(
    "GET",
    "/api/reports/{name}",
    "viewer",
    "One report over days, by level (city → county → unit → vehicle), as JSON, CSV or XLSX",
    params=(
        ("org", "string", "organisation (default: yours); rows are inside its subtree"),
        ("from", "string", "YYYY-MM-DD, default the first of the month of `to`"),
        ("to", "string", "YYYY-MM-DD, default today"),
        ("level", "string", "city | county | unit | vehicle (default: below org)"),
        ("format", "string", "json (default) | csv | xlsx"),
        ("lang", "string", "zh (default) | en: the file's headers"),
        ("idle_days", "integer", "use: idle = no trip in this many days up to `to` (7)"),
        ("kind", "string", "violations: only this kind in the list behind the counts"),
        ("scenario", "string", "real (default) or a what-if scenario's name"),
        ("own", "string", "1: only the vehicles booked on org itself (a 本级 row's drill-down)"),
    ),
    tag="reports",
)
async def report(request: Request, st: ApiState, p: Principal) -> Any:
    name = request.path_params["name"]
    fmt = request.query_params.get("format") or "json"
    if fmt not in ("json", "csv", "xlsx"):
        raise fail(400, "format must be json, csv or xlsx")
    lang = request.query_params.get("lang") or "zh"
    if lang not in ("zh", "en"):
        raise fail(400, "lang must be zh or en")
    from dataclasses import replace

    q = replace(_query(request, st, p, name), lang=lang)
    if name == "quota":
        q = replace(q, quota=await _quota_rows(st, q.org))
    rollup = await _fresh(st, q.to_day)
    tree, plates = st.registry.orgs, _plates(st)
    try:
        if fmt == "xlsx":
            levels = await report_levels(rollup, tree, plates, q)
            first = levels[0]
            notes = (
                [
                    f"{first['title_en']} {q.from_day} to {q.to_day}, {first['org_name']}",
                    "From the daily rollup: the same numbers as the board and the page.",
                ]
                if lang == "en"
                else [
                    f"{first['title_zh']} {q.from_day} 至 {q.to_day}，{first['org_name']}",
                    "数据来自每日汇总（rollup），与看板、页面上的数字一致。",
                ]
            )
            body = await asyncio.to_thread(report_xlsx, levels, lang=lang, notes=notes)  # type: ignore[arg-type]
            return _file(body, XLSX, name, q)
        out = await report_json(rollup, tree, plates, q)
    except BadReport as exc:
        raise fail(400, str(exc)) from None
    if fmt == "csv":
        return _file(report_csv(out, lang=lang), "text/csv; charset=utf-8", name, q)  # type: ignore[arg-type]
    return out


def _file(body: bytes, media: str, name: str, q: ReportQuery) -> Response:
    ext = "xlsx" if media == XLSX else "csv"
    fname = f"{name}-{q.org}-{q.from_day}-{q.to_day}.{ext}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{fname}"'}
    )


@route(
    "GET",
    "/api/board/summary",
    "viewer",
    "The board (一图可览): today's 编制/实有/在线/出行/报警, 7- and 30-day trends, attention",
    params=(
        ("org", "string", "organisation subtree (default: yours)"),
        ("date", "string", "YYYY-MM-DD, default today"),
    ),
    tag="reports",
)
async def summary(request: Request, st: ApiState, p: Principal) -> Any:
    org = _org(request, st, p)
    try:
        day = parse_day(request.query_params.get("date"), "date", today(st))
    except BadReport as exc:
        raise fail(400, str(exc)) from None
    rollup = await _fresh(st, day)
    out = await board_summary(rollup, st.registry.orgs, _plates(st), org, day)
    mask = st.registry.visible_mask(org)
    # 编制数 from the quota store only (the configuration's establishment seeds it at
    # start, store.records.load_fleet): the same numbers as the quota report.
    quota = await _quota_rows(st, org)
    authorised = [q["authorised"] for q in quota if q["authorised"] is not None]
    out["quota"] = sum(authorised) if authorised else None
    out["actual"] = sum(q["actual"] for q in quota) if quota else int(np.count_nonzero(mask))
    out["over"] = sum(q["over"] for q in quota) if quota else None
    if day == today(st):
        codes = st.ctx.feed.state_codes(st.now())
        out["online"] = int(np.count_nonzero(mask & (codes != STATES.index("offline"))))
    else:
        out["online"] = None  # the live count exists for today only; see online_rate
    _, day_end = day_bounds_ms(day, st.ctx.config.service.timezone)
    out["costs"] = await month_total_of(st, org, day.strftime("%Y-%m"), upto_ms=day_end)
    tz = ZoneInfo(st.ctx.config.service.timezone)
    out["updated_at"] = dt.datetime.fromtimestamp(st.now() / 1000, tz).isoformat()
    return out
