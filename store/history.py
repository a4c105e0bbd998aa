"""The history store: what every persistence backend offers, and the parts they share.

::

    HistoryStore (Protocol)
    ├── SQLiteHistory     store/sqlite.py    embedded default (demo, small sites)
    ├── PostgresHistory   store/postgres.py  production; TimescaleDB when present
    └── SpoolingWriter    store/spool.py     wraps one: PostgreSQL down -> local spool

Call :meth:`open` with the registry before anything else and :meth:`close` at
the end. Vehicles are stored by a persistent key (table ``vehicles``: the
registry's vehicle id string -> a stable integer), never by the registry's
dense index, whose order may change between runs.

Writes are idempotent: positions on (vehicle, ts) — a redelivered position is
stored once; alarm events upsert their episode by ``id``. A store that cannot
reach its database raises :class:`~fleet.errors.ServiceUnavailable`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from fleet.batch import POINT_FIELDS, PositionBatch, dtypes
from fleet.deadletter import DeadLetter
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from rules.events import KINDS, AlarmEvent
from store.figures import daily_figures

__all__ = [
    "DAY_MS",
    "DEAD_LETTER_COLS",
    "STORE_DEAD_TOPIC",
    "TRACK_FIELDS",
    "AlarmQuery",
    "DeadLetter",
    "DeadLetterQuery",
    "HistoryStore",
    "StoreHealth",
    "alarm_event_rows",
    "alarm_from_columns",
    "assemble_daily_stats",
    "day_bounds_ms",
]

DAY_MS = 86_400_000

# Columns returned by HistoryStore.track, with their dtypes: the batch's point fields.
TRACK_FIELDS: Mapping[str, np.dtype[Any]] = dtypes(POINT_FIELDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmQuery:
    """Filters of :meth:`HistoryStore.alarms` (all optional, combined with AND)."""

    state: str | None = None  # "open" | "closed"
    kinds: Sequence[str] | None = None
    severities: Sequence[str] | None = None  # "critical" | "warning" | "info"
    orgs: Sequence[str] | None = None
    vehicle_id: str | None = None
    plate: str | None = None  # the plate contains this, case-insensitive (川X12 finds 川X1234)
    from_ms: int | None = None  # started_at >= from_ms
    to_ms: int | None = None  # started_at < to_ms
    limit: int = 500
    offset: int = 0  # rows skipped, in the order newest first (started_at DESC, id)

    def conditions(self) -> list[tuple[str, str, Any]]:
        """(column, operator, value) for each filter set, operator one of ``=``, ``in`` (a
        list), ``>=``, ``<``, ``contains`` (upper-cased text); each store writes its SQL."""
        out: list[tuple[str, str, Any]] = []
        for col, op, value in (
            ("state", "=", self.state),
            ("kind", "in", list(self.kinds) if self.kinds is not None else None),
            ("severity", "in", list(self.severities) if self.severities is not None else None),
            ("org", "in", list(self.orgs) if self.orgs is not None else None),
            ("vehicle_id", "=", self.vehicle_id),
            ("plate", "contains", self.plate.strip().upper() if self.plate else None),
            ("started_at", ">=", self.from_ms),
            ("started_at", "<", self.to_ms),
        ):
            if value is not None:
                out.append((col, op, value))
        return out


#: The topic of dead letters the store itself writes: rows it refused (``source`` "store").
STORE_DEAD_TOPIC = "store/positions"

#: Columns of a dead letter as :meth:`HistoryStore.dead_letters` returns them.
DEAD_LETTER_COLS = ("id", "at", "topic", "terminal", "reason", "detail", "payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterQuery:
    """Filters of :meth:`HistoryStore.dead_letters` (all optional, combined with AND)."""

    source: str | None = None  # "ingest" | "store" (topic :data:`STORE_DEAD_TOPIC`)
    reasons: Sequence[str] | None = None
    from_ms: int | None = None  # received at >= from_ms
    to_ms: int | None = None  # received at < to_ms
    # Only these terminals (a caller's organisation subtree); None: all, unknown ones too.
    terminals: Sequence[str] | None = None
    limit: int = 100
    offset: int = 0

    def where(self, mark: str) -> tuple[str, list[Any]]:
        """SQL condition and parameters, ``mark`` the driver's placeholder (``?`` or ``%s``).

        ``terminals`` is one parameter: a JSON array on SQLite, an array on PostgreSQL.
        """
        out: list[str] = ["1=1"]
        params: list[Any] = []
        if self.source == "store":
            out.append(f"topic = {mark}")
            params.append(STORE_DEAD_TOPIC)
        elif self.source == "ingest":
            out.append(f"topic <> {mark}")
            params.append(STORE_DEAD_TOPIC)
        if self.reasons is not None:
            out.append(f"reason IN ({','.join([mark] * len(self.reasons))})")
            params.extend(self.reasons)
        if self.from_ms is not None:
            out.append(f"ts >= {mark}")
            params.append(self.from_ms)
        if self.to_ms is not None:
            out.append(f"ts < {mark}")
            params.append(self.to_ms)
        if self.terminals is not None:
            if mark == "?":
                out.append("terminal IN (SELECT value FROM json_each(?))")
                params.append(json.dumps(list(self.terminals)))
            else:
                out.append(f"terminal = ANY({mark})")
                params.append(list(self.terminals))
        return " AND ".join(out), params


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """How the history store is doing (``/healthz`` and the degradation gauges)."""

    degraded: bool = False  # the database is down: positions spool to local disk
    spooled_rows: int = 0  # positions waiting in the spool
    refused_rows: int = 0  # positions dated outside the days the store makes partitions for
    status: dict[str, Any] | None = None  # the spool's detail (``/healthz`` "history")


@runtime_checkable
class HistoryStore(Protocol):
    """Positions, alarm episodes, dead letters and rule state, kept for years."""

    async def open(self, registry: Registry) -> None:
        """Create what is missing (schema, tables, partitions) and map the registry's vehicles."""

    async def close(self) -> None: ...

    async def write_positions(self, batch: PositionBatch) -> int:
        """Store a batch durably; returns how many rows were new (0 on full redelivery)."""

    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        """Upsert each event's episode by id; an older event never overwrites a newer one."""

    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None: ...

    async def dead_letters(self, query: DeadLetterQuery) -> list[dict[str, Any]]:
        """Dead letters, newest first, as dicts of :data:`DEAD_LETTER_COLS` (payload bytes)."""

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        """How many dead letters match ``query`` (its limit and offset ignored)."""

    async def track(
        self, vehicle_id: str, from_ms: int, to_ms: int, simplify_m: float | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Positions of one vehicle in [from_ms, to_ms), by time, as :data:`TRACK_FIELDS` columns.

        With ``simplify_m``, Douglas–Peucker to that tolerance in metres.
        """

    async def tracks(
        self, vehicle_ids: Sequence[str], from_ms: int, to_ms: int
    ) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """:meth:`track` of several vehicles at once (one read where the store can: a cluster
        takeover replays a whole partition); vehicles without positions are left out."""

    async def alarms(self, query: AlarmQuery | None = None) -> list[dict[str, Any]]:
        """Episodes, newest first, as dicts shaped like the live feed's alarm (plus handling).

        ``query.limit`` rows from ``query.offset`` on."""

    async def count_alarms(self, query: AlarmQuery | None = None) -> int:
        """How many episodes match ``query`` (its limit and offset ignored)."""

    async def ack_alarm(
        self,
        alarm_id: str,
        user: str,
        note: str,
        handled: bool,
        at_ms: int | None = None,
        action: str = "ack",
    ) -> bool:
        """Add one entry (``action``: ack | close | note) to an episode's handling record.

        The first entry is the episode's ``ack`` and stays so; every entry is kept in
        ``acks``, oldest first. False if unknown id."""

    async def daily_stats(
        self, day: dt.date, tz: str, orgs: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The board: per vehicle and organisation mileage, trips, driving time, alarms by kind."""

    async def save_rule_state(self, name: str, blob: bytes) -> None: ...

    async def load_rule_state(self, name: str) -> bytes | None: ...

    def health(self) -> StoreHealth:
        """Degradation and refusals, for ``/healthz`` and ``/metrics`` (no I/O)."""

    async def follow_registry(self) -> None:
        """Map the vehicles the registry gained since ``open`` (registered live); every
        write and read that indexes by registry index does it too."""

    async def apply_retention(self, now_ms: int, *, dry_run: bool = False) -> dict[str, int]:
        """Delete what is past its retention; returns what was removed, by table.

        With ``dry_run``, removes nothing and returns what would be removed."""


def day_bounds_ms(day: dt.date, tz: str) -> tuple[int, int]:
    """[start, end) of a local calendar day, epoch ms UTC."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def assemble_daily_stats(
    registry: Registry,
    day: dt.date,
    tz: str,
    orgs: Sequence[str] | None,
    dense: npt.NDArray[Any],
    ts: npt.NDArray[Any],
    lat: npt.NDArray[Any],
    lon: npt.NDArray[Any],
    speed: npt.NDArray[Any],
    acc: npt.NDArray[Any],
    alarm_counts: Sequence[tuple[str, str, int]],
    *,
    moving_speed_kmh: float = VehicleStateConfig().moving_speed_kmh,
) -> dict[str, Any]:
    """Shape the board from a day's positions (rows sorted by (dense, ts)) and alarm counts.

    ``dense`` holds registry indices; ``alarm_counts`` is (vehicle_id, kind, n).
    Every registry vehicle of the selected organisations appears, idle or not.
    """
    fig = daily_figures(dense, ts, lat, lon, speed, acc, moving_kmh=moving_speed_kmh)
    by_dense = {int(v): i for i, v in enumerate(fig["vehicle"].tolist())}
    alarms_by_vehicle: dict[str, dict[str, int]] = {}
    for vid, kind, n in alarm_counts:
        alarms_by_vehicle.setdefault(vid, {})[kind] = int(n)
    wanted = set(orgs) if orgs is not None else None
    vehicles: list[dict[str, Any]] = []
    org_rows: dict[str, dict[str, Any]] = {}
    row: dict[str, Any]
    for i, vid in enumerate(registry.ids):
        org = registry.org_of(i)
        if wanted is not None and org not in wanted:
            continue
        j = by_dense.get(i)
        row = {
            "vehicle": vid,
            "plate": registry.plates[i],
            "org": org,
            "mileage_km": round(float(fig["mileage_km"][j]), 3) if j is not None else 0.0,
            "trips": int(fig["trips"][j]) if j is not None else 0,
            "driving_s": round(float(fig["driving_s"][j]), 1) if j is not None else 0.0,
            "alarms": alarms_by_vehicle.get(vid, {}),
        }
        vehicles.append(row)
        o = org_rows.setdefault(
            org,
            {
                "org": org,
                "vehicles": 0,
                "active_vehicles": 0,
                "mileage_km": 0.0,
                "trips": 0,
                "driving_s": 0.0,
                "alarms": {},
            },
        )
        o["vehicles"] += 1
        o["active_vehicles"] += 1 if row["trips"] else 0
        o["mileage_km"] = round(o["mileage_km"] + row["mileage_km"], 3)
        o["trips"] += row["trips"]
        o["driving_s"] = round(o["driving_s"] + row["driving_s"], 1)
        for kind, n in row["alarms"].items():
            o["alarms"][kind] = o["alarms"].get(kind, 0) + n
    total: dict[str, Any] = {
        "vehicles": len(vehicles),
        "active_vehicles": sum(1 for v in vehicles if v["trips"]),
        "mileage_km": round(sum(v["mileage_km"] for v in vehicles), 3),
        "trips": sum(v["trips"] for v in vehicles),
        "driving_s": round(sum(v["driving_s"] for v in vehicles), 1),
        "alarms": {k: n for k in KINDS if (n := sum(v["alarms"].get(k, 0) for v in vehicles))},
    }
    return {
        "day": day.isoformat(),
        "tz": tz,
        "vehicles": vehicles,
        "orgs": sorted(org_rows.values(), key=lambda o: str(o["org"])),
        "total": total,
    }


# Upsert of an episode (SQLite and PostgreSQL share the syntax). Which event of an
# episode wins does not depend on the order they arrive in, nor on whose clock stamped
# them (tick() stamps an offline open with the wall clock, the close that a late report
# brings carries that report's older time):
# - a close always lands on an open episode, whatever its time (UPSERT_WHERE);
# - otherwise the newer event lands (``ts``), so a replayed or late event never rolls an
#   episode back; the stored ``ts`` only grows;
# - a closed episode stays closed: an update after the close (a dispatch order approved
#   after the fact marks it covered) still lands, and ``covered`` is never taken back.
UPSERT_SET = (
    "state = CASE WHEN alarms.state = 'closed' THEN 'closed' ELSE excluded.state END,"
    " ended_at = coalesce(excluded.ended_at, alarms.ended_at),"
    " ts = CASE WHEN excluded.ts > alarms.ts THEN excluded.ts ELSE alarms.ts END,"
    " lat = excluded.lat, lon = excluded.lon, severity = excluded.severity,"
    " covered = (excluded.covered OR alarms.covered), detail = excluded.detail"
)
UPSERT_WHERE = "excluded.ts >= alarms.ts OR (excluded.state = 'closed' AND alarms.state = 'open')"


def alarm_row(
    *,
    id: str,
    vehicle_id: str,
    plate: str | None,
    org: str | None,
    kind: str,
    state: str,
    started_at: int,
    ended_at: int | None,
    ts: int,
    lat: float,
    lon: float,
    severity: str,
    backfill: bool,
    covered: bool,
    detail: dict[str, Any],
    ack_user: str | None,
    ack_at: int | None,
    ack_note: str | None,
    handled: bool | None,
    acks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One stored episode in the live feed's alarm shape, plus its handling record."""
    ack = (
        {"user": ack_user, "at": ack_at, "note": ack_note or "", "handled": bool(handled)}
        if ack_user is not None
        else None
    )
    if acks is None:  # a row acknowledged before the handling record was kept
        acks = [] if ack is None else [{**ack, "action": "ack"}]
    return {
        "id": id,
        "vehicle": vehicle_id,
        "plate": plate,
        "org": org,
        "kind": kind,
        "state": state,
        "started_at": started_at,
        "ended_at": ended_at,
        "updated_at": ts,
        "lat": lat,
        "lon": lon,
        "severity": severity,
        "backfill": backfill,
        "covered": covered,
        "detail": detail,
        "ack": ack,
        "acks": acks,
    }


def vehicle_keys_array(registry: Registry, keys: Mapping[str, int]) -> npt.NDArray[np.int32]:
    """Persistent vehicle key by dense registry index (the numpy lookup for a batch)."""
    return np.array([keys[vid] for vid in registry.ids], dtype=np.int32)


def dedupe_batch(batch: PositionBatch) -> PositionBatch:
    """Rows sorted by (vehicle, ts) with duplicates of (vehicle, ts) removed (first kept)."""
    if len(batch) == 0:
        return batch
    order = batch.order_by_vehicle_time()
    v, t = batch.vehicle[order], batch.ts[order]
    first = np.r_[True, (v[1:] != v[:-1]) | (t[1:] != t[:-1])]
    if first.all():
        if np.array_equal(order, np.arange(len(batch))):
            return batch
        return batch.take(order)
    return batch.take(order[first])


def stats_from_keys(
    registry: Registry,
    dense_by_key: dict[int, int],
    day: dt.date,
    tz: str,
    orgs: Sequence[str] | None,
    key: npt.NDArray[Any],
    ts: npt.NDArray[Any],
    lat: npt.NDArray[Any],
    lon: npt.NDArray[Any],
    speed: npt.NDArray[Any],
    acc: npt.NDArray[Any],
    alarm_counts: Sequence[tuple[Any, ...]],
    *,
    moving_speed_kmh: float = VehicleStateConfig().moving_speed_kmh,
) -> dict[str, Any]:
    """Translate persistent keys to registry indices (dropping vehicles no longer registered)."""
    if key.size:
        top = int(key.max()) + 1
        lookup = np.full(max(top, max(dense_by_key, default=0) + 1), -1, dtype=np.int64)
        for k, d in dense_by_key.items():
            lookup[k] = d
        dense = lookup[key.astype(np.int64)]
        m = dense >= 0
        # Rows come sorted by key; sort again by (dense, ts) for the figures core.
        order = np.lexsort((ts[m], dense[m]))
        sel = np.flatnonzero(m)[order]
        dense, ts, lat, lon, speed, acc = (a[sel] for a in (dense, ts, lat, lon, speed, acc))
    else:
        dense = key.astype(np.int64)
    return assemble_daily_stats(
        registry,
        day,
        tz,
        orgs,
        dense,
        ts,
        lat,
        lon,
        speed,
        acc.astype(bool),
        [(str(a), str(b), int(c)) for a, b, c in alarm_counts],
        moving_speed_kmh=moving_speed_kmh,
    )


def alarm_from_columns(r: Sequence[Any]) -> dict[str, Any]:
    """An alarm as a dict from a row in the stores' column order (SELECT of the alarm columns).

    SQLite hands back 0/1 and JSON text where PostgreSQL hands back bools and jsonb.
    """
    return alarm_row(
        id=r[0],
        vehicle_id=r[1],
        plate=r[2],
        org=r[3],
        kind=r[4],
        state=r[5],
        started_at=r[6],
        ended_at=r[7],
        ts=r[8],
        lat=r[9],
        lon=r[10],
        severity=r[11],
        backfill=bool(r[12]),
        covered=bool(r[13]),
        detail=json.loads(r[14]) if isinstance(r[14], str) else r[14],
        ack_user=r[15],
        ack_at=r[16],
        ack_note=r[17],
        handled=r[18],
        acks=json.loads(r[19]) if isinstance(r[19], str) else r[19],
    )


# The handling record (``acks``) and the legacy alarm ids, for both stores. ``ack_*`` hold
# the first entry and are only set while empty; ``handled`` once true stays true.
ACKS_COLUMN = "acks"


def ack_entry(user: str, note: str, at: int, action: str, handled: bool) -> str:
    """One handling entry as JSON text (the stores append it to ``acks``)."""
    if action not in ("ack", "close", "note"):
        raise ValueError(f"unknown handling action {action!r}")
    return json.dumps(
        {"user": user, "note": note, "at": at, "action": action, "handled": handled},
        ensure_ascii=False,
    )


def alarm_event_rows(
    events: Sequence[AlarmEvent], registry: Registry, keys: npt.NDArray[Any]
) -> list[tuple[Any, ...]]:
    """The alarm table's row for each event, in the stores' insert column order.

    ``keys`` maps the registry's dense vehicle index to the store's persistent
    vehicle key; an event of a vehicle the registry does not hold gets key -1.
    """
    rows = []
    for e in events:
        known = 0 <= e.vehicle < len(registry)
        rows.append(
            (
                e.id,
                int(keys[e.vehicle]) if known else -1,
                e.vehicle_id,
                registry.plates[e.vehicle] if known else None,
                registry.org_of(e.vehicle) if known else None,
                e.kind,
                e.state,
                e.started_at,
                e.ended_at,
                e.ts,
                e.lat,
                e.lon,
                e.severity,
                e.backfill,
                e.covered,
                json.dumps(e.detail, ensure_ascii=False),
            )
        )
    return rows
