"""Alarm episodes: the list and its export, acknowledgement and close by hand (audited).

An operator action goes to the engine through :mod:`web.bus` (locally and, with several
nodes, through the command bus to the node that owns the vehicle)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from rules.events import KINDS, AlarmEvent
from web import bus
from web.api import (
    ApiState,
    audit,
    body_json,
    fail,
    q_int,
    q_list,
    q_time,
    str_field,
    vehicle_index,
    visible,
)
from web.auth import Principal
from web.commands_api import confirm_on_ack
from web.routes import RouteTable

__all__ = ["ROUTES"]

ROUTES = RouteTable()
route = ROUTES.route


# -- alarms ------------------------------------------------------------------------------------


@route(
    "GET",
    "/api/alarms",
    "viewer",
    "Alarm history (报警记录), newest first, paged; format=csv|xlsx exports every page",
    params=(
        ("state", "string", "open|closed"),
        ("kind", "string", "comma-separated kinds"),
        ("severity", "string", "comma-separated: critical|warning|info"),
        ("org", "string", "organisation subtree"),
        ("vehicle", "string", "vehicle id"),
        ("plate", "string", "plate contains (case-insensitive)"),
        ("from", "string", "started at or after: epoch ms or ISO 8601 with offset"),
        ("to", "string", "started before: epoch ms or ISO 8601 with offset"),
        ("page", "integer", "page number, from 1"),
        ("page_size", "integer", "alarms per page, 1–500 (default 100)"),
        ("format", "string", "json (default) | csv | xlsx"),
        ("lang", "string", "zh|en: language of the export's headers and words"),
    ),
    tag="alarms",
)
async def alarms(request: Request, st: ApiState, p: Principal) -> Any:
    from store.history import AlarmQuery
    from web.geo_api import place_texts

    q = request.query_params
    state = q.get("state") or None
    if state not in (None, "open", "closed"):
        raise fail(400, "state must be open or closed")
    kinds = q_list(request, "kind")
    if kinds and not set(kinds) <= set(KINDS):
        raise fail(400, f"kind must be among {KINDS}")
    severities = q_list(request, "severity")
    if severities and not set(severities) <= {"critical", "warning", "info"}:
        raise fail(400, "severity must be among critical, warning, info")
    orgs = visible(st, p)
    org = q.get("org")
    if org:
        if org not in orgs:
            raise fail(404, f"no organisation {org!r}")
        orgs = st.registry.orgs.subtree(org)
    vid = q.get("vehicle") or None
    if vid:
        vehicle_index(st, p, vid)
    plate = (q.get("plate") or "").strip().upper() or None
    from_ms, to_ms = q_time(request, "from"), q_time(request, "to")
    page = q_int(request, "page", 1) or 1
    # ``limit`` is the older name of page_size (its old cap of 5,000 is gone with paging).
    size = q_int(request, "page_size", q_int(request, "limit", 100)) or 100
    if page < 1 or not 1 <= size <= 500:
        raise fail(400, "page must be >= 1 and page_size within 1..500")
    fmt = q.get("format") or "json"
    if fmt not in ("json", "csv", "xlsx"):
        raise fail(400, "format must be json, csv or xlsx")
    lang = q.get("lang") or st.ctx.config.web.language
    if lang not in ("zh", "en"):
        raise fail(400, "lang must be zh or en")
    query = AlarmQuery(
        state=state,
        kinds=kinds,
        severities=severities,
        orgs=sorted(orgs),
        vehicle_id=vid,
        plate=plate,
        from_ms=from_ms,
        to_ms=to_ms,
    )

    async def fetch(
        offset: int, limit: int, count: bool = True
    ) -> tuple[int, list[dict[str, Any]]]:
        if st.ctx.history is None:  # the live desk only: what the feed holds
            want = set(severities) if severities else None
            found = [
                a
                for a in st.ctx.feed.alarm_items()[::-1]
                if a["org"] in orgs
                and (state is None or a["state"] == state)
                and (not kinds or a["kind"] in kinds)
                and (want is None or a.get("severity") in want)
                and (vid is None or a["vehicle"] == vid)
                and (plate is None or plate in str(a.get("plate") or "").upper())
                and (from_ms is None or a["started_at"] >= from_ms)
                and (to_ms is None or a["started_at"] < to_ms)
            ]
            return len(found), found[offset : offset + limit]
        page_q = dataclasses.replace(query, offset=offset, limit=limit)
        total = await st.ctx.history.count_alarms(query) if count else -1
        return total, await st.ctx.history.alarms(page_q)

    def with_places(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        texts = place_texts(
            st,
            [float(a["lat"]) if a.get("lat") is not None else float("nan") for a in items],
            [float(a["lon"]) if a.get("lon") is not None else float("nan") for a in items],
            "en" if lang == "en" else "zh",
        )
        return [{**a, "place": t} for a, t in zip(items, texts, strict=True)]

    if fmt == "json":
        total, items = await fetch((page - 1) * size, size)
        return {"total": total, "page": page, "page_size": size, "alarms": with_places(items)}
    return await _export_alarms(st, fetch, with_places, fmt, "en" if lang == "en" else "zh")


async def _export_alarms(
    st: ApiState, fetch: Any, with_places: Any, fmt: str, lang: Any
) -> Response:
    """Every page of the query as one file, up to ``web.export_max_rows`` (said when cut)."""
    import asyncio

    from web.export import alarm_table, to_csv, to_xlsx

    cap = st.ctx.config.web.export_max_rows
    chunk = 5000
    total, rows = await fetch(0, min(chunk, cap))
    rows = list(rows)
    while len(rows) < min(total, cap):
        _, more = await fetch(len(rows), min(chunk, cap - len(rows)), count=False)
        if not more:
            break
        rows.extend(more)
    org_names = dict(zip(st.registry.orgs.ids, st.registry.orgs.names, strict=True))
    tz = st.ctx.config.service.timezone
    headers, table = alarm_table(with_places(rows), tz=tz, org_names=org_names, lang=lang)
    cut = total > len(rows)
    notes = []
    if cut:
        notes.append(
            f"共 {total} 条，导出上限 {cap} 条，仅导出最新的 {len(rows)} 条"
            if lang == "zh"
            else f"{total} alarms; the export holds at most {cap}: the newest {len(rows)} only"
        )
    stamp = dt.datetime.fromtimestamp(st.now() / 1000, ZoneInfo(tz)).strftime("%Y%m%d-%H%M")
    if fmt == "csv":
        body, media = to_csv(headers, table), "text/csv; charset=utf-8"
    else:
        body = await asyncio.to_thread(
            to_xlsx,
            headers,
            table,
            sheet="报警记录" if lang == "zh" else "Alarms",
            notes=notes,
            notes_sheet="说明" if lang == "zh" else "Notes",
        )
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="alarms-{stamp}.{fmt}"',
            "X-Export-Total": str(total),
            "X-Export-Rows": str(len(rows)),
            "X-Export-Truncated": "true" if cut else "false",
        },
    )


def _alarm_vehicle(st: ApiState, p: Principal, alarm_id: str) -> int:
    from fleet.events import ALARM_ID_RE

    if not ALARM_ID_RE.match(alarm_id):
        raise fail(404, f"no alarm {alarm_id!r}")
    vid = alarm_id.split(":", 1)[0]
    i = st.registry.by_id(vid)
    if i is None or st.registry.org_of(i) not in visible(st, p):
        raise fail(404, f"no alarm {alarm_id!r}")
    return int(i)


_ACK_BODY = {
    "type": "object",
    "properties": {
        "note": {"type": "string", "description": "how it was handled (处理情况)"},
        "handled": {"type": "boolean", "description": "true: handled and done; false: seen"},
    },
}


@route(
    "POST",
    "/api/alarms/{id}/ack",
    "operator",
    "Acknowledge an alarm and record how it was handled (audited)",
    body=_ACK_BODY,
    tag="alarms",
)
async def ack_alarm(request: Request, st: ApiState, p: Principal) -> Any:
    alarm_id = request.path_params["id"]
    i = _alarm_vehicle(st, p, alarm_id)
    data = await body_json(request)
    note = str_field(data, "note", required=False)
    handled = bool(data.get("handled", False))
    now = st.now()
    if st.ctx.history is not None and not await st.ctx.history.ack_alarm(
        alarm_id, p.name, note, handled, now, action="ack"
    ):
        raise fail(404, f"no alarm {alarm_id!r}")
    ack = _handled(st, alarm_id, p.name, note, now, "ack", handled)
    await audit(st, p, "alarm.handle" if handled else "alarm.ack", alarm_id, note=note)
    # with commands.confirm_on_ack: the 0x8203 that clears a terminal's latched alarm
    await confirm_on_ack(st, p, alarm_id, st.registry.ids[i])
    return {"ok": True, "ack": ack}


def _handled(
    st: ApiState, alarm_id: str, user: str, note: str, at: int, action: str, handled: bool
) -> dict[str, Any]:
    """One entry of the handling record (first ack stays first), to every node's desks."""
    entry = {"user": user, "at": at, "note": note, "action": action, "handled": handled}
    bus.acknowledge(st, alarm_id, entry)
    return entry


