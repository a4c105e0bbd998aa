"""车辆档案 routes: the vehicle records, their history, disposal, import and export.

A change is stored first (:mod:`store.records`, with its history row), then
applied to this node's registry — the engine, the feed, ingest and the stores
follow it before their next batch (``Registry.version``) — and published as
``{"op": "vehicles", "ids": [...]}`` so every other node reads the same records
from the shared database and applies them too (:func:`on_command`). Admins edit,
operators read; everything is scoped to the caller's organisation subtree and
audited.

Registration and the quota (编制): a vehicle counted in 实有数 (在用, 封存) is
refused with ``409 {"error": "over_quota", ...}`` when its organisation and class
are at their 编制数, until one of them is handed over for disposal
(``POST /api/vehicles/{id}/dispose``: 先移交处置、后注册登记). A registration may go
through the office's approval instead (注册登记审批): ``POST /api/vehicles/requests``
files it, another admin approves it.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import secrets
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

import web.api
from store.records import RecordConflict, RecordStore, vehicle_config
from store.records_core import (
    VEHICLE_LABELS,
    RecordError,
    VehicleRecord,
    first_error,
    registration_refusal,
)
from web.api import API, JSON, ApiState, audit, body_json, broadcast, fail, need, route, visible
from web.auth import Principal

__all__ = ["apply_vehicles", "on_command", "records_of", "resync_vehicles", "table_file"]

log = logging.getLogger(__name__)

_RECORD_BODY = {"type": "object", "description": "the vehicle record's fields (see VehicleRecord)"}
_MAX_IMPORT_BYTES = 5_000_000  # an office spreadsheet of a few thousand rows is well below
_MAX_IMPORT_ROWS = 20_000


def _lock(st: ApiState) -> asyncio.Lock:
    """One quota decision at a time per app (the lock lives in that app's event loop)."""
    lock: asyncio.Lock | None = getattr(st.ctx, "_records_lock", None)
    if lock is None:
        lock = asyncio.Lock()
        st.ctx._records_lock = lock  # type: ignore[attr-defined]
    return lock


def records_of(st: ApiState) -> RecordStore:
    return need(st.ctx.vehicle_records, "the record store")


def _front(fn: Any) -> Any:
    """Put the route just registered first, in place of web.api's route of the same method
    and path (this one extends it): ``/api/vehicles/export`` must come before web.api's
    ``/api/vehicles/{id}`` (first match wins), and one method of a path has one handler."""
    mine = API.pop()
    API[:] = [r for r in API if (r.method, r.path) != (mine.method, mine.path)]
    API.insert(0, mine)
    return fn


async def open_records(st: ApiState) -> RecordStore | None:
    """App start-up without a record store given (an app built without the service, as the
    tests do): open one beside the history the configuration names and load the fleet.
    Returns it for the app to close, None when the service gave one."""
    if st.ctx.vehicle_records is not None:
        return None
    from store.records import create_records, load_fleet

    store = create_records(st.ctx.config.store)
    await store.open()
    cfg = st.ctx.config
    await load_fleet(store, st.registry, cfg.vehicles, st.now(), cfg.web.establishment)
    st.ctx.vehicle_records = store
    return store


async def apply_vehicles(st: ApiState, records: list[VehicleRecord], *, publish: bool) -> None:
    """Make records live on this node (and, with ``publish``, on the others)."""
    reg = st.registry
    for r in records:
        reg.upsert(vehicle_config(r))
    history = st.ctx.history
    follow = getattr(history, "follow_registry", None) or getattr(
        getattr(history, "inner", None), "follow_registry", None
    )
    if callable(follow):
        try:
            await follow()
        except Exception as exc:  # the writes map them as well; do not fail the change
            log.warning("history will map the new vehicles at its next write: %s", exc)
    if publish:
        await broadcast(st, "vehicles", ids=[r.id for r in records])


async def on_command(st: ApiState, cmd: dict[str, Any]) -> None:
    """Another node changed these vehicles: read them from the shared database, apply."""
    ids = [str(i) for i in cmd.get("ids") or ()]
    found = await records_of(st).vehicles_by_id(ids)
    orgs = set(st.registry.orgs.ids)
    await apply_vehicles(st, [r for r in found if r.org in orgs], publish=False)


async def resync_vehicles(st: ApiState) -> int:
    """After a Redis outage (commands may have been missed): apply every record that
    differs from this node's registry. Returns how many."""
    if st.ctx.vehicle_records is None:
        return 0
    reg = st.registry
    orgs = set(reg.orgs.ids)
    stale = []
    for v in await records_of(st).registry_vehicles():
        i = reg.by_id(v.id)
        if v.org in orgs and (i is None or reg.vehicles[i] != v):
            stale.append(v)
    for v in stale:
        reg.upsert(v)
    return len(stale)


def _visible_record(st: ApiState, p: Principal, r: VehicleRecord | None, vid: str) -> VehicleRecord:
    if r is None or r.org not in visible(st, p):
        raise fail(404, f"no vehicle {vid!r}")
    return r


def _validate(data: dict[str, Any]) -> VehicleRecord:
    try:
        return VehicleRecord.model_validate(data)
    except ValidationError as exc:
        raise _bad(first_error(exc, VEHICLE_LABELS)) from None


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _bad(err: RecordError) -> _Refused:
    return _Refused(400, {"error": "invalid", "field": err.field, "message": err.message})


async def _store(
    st: ApiState, p: Principal, rec: VehicleRecord, action: str
) -> tuple[VehicleRecord | None, dict[str, list[Any]]]:
    """Check the quota and uniqueness, store, apply. Raises :class:`_Refused`."""
    if rec.org not in visible(st, p):
        raise _Refused(403, {"error": "forbidden", "message": f"无权管理单位 {rec.org} 的车辆"})
    if rec.org not in st.registry.orgs.ids:
        raise _Refused(400, {"error": "invalid", "field": "org", "message": "所属单位不存在"})
    store = records_of(st)
    async with _lock(st):
        previous = await store.vehicle(rec.id)
        refusal = registration_refusal(
            rec, await store.quota(), await store.vehicles(), previous=previous
        )
        if refusal is not None:
            raise _Refused(409, refusal)
        try:
            diff = await store.put_vehicle(rec, by=p.name, at=st.now(), action=action)
        except RecordConflict as exc:
            raise _Refused(409, {"error": "conflict", "message": str(exc)}) from None
    if diff:
        await apply_vehicles(st, [rec], publish=True)
        await audit(st, p, f"vehicle.{action}", rec.id, changes=list(diff))
    return previous, diff


def _answer(fn: Any) -> Any:
    async def handler(request: Request, st: ApiState, p: Principal) -> Any:
        try:
            return await fn(request, st, p)
        except _Refused as r:
            return JSON(r.body, status_code=r.status)

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


# -- list and detail: the live view (web.api) with the record's fields -----------------------


@_front
@route(
    "GET",
    "/api/vehicles",
    "viewer",
    "Vehicles with their latest position and state, with status and 编制类别 from the records",
    params=(
        ("q", "string", "plate or id contains"),
        ("org", "string", "organisation subtree"),
        ("state", "string", "moving|parked|offline|alarm"),
        ("status", "string", "在用|封存|待处置|已处置"),
    ),
    tag="vehicles",
)
async def vehicles_list(request: Request, st: ApiState, p: Principal) -> Any:
    out = await web.api.vehicles(request, st, p)
    reg = st.registry
    for item in out["vehicles"]:
        i = reg.by_id(item["vehicle"])
        if i is not None:
            v = reg.vehicles[i]
            item["status"] = v.status
            item["vehicle_class"] = v.vehicle_class
    want = request.query_params.get("status")
    if want:
        out["vehicles"] = [it for it in out["vehicles"] if it.get("status") == want]
    return out


@_front
@route(
    "GET",
    "/api/vehicles/{id}",
    "viewer",
    "One vehicle: last position, today's mileage and trips, open alarms, and its record",
    tag="vehicles",
)
async def vehicle_get(request: Request, st: ApiState, p: Principal) -> Any:
    out = await web.api.vehicle_detail(request, st, p)
    if st.ctx.vehicle_records is not None:
        rec = await records_of(st).vehicle(request.path_params["id"])
        out["record"] = rec.model_dump(mode="json") if rec is not None else None
    return out


# -- create, change, dispose --------------------------------------------------------------


@route(
    "POST",
    "/api/vehicles",
    "admin",
    "Register a vehicle (注册登记; quota checked)",
    body=_RECORD_BODY,
    tag="vehicles",
)
@_answer
async def vehicle_create(request: Request, st: ApiState, p: Principal) -> Any:
    rec = _validate(await body_json(request))
    if await records_of(st).vehicle(rec.id) is not None:
        raise _Refused(409, {"error": "exists", "message": f"车辆编号 {rec.id} 已存在"})
    await _store(st, p, rec, "create")
    return JSON(rec.model_dump(mode="json"), status_code=201)


@route(
    "PATCH",
    "/api/vehicles/{id}",
    "admin",
    "Change fields of a vehicle's record",
    body=_RECORD_BODY,
    tag="vehicles",
)
@_answer
async def vehicle_patch(request: Request, st: ApiState, p: Principal) -> Any:
    vid = request.path_params["id"]
    old = _visible_record(st, p, await records_of(st).vehicle(vid), vid)
    data = await body_json(request)
    if "id" in data and data["id"] != vid:
        raise _Refused(400, {"error": "invalid", "field": "id", "message": "车辆编号不能修改"})
    rec = _validate({**old.model_dump(mode="json"), **data})
    _, diff = await _store(st, p, rec, "update")
    return {"vehicle": rec.model_dump(mode="json"), "changes": diff}


_DISPOSE_BODY = {
    "type": "object",
    "properties": {"status": {"enum": ["待处置", "已处置"]}, "note": {"type": "string"}},
}


@route(
    "POST",
    "/api/vehicles/{id}/dispose",
    "admin",
    "Hand over for disposal (待处置) or record as disposed (已处置); frees its quota place",
    body=_DISPOSE_BODY,
    tag="vehicles",
)
@_answer
async def vehicle_dispose(request: Request, st: ApiState, p: Principal) -> Any:
    vid = request.path_params["id"]
    old = _visible_record(st, p, await records_of(st).vehicle(vid), vid)
    raw = await request.body()
    data = await body_json(request) if raw.strip() else {}
    status = data.get("status", "待处置")
    if status not in ("待处置", "已处置"):
        raise _Refused(
            400, {"error": "invalid", "field": "status", "message": "状态应为 待处置 或 已处置"}
        )
    rec = old.model_copy(update={"status": status})
    await _store(st, p, rec, "dispose")
    return {"vehicle": rec.model_dump(mode="json")}


@route(
    "GET",
    "/api/vehicles/{id}/history",
    "operator",
    "Every change of a vehicle's record: who, when, before, after",
    tag="vehicles",
)
async def vehicle_history(request: Request, st: ApiState, p: Principal) -> Any:
    vid = request.path_params["id"]
    _visible_record(st, p, await records_of(st).vehicle(vid), vid)
    return {"vehicle": vid, "history": await records_of(st).history("vehicle", vid)}


# -- registration approval (注册登记审批) -------------------------------------------------------


@route(
    "POST",
    "/api/vehicles/requests",
    "operator",
    "File a registration for the office's approval",
    body=_RECORD_BODY,
    tag="vehicles",
)
@_answer
async def request_create(request: Request, st: ApiState, p: Principal) -> Any:
    rec = _validate(await body_json(request))
    if rec.org not in visible(st, p):
        raise _Refused(403, {"error": "forbidden", "message": f"无权为单位 {rec.org} 登记车辆"})
    rid = "r" + secrets.token_hex(6)
    await records_of(st).add_request(rid, rec, by=p.name, at=st.now())
    await audit(st, p, "vehicle.request", rid, vehicle=rec.id)
    return JSON({"id": rid, "state": "pending"}, status_code=201)


@_front
@route("GET", "/api/vehicles/requests", "operator", "Registration requests", tag="vehicles")
async def request_list(request: Request, st: ApiState, p: Principal) -> Any:
    orgs = visible(st, p)
    items = await records_of(st).requests(request.query_params.get("state") or None)
    return {"requests": [r for r in items if r["vehicle"]["org"] in orgs]}


@route(
    "POST",
    "/api/vehicles/requests/{id}/{decision}",
    "admin",
    "Approve or reject a registration (by someone else)",
    tag="vehicles",
)
@_answer
async def request_decide(request: Request, st: ApiState, p: Principal) -> Any:
    rid, decision = request.path_params["id"], request.path_params["decision"]
    if decision not in ("approve", "reject"):
        raise fail(404, "no such route")
    store = records_of(st)
    found = next((r for r in await store.requests() if r["id"] == rid), None)
    if found is None or found["vehicle"]["org"] not in visible(st, p):
        raise fail(404, f"no request {rid!r}")
    if found["requested_by"] == p.name:
        raise _Refused(403, {"error": "same_person", "message": "申请人不能审批自己的申请"})
    if found["state"] != "pending":
        raise _Refused(409, {"error": "decided", "message": "该申请已处理"})
    rec = VehicleRecord.model_validate(found["vehicle"])
    if decision == "reject":
        await store.decide_request(rid, approve=False, by=p.name, at=st.now())
        await audit(st, p, "vehicle.request.reject", rid)
        return {"id": rid, "state": "rejected"}
    async with _lock(st):
        refusal = registration_refusal(rec, await store.quota(), await store.vehicles())
        if refusal is not None:
            raise _Refused(409, refusal)
        try:
            ok = await store.decide_request(rid, approve=True, by=p.name, at=st.now(), register=rec)
        except RecordConflict as exc:
            raise _Refused(409, {"error": "conflict", "message": str(exc)}) from None
    if not ok:
        raise _Refused(409, {"error": "decided", "message": "该申请已处理"})
    await apply_vehicles(st, [rec], publish=True)
    await audit(st, p, "vehicle.request.approve", rid, vehicle=rec.id)
    return {"id": rid, "state": "approved", "vehicle": rec.model_dump(mode="json")}


# -- import and export ------------------------------------------------------------------------


def table_file(content: bytes) -> list[dict[str, Any]]:
    """Rows of an uploaded XLSX (first sheet) or CSV (UTF-8, BOM allowed), header first.

    Each row is a dict by header, plus ``_line`` (its line in the file, 1 = header)."""
    if content[:2] == b"PK":  # a zip container: XLSX
        import openpyxl

        wb = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        try:
            rows = [list(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
        finally:
            wb.close()
    else:
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise fail(400, "文件不是 UTF-8 编码的 CSV, 也不是 XLSX") from None
        rows = [list(r) for r in csv.reader(io.StringIO(text))]
    if not rows:
        return []
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    out = []
    for n, r in enumerate(rows[1:], start=2):
        if all(c is None or str(c).strip() == "" for c in r):
            continue
        out.append(
            {"_line": n, **{header[k]: r[k] for k in range(min(len(header), len(r))) if header[k]}}
        )
    return out


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def keyed_row(row: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """A file row by field key: headers may be the keys or their Chinese labels."""
    by_label = {lab: key for key, lab in labels.items()}
    out: dict[str, Any] = {}
    for h, v in row.items():
        if h == "_line":
            continue
        key = h if h in labels else by_label.get(h)
        if key is None:
            raise RecordError(h, f"未知的列 {h!r}")
        val = _cell(v)
        if val is None:
            continue
        if key in ("terminal", "plate", "id", "vin", "engine_no", "fuel_card") and not isinstance(
            val, str
        ):
            val = str(val)
        if key in ("photos", "vehicles") and isinstance(val, str):
            val = [x.strip() for x in val.replace("、", ",").split(",") if x.strip()]
        out[key] = val
    return out


async def _read_upload(request: Request) -> bytes:
    body = await request.body()
    if len(body) > _MAX_IMPORT_BYTES:
        raise fail(413, f"文件太大: 最多 {_MAX_IMPORT_BYTES // 1_000_000} MB")
    return body


@route(
    "POST",
    "/api/vehicles/import",
    "admin",
    "Import vehicle records from XLSX or CSV (the body is the file): bad rows reported"
    " with line and reason, good ones stored",
    tag="vehicles",
)
async def vehicle_import(request: Request, st: ApiState, p: Principal) -> Any:
    rows = table_file(await _read_upload(request))
    if len(rows) > _MAX_IMPORT_ROWS:
        raise fail(413, f"最多 {_MAX_IMPORT_ROWS} 行")
    errors: list[dict[str, Any]] = []
    created = updated = unchanged = 0
    store = records_of(st)
    seen: set[str] = set()
    for row in rows:
        line = row["_line"]
        try:
            data = keyed_row(row, VEHICLE_LABELS)
            old = await store.vehicle(str(data.get("id", "")))
            if old is not None:
                data = {**old.model_dump(mode="json"), **data}
            try:
                rec = VehicleRecord.model_validate(data)
            except ValidationError as exc:
                raise first_error(exc, VEHICLE_LABELS) from None
            if rec.id in seen:
                raise RecordError("id", f"车辆编号 {rec.id} 在文件中重复")
            seen.add(rec.id)
            _, diff = await _store(st, p, rec, "import")
        except RecordError as err:
            errors.append({"line": line, "field": err.field, "reason": err.message})
            continue
        except _Refused as r:
            errors.append(
                {
                    "line": line,
                    "field": r.body.get("field"),
                    "reason": r.body.get("message", r.body.get("error")),
                }
            )
            continue
        if old is None:
            created += 1
        elif diff:
            updated += 1
        else:
            unchanged += 1
    await audit(
        st, p, "vehicle.import", "vehicles", created=created, updated=updated, errors=len(errors)
    )
    return {"created": created, "updated": updated, "unchanged": unchanged, "errors": errors}


def export_response(
    rows: list[dict[str, Any]], labels: dict[str, str], fmt: str, name: str
) -> Response:
    """Rows as XLSX (xlsxwriter) or CSV (UTF-8 with BOM, so that Excel reads the Chinese)."""
    keys = list(labels)
    header = [labels[k] for k in keys]

    def cell(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return "、".join(str(x) for x in v)
        return "" if v is None else v

    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        for r in rows:
            w.writerow([cell(r.get(k)) for k in keys])
        return Response(
            ("\ufeff" + buf.getvalue()).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt != "xlsx":
        raise fail(400, "format must be xlsx or csv")
    import xlsxwriter

    out = io.BytesIO()
    wb = xlsxwriter.Workbook(out, {"in_memory": True})
    ws = wb.add_worksheet(name)
    bold = wb.add_format({"bold": True})
    ws.write_row(0, 0, header, bold)
    for n, r in enumerate(rows, start=1):
        ws.write_row(n, 0, [cell(r.get(k)) for k in keys])
    ws.freeze_panes(1, 0)
    wb.close()
    return Response(
        out.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
    )


@_front
@route(
    "GET",
    "/api/vehicles/export",
    "operator",
    "The vehicle records of your organisation subtree as XLSX or CSV, Chinese headers",
    params=(("format", "string", "xlsx (default) or csv"),),
    tag="vehicles",
)
async def vehicle_export(request: Request, st: ApiState, p: Principal) -> Any:
    orgs = visible(st, p)
    rows = [r.model_dump(mode="json") for r in await records_of(st).vehicles() if r.org in orgs]
    await audit(st, p, "vehicle.export", "vehicles", rows=len(rows))
    return export_response(
        rows, VEHICLE_LABELS, request.query_params.get("format", "xlsx"), "vehicles"
    )
