"""运行费用 routes: import supplier files, templates, mappings, the month's figures, anomalies.

An import validates every row (:func:`costs.validate.validate_rows`), stores the good
rows once per fingerprint and the bad ones with line and reason (``store.costs``),
then runs the checks against the tracks (:func:`costs.checks.run_checks`) for every
month the new rows fall in, stores the new anomalies and publishes them as closed
alarm episodes (severity ``warning``) — the desk, the notifications and the reports
see them like any other episode. Running the checks again adds nothing (the ids are
deterministic).

Scope: everyone sees and imports only their organisation subtree's vehicles; a row
of a vehicle outside it is a bad row. Operators import and run the checks; admins
set mappings, stations and budgets.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import secrets
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from costs.checks import (
    ANOMALY_KINDS,
    CheckConfig,
    CheckInput,
    baseline_rates,
    run_checks,
    usage_by_vehicle,
)
from costs.figures import month_total, summary
from costs.kinds import FIELDS, KIND_LABELS, KINDS, ColumnMapping, template_rows
from costs.validate import BadRow, validate_rows
from rules.events import AlarmEvent
from store.costs import CostStore
from store.orders_core import STATES_IN_FORCE
from web.api import (
    ApiState,
    audit,
    body_json,
    fail,
    publish_events,
    visible,
)
from web.auth import Principal
from web.routes import RouteTable
from web.vehicles_api import records_of, table_file

__all__ = ["costs_of", "month_total_of", "run_month_checks"]

ROUTES = RouteTable()
route = ROUTES.route

_MAX_ROWS = 20_000
_MONTH = re.compile(r"^(20[0-9][0-9])-(0[1-9]|1[0-2])$")  # 2000-01 .. 2099-12
_SUPPLIER = re.compile(r"^[\w.\-\u4e00-\u9fa5]{1,64}$")
_UPLOAD = {"description": "text/csv", "type": "string"}  # CSV or XLSX bytes (or multipart)
_DAY_MS = 86_400_000
_TYPE_WORDS = {
    "text": "文字",
    "number": "数字",
    "time": "时间, 例如 2026-11-03 08:15:00",
    "date": "日期, 例如 2026-11-03",
}


async def costs_of(st: ApiState) -> CostStore:
    """The cost store beside the record store (opened on first use, kept on the context)."""
    store = st.ctx.caches.cost_store
    records = records_of(st)
    if store is None or store.records is not records:
        store = CostStore(records, st.ctx.config.service.timezone)
        await store.open()
        st.ctx.caches.cost_store = store
    return store


def _tz(st: ApiState) -> str:
    return st.ctx.config.service.timezone


def _month(request: Request, st: ApiState) -> str:
    m = request.query_params.get("month")
    if not m:
        return dt.datetime.fromtimestamp(st.now() / 1000, ZoneInfo(_tz(st))).strftime("%Y-%m")
    if not _MONTH.match(m):
        raise fail(400, "month must be YYYY-MM between 2000-01 and 2099-12, for example 2026-11")
    return m


def month_bounds(month: str, tz: str) -> tuple[int, int]:
    y, m = int(month[:4]), int(month[5:])
    zone = ZoneInfo(tz)
    start = dt.datetime(y, m, 1, tzinfo=zone)
    end = dt.datetime(y + m // 12, m % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _kind(request: Request) -> str:
    kind = request.query_params.get("kind") or ""
    if kind not in KINDS:
        raise fail(400, f"kind must be one of {', '.join(KINDS)}")
    return kind


def _org(request: Request, st: ApiState, p: Principal) -> str:
    org = request.query_params.get("org") or p.org
    if org not in visible(st, p):
        raise fail(404, f"no organisation {org!r} in your scope")
    return org


async def _upload(request: Request) -> tuple[bytes, str]:
    """The file of a raw body, or of a multipart form's ``file`` field: (bytes, name)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        async with request.form() as form:  # closes the uploaded files' temporary files
            up = form.get("file")
            if up is None or isinstance(up, str):
                raise fail(400, "multipart body needs a file field named 'file'")
            return await up.read(), up.filename or ""
    return await request.body(), request.query_params.get("filename", "")


