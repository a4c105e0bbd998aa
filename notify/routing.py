"""Routing, quiet hours, storms and back-off: the pure core of notifications.

:class:`Router` turns alarm events into outbox entries when they are stored
(one per route and channel, with the time each becomes due); :class:`StormGate`
decides, when they are delivered, which go out alone and which are folded into
one digest. Neither reads a clock: times come from the events and from ``now``.

What becomes a message::

    event action   message                      when due
    open           "open" on every matching route   event time (or end of quiet hours)
                   "escalate" on its escalate_to    event time + escalate_after_s
    close          "close" if the route has on_close  event time (or end of quiet hours)
    update         nothing (never one message per position)
    back-fill      nothing (recorded, never a live alarm)

An outbox key is ``{alarm_id}|{purpose}|{route}|{channel}``: queueing the same
event twice (a batch redelivered after a crash) queues nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from fleet.errors import ConfigError
from fleet.events import AlarmEvent
from fleet.registry import Registry
from geofence.boundaries import districts
from geofence.config import PlaceConfig
from geofence.places import Gazetteer
from notify.config import SEVERITIES, NotifyConfig, RouteConfig
from notify.message import Notice, alarm_link

__all__ = [
    "OutboxEntry",
    "Router",
    "StormDecision",
    "StormGate",
    "backoff_ms",
    "delivery_key",
    "digest_key",
    "quiet_until",
]

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message to queue: an alarm event for one channel of one route."""

    key: str
    alarm_id: str
    purpose: str  # open | close | escalate
    route: str
    channel: str
    created_at: int  # event time, epoch ms
    due_at: int  # not delivered before, epoch ms
    notice: Notice


def delivery_key(outbox_key: str) -> str:
    """The idempotency key sent to receivers: ASCII, fixed length, stable for a row."""
    return "fw-" + hashlib.sha256(outbox_key.encode()).hexdigest()[:40]


def digest_key(outbox_keys: Iterable[str]) -> str:
    """The idempotency key of a digest: fixed by the rows it stands for."""
    h = hashlib.sha256("\n".join(sorted(outbox_keys)).encode()).hexdigest()
    return "fw-digest-" + h[:34]


