"""Dispatch-order messages (派车单): a request waiting for its approver, the decision for its
requester, the dispatch. Pure: the web (:mod:`web.orders_api`) plans, the outbox delivers.

They travel the alarm channels and routes, but only routes that name an order kind
(``kinds = ["order_pending", ...]``) carry them — a route without ``kinds`` is an alarm
route and stays one. A route's ``orgs`` select by the order's organisation (with its
subtree), its quiet hours hold messages back like alarms (severity ``info``: no bypass).
The notice names who the message is for (``detail.to``: user names) so that a webhook
receiver can forward it to a person; e-mail and robot channels show it in the text.

Outbox keys are ``order:{org}:{id}|{kind}.{version}|{route}|{channel}``: each change of
an order is its own message, and queueing the same change twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from fleetwatch.registry import Registry
from notify.config import NotifyConfig
from notify.message import ORDER_KIND_NAMES, Notice
from notify.routing import OutboxEntry, quiet_until

__all__ = ["ORDER_KINDS", "order_entries", "order_link"]

ORDER_KINDS: tuple[str, ...] = tuple(ORDER_KIND_NAMES)


def order_link(public_url: str, org: str, order_id: str) -> str:
    return f"{public_url.rstrip('/')}/#/orders/{quote(order_id, safe='')}?org={quote(org)}"


def destination_text(dest: Any) -> str:
    if not isinstance(dest, dict):
        return ""
    parts = [str(dest.get("text") or "")]
    city = str(dest.get("city") or "")
    if city and city not in parts[0]:
        parts.append(city)
    return " ".join(p for p in parts if p)


def order_entries(
    config: NotifyConfig,
    registry: Registry,
    order: dict[str, Any],
    kind: str,
    *,
    to: Sequence[str],
    now: int,
    timezone: str,
    public_url: str,
    by: str = "",
    reason: str = "",
    step: str | None = None,
) -> list[OutboxEntry]:
    """The outbox entries telling ``to`` of ``kind`` (one of :data:`ORDER_KINDS`)."""
    if kind not in ORDER_KIND_NAMES:
        raise ValueError(f"unknown order message kind {kind!r}")
    org = str(order["org"])
    orgs = registry.orgs
    names = dict(zip(orgs.ids, orgs.names, strict=True))
    vid = order.get("vehicle")
    v = registry.by_id(vid) if vid else None
    notice = Notice(
        alarm_id=f"order:{org}:{order['id']}",
        purpose="order",
        route="",
        kind=kind,
        severity="info",
        vehicle_id=vid or "",
        plate=registry.plates[v] if v is not None else "",
        org=org,
        org_name=names.get(org, org),
        started_at=int(order["start"]),
        ended_at=int(order["end"]),
        ts=now,
        lat=0.0,
        lon=0.0,
        tz=timezone,
        link=order_link(public_url, org, str(order["id"])),
        detail={
            "order": order["id"],
            "state": order.get("state"),
            "requester": order.get("requester"),
            "purpose": order.get("purpose") or "",
            "destination": destination_text(order.get("destination")),
            "driver_name": order.get("driver_name"),
            "to": sorted(set(to)),
            "by": by,
            "reason": reason,
            "step": step,
        },
    )
    out: list[OutboxEntry] = []
    version = int(order.get("version") or 0)
    for route in config.routes:
        if route.escalation_only or kind not in route.kinds:
            continue
        if route.orgs and not any(org in orgs.subtree(o) for o in route.orgs if o in names):
            continue
        due = now
        end = quiet_until(now, route.quiet_hours, timezone)
        if end is not None:
            if route.quiet_action == "drop":
                continue
            due = end
        n = Notice.from_json({**notice.to_json(), "route": route.name})
        for ch in route.channels:
            out.append(
                OutboxEntry(
                    key=f"{notice.alarm_id}|{kind}.{version}|{route.name}|{ch}",
                    alarm_id=notice.alarm_id,
                    purpose="order",
                    route=route.name,
                    channel=ch,
                    created_at=now,
                    due_at=due,
                    notice=n,
                )
            )
    return out