# -- import -------------------------------------------------------------------------------------


@route(
    "POST",
    "/api/costs/import",
    "operator",
    "Import a supplier file (CSV or XLSX; raw body or multipart 'file'): good rows stored once,"
    " bad rows reported and kept with line and reason; then the checks against the tracks",
    params=(
        ("kind", "string", "fuel|insurance|repair|toll|parking"),
        ("supplier", "string", "the supplier (its column mapping applies)"),
        ("filename", "string", "the file's name, for the import list (raw body)"),
    ),
    body=_UPLOAD,
    tag="costs",
)
async def cost_import(request: Request, st: ApiState, p: Principal) -> Any:
    kind = _kind(request)
    supplier = request.query_params.get("supplier") or "default"
    if not _SUPPLIER.match(supplier):
        raise fail(400, "supplier: letters, digits, Chinese, '.', '_' or '-', at most 64")
    content, filename = await _upload(request)
    if not content.strip():
        raise fail(400, "the file is empty")
    try:
        rows = table_file(content)
    except (csv.Error, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        # a broken XLSX (a zip without the workbook parts) or a CSV with NUL bytes
        raise fail(400, f"文件无法读取 (不是有效的 CSV 或 XLSX): {str(exc)[:120]}") from None
    if len(rows) > _MAX_ROWS:
        raise fail(413, f"最多 {_MAX_ROWS} 行")
    store = await costs_of(st)
    orgs = visible(st, p)
    vehicles = await records_of(st).vehicles()
    cols = await store.mapping(supplier, kind)
    mapping = ColumnMapping(supplier, kind, cols) if cols is not None else None
    try:
        plan = validate_rows(kind, rows, vehicles, mapping=mapping, now_ms=st.now(), tz=_tz(st))
    except ValueError as exc:
        raise fail(400, str(exc)) from None
    good = []
    for it in plan.items:
        if it.org in orgs:
            good.append(it)
        else:
            raw = next(
                (
                    {k: v for k, v in r.items() if k != "_line"}
                    for r in rows
                    if r["_line"] == it.line
                ),
                {},
            )
            plan.bad.append(BadRow(it.line, f"无权导入单位 {it.org} 的费用", raw))
    plan.bad.sort(key=lambda b: b.line)
    import_id = "i" + secrets.token_hex(6)
    new, dup = await store.add_import(
        import_id,
        kind=kind,
        supplier=supplier,
        items=good,
        bad=plan.bad,
        by=p.name,
        at=st.now(),
        filename=filename[:200],
    )
    found = 0
    if new:
        months = sorted({store_month(it.ts, _tz(st)) for it in new})
        found = len(await run_month_checks(st, months))
    await audit(
        st,
        p,
        "costs.import",
        import_id,
        kind=kind,
        supplier=supplier,
        imported=len(new),
        duplicates=dup,
        bad=len(plan.bad),
    )
    return {
        "id": import_id,
        "kind": kind,
        "supplier": supplier,
        "imported": len(new),
        "duplicates": dup,
        "bad": [b.as_dict() for b in plan.bad],
        "anomalies": found,
    }


def store_month(ts: int, tz: str) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, ZoneInfo(tz)).strftime("%Y-%m")


@route("GET", "/api/costs/imports", "operator", "The latest imports", tag="costs")
async def cost_imports(request: Request, st: ApiState, p: Principal) -> Any:
    return {"imports": await (await costs_of(st)).imports()}


@route(
    "GET",
    "/api/costs/imports/{id}",
    "operator",
    "One import's bad rows (line, reason, row)",
    tag="costs",
)
async def cost_import_bad(request: Request, st: ApiState, p: Principal) -> Any:
    iid = request.path_params["id"]
    store = await costs_of(st)
    found = next((i for i in await store.imports(limit=10_000) if i["id"] == iid), None)
    if found is None:
        raise fail(404, f"no import {iid!r}")
    return {**found, "bad_rows": await store.bad_rows(iid)}


# -- templates, mappings, stations, budgets -----------------------------------------------------