@route(
    "POST",
    "/api/alarms/{id}/close",
    "operator",
    "Close an open alarm episode by hand (audited)",
    body=_ACK_BODY,
    tag="alarms",
)
async def close_alarm(request: Request, st: ApiState, p: Principal) -> Any:
    alarm_id = request.path_params["id"]
    v = _alarm_vehicle(st, p, alarm_id)
    data = await body_json(request)
    note = str_field(data, "note", required=False)
    now = st.now()
    item = next((a for a in st.ctx.feed.alarm_items() if a["id"] == alarm_id), None)
    if item is None and st.ctx.history is not None:
        from store.history import AlarmQuery

        found = await st.ctx.history.alarms(AlarmQuery(vehicle_id=st.registry.ids[v], limit=5000))
        item = next((a for a in found if a["id"] == alarm_id), None)
    if item is None:
        raise fail(404, f"no alarm {alarm_id!r}")
    if item["state"] != "closed":
        # Not open in this engine (another node's vehicle, or before a restart): the
        # record and the desks are closed all the same, with these events.
        detail = {k: v for k, v in (item.get("detail") or {}).items()}
        detail.pop("severity", None)
        detail.pop("covered", None)
        fallback = [
            AlarmEvent(
                id=alarm_id,
                vehicle=v,
                vehicle_id=st.registry.ids[v],
                kind=item["kind"],
                action="close",
                started_at=int(item["started_at"]),
                ts=now,
                ended_at=now,
                lat=float(item["lat"]),
                lon=float(item["lon"]),
                severity=(item.get("detail") or {}).get("severity")
                or item.get("severity")
                or "warning",
                covered=bool((item.get("detail") or {}).get("covered") or item.get("covered")),
                detail={**detail, "closed_by_hand": True},
            )
        ]
        await bus.close_by_hand(st, alarm_id, now, p.name, note, fallback)
    if st.ctx.history is not None:
        await st.ctx.history.ack_alarm(alarm_id, p.name, note, True, now, action="close")
    _handled(st, alarm_id, p.name, note, now, "close", True)
    await audit(st, p, "alarm.close", alarm_id, note=note)
    return {"ok": True}
