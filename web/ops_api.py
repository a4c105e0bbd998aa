"""Operations routes: what FleetWatch could not use or could not deliver (死信).

``GET /api/dead-letters`` pages the history store's dead letters — input ingest refused
(source ``ingest``) and position rows the store refused (source ``store``, topic
:data:`store.history.STORE_DEAD_TOPIC`). ``GET /api/notify/dead`` lists notifications
that gave up after their last try and ``POST /api/notify/dead/{id}/retry`` queues one
again. All scoped to the caller's organisation subtree: a dead letter belongs to the
organisation of the vehicle carrying its terminal, a notification to that of its
alarm's vehicle; one with no known vehicle only an admin of a root organisation sees.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from store.history import STORE_DEAD_TOPIC, DeadLetterQuery
from web.api import ApiState, audit, fail, need, q_int, q_list, q_time, visible
from web.auth import Principal
from web.routes import RouteTable

__all__ = ["PAYLOAD_SHOW_BYTES", "payload_view"]

ROUTES = RouteTable()
route = ROUTES.route

#: At most this many payload bytes are shown (as text, or twice as many hex digits); the
#: ingest limit lets a payload be far bigger than a page should carry.
PAYLOAD_SHOW_BYTES = 2048
#: Dead notifications read to find the caller's (the outbox lists newest first).
NOTIFY_DEAD_SCAN = 5000
# JT/T 808-2019 §4.4.3 (table 2): the phone number is BCD, 6 bytes (12 digits) in the
# 2013 header and 10 bytes (20 digits) in the 2019 one, zero-padded on the left.
_PHONE_DIGITS = (12, 20)

SOURCES = ("ingest", "store")


def payload_view(payload: bytes, limit: int = PAYLOAD_SHOW_BYTES) -> dict[str, Any]:
    """``payload_text`` when the shown part is printable UTF-8, else ``payload_hex``.

    A payload cut at ``limit`` may end inside a UTF-8 sequence: that tail is dropped
    before deciding. ``payload_size`` is the whole payload's length, ``payload_truncated``
    whether less than all of it is shown.
    """
    shown = payload[:limit]
    out: dict[str, Any] = {
        "payload_size": len(payload),
        "payload_truncated": len(shown) < len(payload),
    }
    text = _printable(shown, cut=len(shown) < len(payload))
    if text is not None:
        out["payload_text"] = text
    else:
        out["payload_hex"] = shown.hex()
    return out


def _printable(raw: bytes, cut: bool) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # only a sequence broken by the cut itself is forgiven
        if not cut or exc.start < len(raw) - 3:
            return None
        text = raw[: exc.start].decode("utf-8")
    if all(c.isprintable() or c in "\n\r\t" for c in text):
        return text
    return None


def _root_admin(st: ApiState, p: Principal) -> bool:
    orgs = st.registry.orgs
    return p.may("admin") and int(orgs.parent[orgs.index(p.org)]) == -1


def _terminals(st: ApiState, p: Principal) -> list[str] | None:
    """Terminals whose dead letters the caller sees; None: all, unknown terminals too."""
    if _root_admin(st, p):
        return None
    reg = st.registry
    mask = reg.visible_mask(p.org)
    out: list[str] = []
    for i in mask.nonzero()[0].tolist():
        t = reg.terminals[i]
        out.append(t)
        if t.isdigit():  # as a JT/T 808 header writes it
            out.extend(t.zfill(n) for n in _PHONE_DIGITS if n > len(t))
    return out


@route(
    "GET",
    "/api/dead-letters",
    "operator",
    "Dead letters: input that could not be used, with the reason and the raw payload (死信)",
    params=(
        ("source", "string", "ingest|store (default: both)"),
        ("reason", "string", "reason codes, comma-separated"),
        ("from", "string", "received at or after: epoch ms or ISO 8601 with offset"),
        ("to", "string", "received before: epoch ms or ISO 8601 with offset"),
        ("page", "integer", "page number from 1 (default 1)"),
        ("page_size", "integer", "dead letters per page, 1–500 (default 100)"),
    ),
    tag="ops",
)
async def dead_letters(request: Request, st: ApiState, p: Principal) -> Any:
    history = need(st.ctx.history, "history store")
    source = request.query_params.get("source") or None
    if source is not None and source not in SOURCES:
        raise fail(400, f"source must be one of {', '.join(SOURCES)}")
    page = q_int(request, "page", 1) or 1
    size = q_int(request, "page_size", 100) or 100
    if page < 1 or not 1 <= size <= 500:
        raise fail(400, "page must be >= 1 and page_size within 1..500")
    query = DeadLetterQuery(
        source=source,
        reasons=q_list(request, "reason"),
        from_ms=q_time(request, "from"),
        to_ms=q_time(request, "to"),
        terminals=_terminals(st, p),
        limit=size,
        offset=(page - 1) * size,
    )
    total = await history.count_dead_letters(query)
    rows = await history.dead_letters(query)
    items = [
        {
            "id": r["id"],
            "at": r["at"],
            "source": "store" if r["topic"] == STORE_DEAD_TOPIC else "ingest",
            "reason": r["reason"],
            "detail": r["detail"],
            "topic": r["topic"],
            "terminal": r["terminal"],
            **payload_view(bytes(r["payload"])),
        }
        for r in rows
    ]
    return {"total": total, "page": page, "page_size": size, "items": items}


def _notice_visible(st: ApiState, p: Principal, alarm_id: str, orgs: frozenset[str]) -> bool:
    i = st.registry.by_id(alarm_id.split(":", 1)[0])
    if i is None:
        return _root_admin(st, p)
    return st.registry.org_of(i) in orgs


async def _dead_notices(st: ApiState, p: Principal) -> list[dict[str, Any]]:
    notifier = st.ctx.notifier
    if notifier is None:  # notifications are off ([notify] enabled = false): none died
        return []
    orgs = visible(st, p)
    rows = await notifier.list_dead(NOTIFY_DEAD_SCAN)
    return [r for r in rows if _notice_visible(st, p, str(r["alarm_id"]), orgs)]


@route(
    "GET",
    "/api/notify/dead",
    "operator",
    "Notifications that gave up after their last try (通知死信)",
    tag="ops",
)
async def notify_dead(request: Request, st: ApiState, p: Principal) -> Any:
    return {
        "items": [
            {
                "id": r["id"],
                "route": r["route"],
                "channel": r["channel"],
                "alarm_id": r["alarm_id"],
                "error": r["last_error"],
                "attempts": r["attempts"],
                "at": r["updated_at"],
            }
            for r in await _dead_notices(st, p)
        ]
    }


@route(
    "POST",
    "/api/notify/dead/{id}/retry",
    "operator",
    "Queue a dead notification again, its tries reset (audited)",
    tag="ops",
)
async def notify_retry(request: Request, st: ApiState, p: Principal) -> Any:
    try:
        row_id = int(request.path_params["id"])
    except ValueError:
        raise fail(404, f"no dead notification {request.path_params['id']!r}") from None
    row = next((r for r in await _dead_notices(st, p) if r["id"] == row_id), None)
    if row is None or not await need(st.ctx.notifier, "notify").retry(row_id):
        raise fail(404, f"no dead notification {row_id}")
    await audit(
        st, p, "notify.retry", str(row_id), alarm_id=row["alarm_id"], channel=row["channel"]
    )
    return {"ok": True}