@route(
    "GET",
    "/api/costs/templates/{kind}",
    "viewer",
    "The documented template of a kind (Chinese headers, one example row) as XLSX or CSV",
    params=(("format", "string", "xlsx (default) or csv"),),
    tag="costs",
)
async def cost_template(request: Request, st: ApiState, p: Principal) -> Any:
    kind = request.path_params["kind"]
    if kind not in KINDS:
        raise fail(404, f"no kind {kind!r}; one of {', '.join(KINDS)}")
    headers, example = template_rows(kind)
    fmt = request.query_params.get("format", "xlsx")
    name = f"template-{kind}"
    if fmt == "csv":
        from web.export import to_csv

        return Response(
            to_csv(headers, [example]),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt != "xlsx":
        raise fail(400, "format must be xlsx or csv")
    notes = [f"{KIND_LABELS[kind]}导入模板: 第一行为列名, 第二行为示例 (导入前请删除)"] + [
        f"{f.header}: {'必填' if f.required else '选填'}, {_TYPE_WORDS[f.type]}"
        for f in FIELDS[kind]
    ]
    return _xlsx({KIND_LABELS[kind]: (headers, [example])}, name, notes=notes)


def _xlsx(
    sheets: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
    name: str,
    notes: Sequence[str] = (),
) -> Response:
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False})
    bold = wb.add_format({"bold": True})
    for title, (headers, rows) in sheets.items():
        ws = wb.add_worksheet(title[:31])
        ws.write_row(0, 0, list(headers), bold)
        ws.freeze_panes(1, 0)
        for i, r in enumerate(rows, start=1):
            for j, v in enumerate(r):
                if v is None:
                    continue
                if isinstance(v, str):
                    ws.write_string(i, j, v)
                else:
                    ws.write_number(i, j, float(v))
        for j, h in enumerate(headers):
            ws.set_column(j, j, max(10, min(40, 2 * len(str(h)) + 4)))
    if notes:
        ns = wb.add_worksheet("说明")
        for i, n in enumerate(notes):
            ns.write_string(i, 0, n)
    wb.close()
    return Response(
        buf.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
    )


@route("GET", "/api/costs/mappings", "operator", "Every supplier's column mappings", tag="costs")
async def cost_mappings(request: Request, st: ApiState, p: Principal) -> Any:
    return {
        "mappings": await (await costs_of(st)).mappings(),
        "fields": {
            k: [{"key": f.key, "header": f.header, "required": f.required} for f in fs]
            for k, fs in FIELDS.items()
        },
    }


@route(
    "PUT",
    "/api/costs/mappings/{supplier}/{kind}",
    "admin",
    'Set a supplier\'s column mapping for a kind: {"columns": {their header: our key}}',
    body={"type": "object", "properties": {"columns": {"type": "object"}}},
    tag="costs",
)
async def cost_mapping_put(request: Request, st: ApiState, p: Principal) -> Any:
    supplier, kind = request.path_params["supplier"], request.path_params["kind"]
    if kind not in KINDS:
        raise fail(404, f"no kind {kind!r}")
    if not _SUPPLIER.match(supplier):
        raise fail(400, "supplier: letters, digits, Chinese, '.', '_' or '-', at most 64")
    cols = (await body_json(request)).get("columns")
    if (
        not isinstance(cols, dict)
        or not cols
        or not all(isinstance(k, str) and isinstance(v, str) and k.strip() for k, v in cols.items())
    ):
        raise fail(400, "columns must be a non-empty object {their header: our field key}")
    m = ColumnMapping(supplier, kind, {k.strip(): v for k, v in cols.items()})
    try:
        m.check()
    except ValueError as exc:
        raise fail(400, str(exc)) from None
    await (await costs_of(st)).put_mapping(m.supplier, m.kind, m.columns)
    await audit(st, p, "costs.mapping", f"{supplier}/{kind}", columns=len(cols))
    return {"supplier": supplier, "kind": kind, "columns": dict(m.columns)}