def _minutes(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def quiet_until(ts_ms: int, window: str | None, tz: str) -> int | None:
    """End of the quiet window containing ``ts_ms`` (epoch ms), or None when not quiet.

    ``window`` is local ``"HH:MM-HH:MM"``; ``"22:00-07:00"`` crosses midnight.
    """
    if window is None:
        return None
    a_s, b_s = window.split("-")
    a, b = _minutes(a_s), _minutes(b_s)
    zone = ZoneInfo(tz)
    local = dt.datetime.fromtimestamp(ts_ms / 1000, zone)
    mod = local.hour * 60 + local.minute
    if a < b:
        inside = a <= mod < b
        end_day = local.date()
    else:
        inside = mod >= a or mod < b
        end_day = local.date() + dt.timedelta(days=1) if mod >= a else local.date()
    if not inside:
        return None
    # Aware datetime + timedelta is wall-clock arithmetic in the zone.
    end = dt.datetime.combine(end_day, dt.time(), zone) + dt.timedelta(minutes=b)
    return int(end.timestamp() * 1000)


def backoff_ms(attempt: int, initial_s: float, max_s: float, u: float) -> int:
    """Delay before retry ``attempt`` (1 = first retry): exponential, capped, equal jitter.

    ``u`` is a uniform random number in [0, 1): the delay lies in [d/2, d) where
    d = min(max_s, initial_s * 2**(attempt-1)), so retries of many rows spread out
    but never come sooner than half the nominal delay.
    """
    d = min(max_s, initial_s * 2.0 ** max(0, min(attempt - 1, 60)))
    return int(1000 * (d / 2 + u * d / 2))


class Router:
    """Which routes and channels an alarm event goes to. Built once from the configuration."""

    def __init__(
        self,
        config: NotifyConfig,
        registry: Registry,
        *,
        timezone: str = "Asia/Shanghai",
        public_url: str = "http://127.0.0.1:8080",
        source: str = "<memory>",
        fences: Callable[[], Any] | None = None,
        places: PlaceConfig | None = None,
    ) -> None:
        """``fences()`` gives the fence index in force (``geofence.index.LiveFences.index``,
        or None): each message names its place by those fences and the city's districts."""
        self.config = config
        self.registry = registry
        self.timezone = timezone
        self.public_url = public_url
        self.fences = fences
        self.places = places or PlaceConfig()
        self._gazetteer: tuple[Any, Gazetteer] | None = None  # (fence index, its gazetteer)
        self._org_names = dict(zip(registry.orgs.ids, registry.orgs.names, strict=True))
        self._orgs: dict[str, frozenset[str] | None] = {}
        for i, r in enumerate(config.routes):
            allowed: set[str] = set()
            for j, org in enumerate(r.orgs):
                if org not in self._org_names:
                    raise ConfigError(
                        source,
                        f"notify.routes[{i}].orgs[{j}]",
                        f"unknown organisation {org!r}",
                        "use the id of an organisation listed under [[orgs]]",
                    )
                allowed |= registry.orgs.subtree(org)
            self._orgs[r.name] = frozenset(allowed) if r.orgs else None

    def matches(self, route: RouteConfig, org: str, kind: str, severity: str) -> bool:
        orgs = self._orgs[route.name]
        if orgs is not None and org not in orgs:
            return False
        if route.kinds and kind not in route.kinds:
            return False
        return _rank(severity) >= _rank(route.min_severity)

    def _due(self, route: RouteConfig, ts: int, severity: str) -> int | None:
        """When a message on ``route`` for an event at ``ts`` may go; None: dropped."""
        bypass = route.quiet_bypass_severity
        if bypass is not None and _rank(severity) >= _rank(bypass):
            return ts
        end = quiet_until(ts, route.quiet_hours, self.timezone)
        if end is None:
            return ts
        return end if route.quiet_action == "defer" else None

    def _vehicle(self, e: AlarmEvent) -> int:
        """The event's registry index, checked against its id (-1: no longer registered)."""
        reg = self.registry
        if 0 <= e.vehicle < len(reg) and reg.ids[e.vehicle] == e.vehicle_id:
            return e.vehicle
        found = reg.by_id(e.vehicle_id)
        return found if found is not None else -1

    def gazetteer(self) -> Gazetteer:
        """Districts and the fences in force now (rebuilt when the fence set changes)."""
        index = self.fences() if self.fences is not None else None
        if self._gazetteer is None or self._gazetteer[0] is not index:
            fences = index.fences if index is not None else ()
            self._gazetteer = (index, Gazetteer.build(districts(), fences, self.places))
        return self._gazetteer[1]

    def place_texts(self, events: Sequence[AlarmEvent]) -> dict[str, str]:
        """The place name of each event's point, by event id (one lookup for all)."""
        lon = np.array([e.lon for e in events], dtype=np.float64)
        lat = np.array([e.lat for e in events], dtype=np.float64)
        idx = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        if not idx.size:
            return {}
        gaz = self.gazetteer()
        found = gaz.lookup(lon[idx], lat[idx])
        return {events[i].id: gaz.text(found, j) for j, i in enumerate(idx.tolist())}

    def notice(self, e: AlarmEvent, purpose: str, route: str, place: str = "") -> Notice:
        reg = self.registry
        v = self._vehicle(e)
        org = reg.org_of(v) if v >= 0 else ""
        return Notice(
            alarm_id=e.id,
            purpose=purpose,  # type: ignore[arg-type]
            route=route,
            kind=e.kind,
            severity=e.severity,
            vehicle_id=e.vehicle_id,
            plate=reg.plates[v] if v >= 0 else e.vehicle_id,
            org=org,
            org_name=self._org_names.get(org, org),
            started_at=e.started_at,
            ended_at=e.ended_at,
            ts=e.ts,
            lat=e.lat,
            lon=e.lon,
            tz=self.timezone,
            link=alarm_link(self.public_url, e.id),
            covered=e.covered,
            detail=dict(e.detail),
            place=place,
        )

    def plan(self, events: Iterable[AlarmEvent]) -> list[OutboxEntry]:
        """The outbox entries for ``events`` (pure; the same events give the same entries)."""
        out: list[OutboxEntry] = []
        cfg = self.config
        wanted = [e for e in events if not (e.backfill or e.action == "update")]
        if not wanted or not cfg.routes:
            return out
        places = self.place_texts(wanted)
        for e in wanted:
            v = self._vehicle(e)
            org = self.registry.org_of(v) if v >= 0 else ""
            for route in cfg.routes:
                if route.escalation_only:
                    continue
                if not self.matches(route, org, e.kind, e.severity):
                    continue
                if e.action == "close" and not route.on_close:
                    continue
                due = self._due(route, e.ts, e.severity)
                if due is not None:
                    out.extend(self._entries(e, e.action, route, route.name, e.ts, due, places))
                if e.action == "open" and route.escalate_to is not None:
                    target = cfg.route(route.escalate_to)
                    at = e.ts + route.escalate_after_s * 1000
                    due = self._due(target, at, e.severity)
                    if due is not None:
                        out.extend(
                            self._entries(
                                e,
                                "escalate",
                                target,
                                route.name,
                                e.ts,
                                due,
                                places,
                                escalate_after_s=route.escalate_after_s,
                            )
                        )
        # Two routes escalating to the same one give the same key: keep the first.
        unique: dict[str, OutboxEntry] = {}
        for x in out:
            unique.setdefault(x.key, x)
        return list(unique.values())

    def _entries(
        self,
        e: AlarmEvent,
        purpose: str,
        target: RouteConfig,
        from_route: str,
        created: int,
        due: int,
        places: dict[str, str],
        escalate_after_s: int | None = None,
    ) -> list[OutboxEntry]:
        notice = self.notice(e, purpose, from_route, places.get(e.id, ""))
        if escalate_after_s is not None:
            notice = _replace(notice, escalate_after_s=escalate_after_s)
        return [
            OutboxEntry(
                key=f"{e.id}|{purpose}|{target.name}|{ch}",
                alarm_id=e.id,
                purpose=purpose,
                route=target.name,
                channel=ch,
                created_at=created,
                due_at=due,
                notice=notice,
            )
            for ch in target.channels
        ]


def _replace(n: Notice, **changes: object) -> Notice:
    data = n.to_json()
    data.update(changes)
    return Notice.from_json(data)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass(frozen=True, slots=True)
class StormDecision:
    """What to do with the due messages of one target (route and channel)."""

    single: tuple[int, ...]  # positions sent one message each
    digest: tuple[int, ...]  # positions folded into one digest
    deferred: tuple[int, ...]  # positions held back until ``defer_until``
    defer_until: int | None = None


@dataclass
class StormGate:
    """More than ``per_minute`` messages a minute on one target become one digest a minute.

    Call :meth:`decide` with the due messages of the target (oldest first) and
    ``now``; it records what it lets through. In memory only: after a restart
    the first minute may let a few more single messages through.
    """

    per_minute: int
    sent: deque[int] = field(default_factory=deque)
    last_digest: int | None = None

    def decide(self, now: int, n: int) -> StormDecision:
        while self.sent and self.sent[0] <= now - MINUTE_MS:
            self.sent.popleft()
        room = max(0, self.per_minute - len(self.sent))
        single = list(range(min(room, n)))
        rest = list(range(len(single), n))
        digest: list[int] = []
        deferred: list[int] = []
        defer_until = None
        if rest:
            if self.last_digest is not None and now - self.last_digest < MINUTE_MS:
                deferred = rest
                defer_until = self.last_digest + MINUTE_MS
            elif len(rest) == 1:
                single += rest  # a digest of one would only be a longer message
            else:
                digest = rest
                self.last_digest = now
                self.sent.append(now)
        self.sent.extend([now] * len(single))
        return StormDecision(tuple(single), tuple(digest), tuple(deferred), defer_until)


def split_by_target(
    items: Sequence[tuple[str, str]],
) -> dict[tuple[str, str], list[int]]:
    """Positions of ``(route, channel)`` pairs, grouped by pair, in order."""
    out: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(items):
        out.setdefault(t, []).append(i)
    return out
