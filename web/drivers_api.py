"""驾驶员档案 routes: the driver records, their history, import and export.

Admins edit, operators read, scoped to the caller's organisation subtree and
audited — as the vehicle records (:mod:`web.vehicles_api`). A driver's
``vehicles`` are ids of vehicles the caller can see.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from store.records_core import DRIVER_LABELS, DriverRecord, RecordError, first_error
from web.api import JSON, ApiState, audit, body_json, fail, visible
from web.auth import Principal
from web.routes import RouteTable
from web.vehicles_api import (
    _MAX_IMPORT_ROWS,
    _answer,
    _read_upload,
    _Refused,
    export_response,
    keyed_row,
    records_of,
    table_file,
)

__all__: list[str] = []

ROUTES = RouteTable()
route = ROUTES.route

_BODY = {"type": "object", "description": "the driver record's fields (see DriverRecord)"}


def _check(st: ApiState, p: Principal, data: dict[str, Any]) -> DriverRecord:
    try:
        rec = DriverRecord.model_validate(data)
    except ValidationError as exc:
        err = first_error(exc, DRIVER_LABELS)
        raise _Refused(
            400, {"error": "invalid", "field": err.field, "message": err.message}
        ) from None
    if rec.org not in visible(st, p):
        raise _Refused(403, {"error": "forbidden", "message": f"无权管理单位 {rec.org} 的驾驶员"})
    for vid in rec.vehicles:
        i = st.registry.by_id(vid)
        if i is None or st.registry.org_of(i) not in visible(st, p):
            raise _Refused(
                400,
                {"error": "invalid", "field": "vehicles", "message": f"常驾车辆: 没有车辆 {vid}"},
            )
    return rec


async def _own(st: ApiState, p: Principal, did: str) -> DriverRecord:
    rec = await records_of(st).driver(did)
    if rec is None or rec.org not in visible(st, p):
        raise fail(404, f"no driver {did!r}")
    return rec


@route(
    "GET",
    "/api/drivers",
    "operator",
    "Driver records of your organisation subtree",
    params=(
        ("q", "string", "name, phone or licence contains"),
        ("status", "string", "在岗|停用|离职"),
    ),
    tag="drivers",
)
async def drivers_list(request: Request, st: ApiState, p: Principal) -> Any:
    orgs = visible(st, p)
    q = (request.query_params.get("q") or "").strip().upper()
    status = request.query_params.get("status")
    out = []
    for d in await records_of(st).drivers():
        if d.org not in orgs or (status and d.status != status):
            continue
        if q and not any(q in (x or "").upper() for x in (d.name, d.phone, d.licence_no, d.id)):
            continue
        out.append(d.model_dump(mode="json"))
    return {"drivers": out, "total": len(out)}


@route("POST", "/api/drivers", "admin", "Create a driver record", body=_BODY, tag="drivers")
@_answer
async def driver_create(request: Request, st: ApiState, p: Principal) -> Any:
    rec = _check(st, p, await body_json(request))
    store = records_of(st)
    if await store.driver(rec.id) is not None:
        raise _Refused(409, {"error": "exists", "message": f"驾驶员编号 {rec.id} 已存在"})
    await store.put_driver(rec, by=p.name, at=st.now(), action="create")
    await audit(st, p, "driver.create", rec.id)
    return JSON(rec.model_dump(mode="json"), status_code=201)


@route(
    "GET",
    "/api/drivers/export",
    "operator",
    "Driver records as XLSX or CSV, Chinese headers",
    params=(("format", "string", "xlsx (default) or csv"),),
    tag="drivers",
)
async def driver_export(request: Request, st: ApiState, p: Principal) -> Any:
    orgs = visible(st, p)
    rows = [d.model_dump(mode="json") for d in await records_of(st).drivers() if d.org in orgs]
    await audit(st, p, "driver.export", "drivers", rows=len(rows))
    return export_response(
        rows, DRIVER_LABELS, request.query_params.get("format", "xlsx"), "drivers"
    )


@route("GET", "/api/drivers/{id}", "operator", "One driver's record", tag="drivers")
async def driver_get(request: Request, st: ApiState, p: Principal) -> Any:
    return (await _own(st, p, request.path_params["id"])).model_dump(mode="json")


@route(
    "PATCH",
    "/api/drivers/{id}",
    "admin",
    "Change fields of a driver's record",
    body=_BODY,
    tag="drivers",
)
@_answer
async def driver_patch(request: Request, st: ApiState, p: Principal) -> Any:
    did = request.path_params["id"]
    old = await _own(st, p, did)
    data = await body_json(request)
    if "id" in data and data["id"] != did:
        raise _Refused(400, {"error": "invalid", "field": "id", "message": "驾驶员编号不能修改"})
    rec = _check(st, p, {**old.model_dump(mode="json"), **data})
    diff = await records_of(st).put_driver(rec, by=p.name, at=st.now())
    if diff:
        await audit(st, p, "driver.update", did, changes=list(diff))
    return {"driver": rec.model_dump(mode="json"), "changes": diff}


@route(
    "POST",
    "/api/drivers/{id}/dispose",
    "admin",
    "A driver leaves (离职); the record and its history stay",
    tag="drivers",
)
async def driver_dispose(request: Request, st: ApiState, p: Principal) -> Any:
    did = request.path_params["id"]
    old = await _own(st, p, did)
    rec = old.model_copy(update={"status": "离职"})
    await records_of(st).put_driver(rec, by=p.name, at=st.now(), action="dispose")
    await audit(st, p, "driver.dispose", did)
    return {"driver": rec.model_dump(mode="json")}


@route(
    "GET",
    "/api/drivers/{id}/history",
    "operator",
    "Every change of a driver's record",
    tag="drivers",
)
async def driver_history(request: Request, st: ApiState, p: Principal) -> Any:
    did = request.path_params["id"]
    await _own(st, p, did)
    return {"driver": did, "history": await records_of(st).history("driver", did)}


@route(
    "POST",
    "/api/drivers/import",
    "admin",
    "Import driver records from XLSX or CSV: bad rows reported with line and reason",
    tag="drivers",
)
async def driver_import(request: Request, st: ApiState, p: Principal) -> Any:
    rows = table_file(await _read_upload(request))
    if len(rows) > _MAX_IMPORT_ROWS:
        raise fail(413, f"最多 {_MAX_IMPORT_ROWS} 行")
    store = records_of(st)
    errors: list[dict[str, Any]] = []
    created = updated = 0
    for row in rows:
        try:
            data = keyed_row(row, DRIVER_LABELS)
            old = await store.driver(str(data.get("id", "")))
            rec = _check(st, p, {**(old.model_dump(mode="json") if old else {}), **data})
        except RecordError as err:
            errors.append({"line": row["_line"], "field": err.field, "reason": err.message})
            continue
        except _Refused as r:
            errors.append(
                {"line": row["_line"], "field": r.body.get("field"), "reason": r.body["message"]}
            )
            continue
        if await store.put_driver(rec, by=p.name, at=st.now(), action="import"):
            created += old is None
            updated += old is not None
    await audit(
        st, p, "driver.import", "drivers", created=created, updated=updated, errors=len(errors)
    )
    return {"created": created, "updated": updated, "errors": errors}