@route(
    "PUT",
    "/api/costs/stations/{supplier}",
    "admin",
    'A fuel supplier\'s station list: {"stations": [{name, lat, lon}]} (WGS-84)',
    body={"type": "object", "properties": {"stations": {"type": "array"}}},
    tag="costs",
)
async def cost_stations_put(request: Request, st: ApiState, p: Principal) -> Any:
    supplier = request.path_params["supplier"]
    if not _SUPPLIER.match(supplier):
        raise fail(400, "supplier: letters, digits, Chinese, '.', '_' or '-', at most 64")
    items = (await body_json(request)).get("stations")
    if not isinstance(items, list) or len(items) > 10_000:
        raise fail(400, "stations must be a list of at most 10000 {name, lat, lon}")
    rows = []
    for n, s in enumerate(items):
        try:
            name, lat, lon = str(s["name"]).strip(), float(s["lat"]), float(s["lon"])
        except (KeyError, TypeError, ValueError):
            raise fail(400, f"stations[{n}] needs name, lat and lon") from None
        if (
            not name
            or "\x00" in name
            or len(name) > 200
            or not (-90 <= lat <= 90 and -180 <= lon <= 180)
        ):
            raise fail(400, f"stations[{n}]: empty or bad name, or coordinates out of range")
        rows.append((name, lat, lon))
    count = await (await costs_of(st)).put_stations(supplier, rows)
    await audit(st, p, "costs.stations", supplier, stations=count)
    return {"supplier": supplier, "stations": count}


@route(
    "PUT",
    "/api/costs/budgets/{org}",
    "admin",
    'An organisation\'s yearly cost budget: {"year": 2026, "amount": yuan}',
    body={
        "type": "object",
        "properties": {"year": {"type": "integer"}, "amount": {"type": "number"}},
    },
    tag="costs",
)
async def cost_budget_put(request: Request, st: ApiState, p: Principal) -> Any:
    org = request.path_params["org"]
    if org not in visible(st, p):
        raise fail(404, f"no organisation {org!r} in your scope")
    data = await body_json(request)
    year, amount = data.get("year"), data.get("amount")
    if not isinstance(year, int) or not 2000 <= year <= 2100:
        raise fail(400, "year must be an integer between 2000 and 2100")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount < 1e10:
        raise fail(400, "amount must be a positive number of yuan")
    await (await costs_of(st)).put_budget(org, year, float(amount))
    await audit(st, p, "costs.budget", org, year=year, amount=amount)
    return {"org": org, "year": year, "amount": float(amount)}


# -- the checks ----------------------------------------------------------------------------------


def _in_lot(st: ApiState, lots: dict[str, str]) -> Any:
    fences = st.ctx.fences
    if fences is None or not lots:
        return None

    def in_lot(vid: str, lat: float, lon: float) -> bool:
        lot = lots.get(vid)
        if lot is None:
            return False
        idx = fences.index
        if lot not in idx.ids:
            return False
        _, which = idx.membership(np.array([lon]), np.array([lat]))
        return any(idx.ids[int(f)] == lot for f in which)

    return in_lot


async def _tracks(st: ApiState, vids: Sequence[str], from_ms: int, to_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    history = st.ctx.history
    for vid in vids:
        if history is None:
            continue
        out[vid] = await history.track(vid, from_ms, to_ms)
    return out


_USAGE_TTL_MS = 300_000  # a month's km and trips are read from the tracks at most every 5 min


async def month_usage(st: ApiState, vids: Sequence[str], month: str) -> dict[str, dict[str, float]]:
    """GPS km and trips of each vehicle in ``month``, from its track; kept for
    :data:`_USAGE_TTL_MS` per vehicle and month (the page and the export ask again and
    again, and a month of a vehicle's positions is a few hundred thousand rows)."""
    cache = st.ctx.caches.cost_usage
    now = st.now()
    start, end = month_bounds(month, _tz(st))
    stale = [
        v for v in vids if (v, month) not in cache or now - cache[(v, month)][0] > _USAGE_TTL_MS
    ]
    if stale:
        fresh = usage_by_vehicle(await _tracks(st, stale, start, end), start, end)
        for v in stale:
            cache[(v, month)] = (now, fresh.get(v, {"km": 0.0, "trips": 0.0}))
    return {v: cache[(v, month)][1] for v in vids}


async def _orders(st: ApiState, start: int, end: int) -> list[tuple[str, int, int]]:
    """The orders in force with a vehicle overlapping ``[start, end)``, from the order
    store (#16): ``(vehicle, start_ms, end_ms)``."""
    if st.orders is None:
        return []
    found = await st.orders.select(states=STATES_IN_FORCE, from_ms=start, to_ms=end)
    return [(str(o["vehicle"]), int(o["start"]), int(o["end"])) for o in found if o.get("vehicle")]


def _workday(st: ApiState) -> Callable[[dt.date], bool]:
    """The rules' working calendar (调休 and holidays from its override file), given by the
    root (``AppContext.workday``) — the web does not import the calendar. Without one:
    Monday to Friday."""
    if st.ctx.workday is None:
        return lambda d: d.weekday() < 5
    return st.ctx.workday


async def run_month_checks(st: ApiState, months: Sequence[str]) -> list[dict[str, Any]]:
    """Run every check over the whole of ``months`` (all organisations: one card may serve
    cars of two); store and publish what is new. Returns the new anomalies."""
    store = await costs_of(st)
    tz = _tz(st)
    items = await store.items(months=list(months))
    if not items:
        return []
    records = {v.id: v for v in await records_of(st).vehicles()}
    start = min(month_bounds(m, tz)[0] for m in months) - _DAY_MS
    end = max(month_bounds(m, tz)[1] for m in months) + _DAY_MS
    vids = sorted({it["vehicle"] for it in items})
    tracks = await _tracks(st, vids, start, end)
    orders = await _orders(st, start, end)
    # The vehicle's own baseline: its refuels and GPS km of the three months before.
    first = min(months)
    y, m = int(first[:4]), int(first[5:])
    before = [f"{y + (m - k - 1) // 12}-{(m - k - 1) % 12 + 1:02d}" for k in (1, 2, 3)]
    earlier = [it for it in await store.items(months=before) if it["kind"] == "fuel"]
    b_from, b_to = month_bounds(before[-1], tz)[0], month_bounds(first, tz)[0]
    fuel_vids = sorted({it["vehicle"] for it in earlier})
    baseline = baseline_rates(earlier, await _tracks(st, fuel_vids, b_from, b_to), b_from, b_to)
    inp = CheckInput(
        vehicles=records,
        tracks=tracks,
        stations=await store.stations(),
        workday=_workday(st),
        orders=orders,
        tz=tz,
        in_lot=_in_lot(st, {v.id: v.lot for v in records.values() if v.lot}),
        baseline=baseline,
    )
    found = run_checks(items, inp, CheckConfig())
    known = {a["id"] for a in await store.anomalies(list(months))}
    new = [a for a in found if a["id"] not in known]
    await store.put_anomalies(new)
    events = []
    for a in new:
        i = st.registry.by_id(a["vehicle"])
        if i is None:
            continue
        events.append(
            AlarmEvent(
                id=a["id"],
                vehicle=i,
                vehicle_id=a["vehicle"],
                kind=a["kind"],
                action="close",
                started_at=a["ts"],
                ts=a["ts"],
                ended_at=a["ts"],
                lat=a["lat"],
                lon=a["lon"],
                severity="warning",
                detail=a["detail"],
            )
        )
    await publish_events(st, events)
    return new


@route(
    "POST",
    "/api/costs/check",
    "operator",
    "Run the checks against the tracks again for a month (adds only what is new)",
    params=(("month", "string", "YYYY-MM (default: this month)"),),
    tag="costs",
)
async def cost_check(request: Request, st: ApiState, p: Principal) -> Any:
    month = _month(request, st)
    new = await run_month_checks(st, [month])
    await audit(st, p, "costs.check", month, new=len(new))
    return {"month": month, "new": len(new)}


@route(
    "GET",
    "/api/costs/anomalies",
    "viewer",
    "The month's anomalies (each also an alarm episode) in your organisation subtree",
    params=(("month", "string", "YYYY-MM"), ("org", "string", "organisation subtree")),
    tag="costs",
)
async def cost_anomalies(request: Request, st: ApiState, p: Principal) -> Any:
    month = _month(request, st)
    orgs = st.registry.orgs.subtree(_org(request, st, p))
    rows = [a for a in await (await costs_of(st)).anomalies([month]) if a["org"] in orgs]
    return {"month": month, "kinds": dict(ANOMALY_KINDS), "anomalies": rows}


# -- figures ---------------------------------------------------------------------------------------


async def _figures(st: ApiState, org: str, month: str, level: str) -> dict[str, Any]:
    store = await costs_of(st)
    orgs = st.registry.orgs.subtree(org)
    items = [it for it in await store.items(months=[month]) if it["org"] in orgs]
    reg = st.registry
    vids = [v.id for v in reg.vehicles if v.org in orgs]
    usage = await month_usage(st, vids, month)
    for vid in vids:
        usage.setdefault(vid, {"km": 0.0, "trips": 0.0})
    vehicles = {v.id: (v.plate, v.org) for v in reg.vehicles if v.org in orgs}
    for it in items:
        vehicles.setdefault(it["vehicle"], (it["plate"], it["org"]))
    tree = reg.orgs
    parent_of = {
        oid: (tree.ids[int(pi)] if int(pi) >= 0 else None)
        for oid, pi in zip(tree.ids, tree.parent.tolist(), strict=True)
    }
    names = dict(zip(tree.ids, tree.names, strict=True))

    def unit_of(o: str) -> str:
        """The child of ``org`` that ``o`` belongs to (``org`` for its own vehicles)."""
        cur: str | None = o
        while cur is not None and cur != org and parent_of.get(cur) != org:
            cur = parent_of.get(cur)
        return org if cur is None else cur

    year = int(month[:4])
    budgets = await store.budgets(year)
    ytd_months = [f"{year}-{m:02d}" for m in range(1, int(month[5:]) + 1)]
    ytd = month_total(it for it in await store.items(months=ytd_months) if it["org"] in orgs)
    return summary(
        month=month,
        org=org,
        level=level,
        items=items,
        usage=usage,
        vehicles=vehicles,
        org_name=lambda o: names.get(o, o),
        unit_of=unit_of,
        budget=budgets.get(org),
        year_to_date=ytd,
    )


async def month_total_of(
    st: ApiState, org: str, month: str, *, upto_ms: int | None = None
) -> float | None:
    """The board's 运行费用 of ``org``'s subtree in ``month`` (for /api/board/summary):
    the items before ``upto_ms`` (the month so far). None when there is no cost data —
    no record store, or no item of the subtree in the month so far."""
    if st.ctx.vehicle_records is None:
        return None
    orgs = st.registry.orgs.subtree(org)
    items = [
        it
        for it in await (await costs_of(st)).items(months=[month], to_ms=upto_ms)
        if it["org"] in orgs
    ]
    return month_total(items) if items else None


@route(
    "GET",
    "/api/costs/summary",
    "viewer",
    "The month's costs: total, by kind, per km and per trip, budget and share used, rows per"
    " unit or vehicle",
    params=(
        ("org", "string", "organisation subtree (default: yours)"),
        ("month", "string", "YYYY-MM (default: this month)"),
        ("level", "string", "unit (default) or vehicle"),
    ),
    tag="costs",
)
async def cost_summary(request: Request, st: ApiState, p: Principal) -> Any:
    level = request.query_params.get("level", "unit")
    if level not in ("unit", "vehicle"):
        raise fail(400, "level must be unit or vehicle")
    return await _figures(st, _org(request, st, p), _month(request, st), level)


@route(
    "GET",
    "/api/costs/items",
    "viewer",
    "The month's cost rows in your subtree (optionally of one vehicle or kind)",
    params=(
        ("month", "string", "YYYY-MM"),
        ("org", "string", "organisation subtree"),
        ("vehicle", "string", "vehicle id"),
        ("kind", "string", "fuel|insurance|repair|toll|parking"),
    ),
    tag="costs",
)
async def cost_items(request: Request, st: ApiState, p: Principal) -> Any:
    month = _month(request, st)
    orgs = st.registry.orgs.subtree(_org(request, st, p))
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise fail(400, f"kind must be one of {', '.join(KINDS)}")
    items = await (await costs_of(st)).items(
        months=[month], vehicle=request.query_params.get("vehicle") or None, kind=kind
    )
    return {"month": month, "items": [it for it in items if it["org"] in orgs]}


@route(
    "GET",
    "/api/vehicles/{id}/costs",
    "viewer",
    "One vehicle's costs (一车一档): the month's total by kind, per km, its rows and anomalies",
    params=(("month", "string", "YYYY-MM (default: this month)"),),
    tag="costs",
)
async def vehicle_costs(request: Request, st: ApiState, p: Principal) -> Any:
    vid = request.path_params["id"]
    i = st.registry.by_id(vid)
    if i is None or st.registry.vehicles[i].org not in visible(st, p):
        raise fail(404, f"no vehicle {vid!r}")
    month = _month(request, st)
    store = await costs_of(st)
    items = await store.items(months=[month], vehicle=vid)
    usage = (await month_usage(st, [vid], month)).get(vid, {"km": 0.0, "trips": 0.0})
    total = month_total(items)
    from costs.figures import by_kind

    return {
        "vehicle": vid,
        "month": month,
        "total": total,
        "by_kind": by_kind(items),
        "km": round(usage["km"], 1),
        "trips": int(usage["trips"]),
        "per_km": round(total / usage["km"], 2) if usage["km"] > 0 else None,
        "per_trip": round(total / usage["trips"], 2) if usage["trips"] > 0 else None,
        "items": items,
        "anomalies": [a for a in await store.anomalies([month]) if a["vehicle"] == vid],
    }


@route(
    "GET",
    "/api/costs/export",
    "operator",
    "The month's costs as XLSX: by unit, by vehicle, every row, the anomalies",
    params=(("month", "string", "YYYY-MM"), ("org", "string", "organisation subtree")),
    tag="costs",
)
async def cost_export(request: Request, st: ApiState, p: Principal) -> Any:
    org, month = _org(request, st, p), _month(request, st)
    units = await _figures(st, org, month, "unit")
    cars = await _figures(st, org, month, "vehicle")
    orgs = st.registry.orgs.subtree(org)
    store = await costs_of(st)
    items = [it for it in await store.items(months=[month]) if it["org"] in orgs]
    anomalies = [a for a in await store.anomalies([month]) if a["org"] in orgs]
    zone = ZoneInfo(_tz(st))

    def local(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M")

    kinds_h = [KIND_LABELS[k] for k in KINDS]
    fig_h = ["合计(元)", *kinds_h, "GPS里程(公里)", "出车次数", "每公里(元)", "每趟(元)"]

    def fig(r: dict[str, Any]) -> list[Any]:
        return [
            r["total"],
            *[r["by_kind"][k] for k in KINDS],
            r["km"],
            r["trips"],
            r["per_km"],
            r["per_trip"],
        ]

    sheets = {
        "按单位": (["单位", *fig_h], [[r["name"], *fig(r)] for r in units["rows"]]),
        "按车辆": (
            ["车牌号", "单位", *fig_h],
            [[r["plate"], r["org"], *fig(r)] for r in cars["rows"]],
        ),
        "费用明细": (
            ["类别", "车牌号", "单位", "时间", "金额(元)", "供应商", "明细"],
            [
                [
                    KIND_LABELS[it["kind"]],
                    it["plate"],
                    it["org"],
                    local(it["ts"]),
                    it["amount"],
                    it["supplier"],
                    "; ".join(f"{k}={v}" for k, v in it["fields"].items()),
                ]
                for it in items
            ],
        ),
        "异常": (
            ["类型", "车牌号", "单位", "时间", "说明"],
            [
                [
                    ANOMALY_KINDS.get(a["kind"], a["kind"]),
                    a["detail"].get("plate") or a["vehicle"],
                    a["org"],
                    local(a["ts"]),
                    a["detail"].get("text", ""),
                ]
                for a in anomalies
            ],
        ),
    }
    budget = units["budget"]
    notes = [
        f"{month} 运行费用, 单位 {org}: 合计 {units['total']} 元",
        f"年度预算 {budget} 元, 已用 {units['year_to_date']} 元"
        + (f" ({units['budget_used_share'] * 100:.1f}%)" if units["budget_used_share"] else ""),
    ]
    await audit(st, p, "costs.export", month, org=org)
    return _xlsx(sheets, f"costs-{month}", notes=notes)
