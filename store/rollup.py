"""The daily rollup's tables (SQL only; the figures come from :mod:`reports.rollup`).

Two tables, next to the history store's own (same SQLite file / PostgreSQL schema)::

    rollup_vehicle_day  (scenario, day, vehicle_id) PK    one row per vehicle-day
    rollup_alarm        (scenario, day, alarm_id)   PK    one row per alarm episode

``scenario`` is ``"real"`` for what happened and a name for a "what if" replay. ``day``
is the fleet-local date as text ``YYYY-MM-DD`` (sorts and slices alike on both engines;
a month is ``substr(day, 1, 7)``). :meth:`RollupStore.replace_day` writes a whole day of
a scenario in one transaction (an upsert by (scenario, day, vehicle); rows of that day no
longer produced are removed), so writing the day so far and later the closed day, or
rebuilding it, leaves exactly one current row per vehicle-day.

Reports read only these tables, aggregated in SQL by vehicle; positions are read only to
build a day (:meth:`RollupStore.day_positions`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.errors import Misuse
from store import pgcopy
from store.postgres import PostgresHistory
from store.spool import SpoolingWriter
from store.sqlite import SQLiteHistory

__all__ = [
    "ALARM_COLS",
    "REAL",
    "VEHICLE_COLS",
    "PostgresRollup",
    "RollupStore",
    "SQLiteRollup",
    "rollup_store",
]

REAL = "real"

#: Columns of rollup_vehicle_day after (scenario, day), in insert order.
VEHICLE_COLS = (
    "vehicle_id",
    "org",
    "km",
    "trips",
    "trips_covered",
    "driving_s",
    "idle_s",
    "outside_s",
    "online_s",
    "span_s",
    "points",
    "orders",
    "alarms",
    "closed",
    "updated_at",
)
#: Columns of rollup_alarm after (scenario, day), in insert order.
ALARM_COLS = (
    "alarm_id",
    "vehicle_id",
    "org",
    "kind",
    "severity",
    "started_at",
    "covered",
    "ack_s",
    "handle_s",
)

_DDL = """
CREATE TABLE IF NOT EXISTS {p}rollup_vehicle_day (
    scenario text NOT NULL,
    day text NOT NULL,
    vehicle_id text NOT NULL,
    org text NOT NULL,
    km {f} NOT NULL,
    trips integer NOT NULL,
    trips_covered integer NOT NULL,
    driving_s {f} NOT NULL,
    idle_s {f} NOT NULL,
    outside_s {f} NOT NULL,
    online_s {f} NOT NULL,
    span_s {f} NOT NULL,
    points integer NOT NULL,
    orders integer NOT NULL,
    alarms integer NOT NULL,
    closed {b} NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (scenario, day, vehicle_id)
);
CREATE INDEX IF NOT EXISTS rollup_vehicle_day_org ON {p}rollup_vehicle_day (scenario, org, day);
CREATE TABLE IF NOT EXISTS {p}rollup_alarm (
    scenario text NOT NULL,
    day text NOT NULL,
    alarm_id text NOT NULL,
    vehicle_id text NOT NULL,
    org text NOT NULL,
    kind text NOT NULL,
    severity text NOT NULL,
    started_at bigint NOT NULL,
    covered {b} NOT NULL,
    ack_s {f},
    handle_s {f},
    PRIMARY KEY (scenario, day, alarm_id)
);
"""

# Sums per vehicle over days: what use / online / coverage / the board read.
_VEHICLE_SUMS = (
    "SELECT vehicle_id, org, count(*), sum(km), sum(trips), sum(trips_covered), sum(driving_s),"
    " sum(idle_s), sum(outside_s), sum(online_s), sum(span_s), sum(orders), sum(alarms),"
    " max(CASE WHEN trips > 0 THEN day END)"
    " FROM {p}rollup_vehicle_day WHERE scenario = {m} AND day >= {m} AND day <= {m}{org}"
    " GROUP BY vehicle_id, org"
)
VEHICLE_SUM_KEYS = (
    "vehicle_id",
    "org",
    "days",
    "km",
    "trips",
    "trips_covered",
    "driving_s",
    "idle_s",
    "outside_s",
    "online_s",
    "span_s",
    "orders",
    "alarms",
    "last_trip_day",
)
# The same sums per organisation (levels above vehicle: ~100 rows instead of 10,000);
# ``vehicle_id`` holds the organisation, plus distinct vehicles and vehicles used.
_ORG_SUMS = (
    "SELECT org, org, count(*), sum(km), sum(trips), sum(trips_covered), sum(driving_s),"
    " sum(idle_s), sum(outside_s), sum(online_s), sum(span_s), sum(orders), sum(alarms),"
    " max(CASE WHEN trips > 0 THEN day END)"
    " FROM {p}rollup_vehicle_day WHERE scenario = {m} AND day >= {m} AND day <= {m}{org}"
    " GROUP BY org"
)
# Distinct vehicles and vehicles with a trip per organisation: one light aggregate per
# vehicle first (a count DISTINCT sorts, and is 3x slower here).
_ORG_VEHICLES = (
    "SELECT org, count(*), count(*) FILTER (WHERE t > 0) FROM (SELECT org, vehicle_id,"
    " max(trips) AS t FROM {p}rollup_vehicle_day"
    " WHERE scenario = {m} AND day >= {m} AND day <= {m}{org} GROUP BY org, vehicle_id) AS v"
    " GROUP BY org"
)
ORG_SUM_KEYS = ("vehicle_id", "org", *VEHICLE_SUM_KEYS[2:])  # then n_vehicles, n_active
# Vehicles with rows but no trip in [from, to] (the idle window: a few days).
_IDLE = (
    "SELECT vehicle_id, org FROM {p}rollup_vehicle_day"
    " WHERE scenario = {m} AND day >= {m} AND day <= {m}{org}"
    " GROUP BY vehicle_id, org HAVING max(trips) = 0"
)
_LAST_TRIP = (
    "SELECT vehicle_id, max(day) FROM {p}rollup_vehicle_day"
    " WHERE scenario = {m} AND day >= {m} AND day < {m} AND trips > 0{veh} GROUP BY vehicle_id"
)
# Alarm counts and handling sums per vehicle, month, kind and severity.
_ALARM_GROUPS = (
    "SELECT vehicle_id, org, substr(day, 1, 7), kind, severity, count(*),"
    " count(ack_s), coalesce(sum(ack_s), 0), sum(CASE WHEN ack_s <= 600 THEN 1 ELSE 0 END),"
    " count(handle_s), coalesce(sum(handle_s), 0),"
    " sum(CASE WHEN handle_s <= 600 THEN 1 ELSE 0 END)"
    " FROM {p}rollup_alarm WHERE scenario = {m} AND day >= {m} AND day <= {m}{org}"
    " GROUP BY vehicle_id, org, substr(day, 1, 7), kind, severity"
)
ALARM_GROUP_KEYS = (
    "vehicle_id",
    "org",
    "month",
    "kind",
    "severity",
    "n",
    "acked",
    "ack_s",
    "acked_10min",
    "handled",
    "handle_s",
    "handled_10min",
)
_DAY_TOTALS = (
    "SELECT day, sum(trips), sum(km), sum(alarms), count(*) FROM {p}rollup_vehicle_day"
    " WHERE scenario = {m} AND day >= {m} AND day <= {m}{org} GROUP BY day ORDER BY day"
)


class RollupStore:
    """The rollup tables on the database of one history store. :meth:`open` first."""

    mark = "?"
    prefix = ""

    # -- per engine ---------------------------------------------------------------------------
    async def _script(self, ddl: str) -> None:
        raise NotImplementedError

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _replace(
        self,
        scenario: str,
        day: str,
        vrows: Sequence[tuple[Any, ...]],
        arows: Sequence[tuple[Any, ...]],
    ) -> None:
        raise NotImplementedError

    def _org_cond(self, orgs: Sequence[str] | None, params: list[Any]) -> str:
        raise NotImplementedError

    def _in_cond(self, ids: Sequence[str], params: list[Any]) -> str:
        raise NotImplementedError

    async def day_positions(self, start_ms: int, end_ms: int) -> dict[str, npt.NDArray[Any]]:
        """Positions in [start, end) as ``vehicle`` (registry dense index), ``ts``, ``lat``,
        ``lon``, ``speed``, ``acc``, sorted by (vehicle, ts); vehicles the registry no
        longer holds are left out."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._script(self.ddl())

    def ddl(self) -> str:
        return _DDL.format(p=self.prefix, f=self.float_type, b=self.bool_type)

    float_type = "real"
    bool_type = "integer"

    def q(self, template: str, orgs: Sequence[str] | None, params: list[Any]) -> str:
        org = self._org_cond(orgs, params)
        return template.format(p=self.prefix, m=self.mark, org=org)

    async def replace_day(
        self,
        scenario: str,
        day: str,
        vehicles: Sequence[Mapping[str, Any]],
        alarms: Sequence[Mapping[str, Any]],
    ) -> None:
        """The whole day of ``scenario``: one row per vehicle, one per alarm episode."""
        if len(day) != 10:
            raise Misuse(f"day must be YYYY-MM-DD, not {day!r}")
        vrows = [(scenario, day, *(self._cell(v[c]) for c in VEHICLE_COLS)) for v in vehicles]
        arows = [(scenario, day, *(self._cell(a[c]) for c in ALARM_COLS)) for a in alarms]
        await self._replace(scenario, day, vrows, arows)

    def _cell(self, v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        return v

    async def vehicle_sums(
        self, scenario: str, from_day: str, to_day: str, orgs: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(self.q(_VEHICLE_SUMS, orgs, params), params)
        return [dict(zip(VEHICLE_SUM_KEYS, r, strict=True)) for r in rows]

    async def org_sums(
        self, scenario: str, from_day: str, to_day: str, orgs: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`vehicle_sums` per organisation (``vehicle_id`` = the organisation),
        with ``n_vehicles`` and ``n_active`` (vehicles with a trip) counted distinct."""
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(self.q(_ORG_SUMS, orgs, params), params)
        params = [scenario, from_day, to_day]
        counts = {
            r[0]: (r[1], r[2])
            for r in await self._fetch(self.q(_ORG_VEHICLES, orgs, params), params)
        }
        out = []
        for r in rows:
            d = dict(zip(ORG_SUM_KEYS, r, strict=True))
            d["n_vehicles"], d["n_active"] = counts.get(d["org"], (0, 0))
            out.append(d)
        return out

    async def idle_vehicles(
        self,
        scenario: str,
        from_day: str,
        to_day: str,
        orgs: Sequence[str] | None = None,
        *,
        since: str,
    ) -> list[dict[str, Any]]:
        """Vehicles with rows but no trip in [from_day, to_day]; ``last_trip_day``: their
        last trip in [since, from_day) (None: none in that time)."""
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(self.q(_IDLE, orgs, params), params)
        last: dict[str, str] = {}
        if rows:
            ids = [r[0] for r in rows]
            p2: list[Any] = [scenario, since, from_day]
            query = _LAST_TRIP.format(p=self.prefix, m=self.mark, veh=self._in_cond(ids, p2))
            last = {r[0]: r[1] for r in await self._fetch(query, p2)}
        return [
            {"vehicle_id": r[0], "org": r[1], "last_trip_day": last.get(r[0])}
            for r in sorted(rows, key=lambda r: (r[1], r[0]))
        ]

    async def alarm_groups(
        self, scenario: str, from_day: str, to_day: str, orgs: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(self.q(_ALARM_GROUPS, orgs, params), params)
        return [dict(zip(ALARM_GROUP_KEYS, r, strict=True)) for r in rows]

    async def alarm_items(
        self,
        scenario: str,
        from_day: str,
        to_day: str,
        orgs: Sequence[str] | None = None,
        *,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """The episodes behind the counts, newest first, at most ``limit``."""
        params: list[Any] = [scenario, from_day, to_day]
        kind_cond = ""
        if kind is not None:
            kind_cond = f" AND kind = {self.mark}"
        template = (
            "SELECT day, " + ", ".join(ALARM_COLS) + " FROM {p}rollup_alarm"
            " WHERE scenario = {m} AND day >= {m} AND day <= {m}{org}"
        )
        query = self.q(template, orgs, params) + kind_cond
        if kind is not None:
            params.append(kind)
        query += f" ORDER BY started_at DESC, alarm_id LIMIT {int(limit)}"
        rows = await self._fetch(query, params)
        out = []
        for r in rows:
            d = dict(zip(("day", *ALARM_COLS), r, strict=True))
            d["covered"] = bool(d["covered"])
            out.append(d)
        return out

    async def day_totals(
        self, scenario: str, from_day: str, to_day: str, orgs: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(self.q(_DAY_TOTALS, orgs, params), params)
        return [
            {"date": r[0], "trips": int(r[1]), "km": float(r[2]), "alarms": int(r[3])} for r in rows
        ]

    async def vehicle_days(self, scenario: str, from_day: str, to_day: str) -> list[dict[str, Any]]:
        """Every stored vehicle-day row (tests, exports), by day and vehicle."""
        cols = ("day", *VEHICLE_COLS)
        params: list[Any] = [scenario, from_day, to_day]
        rows = await self._fetch(
            f"SELECT {', '.join(cols)} FROM {self.prefix}rollup_vehicle_day"
            f" WHERE scenario = {self.mark} AND day >= {self.mark} AND day <= {self.mark}"
            " ORDER BY day, vehicle_id",
            params,
        )
        out = [dict(zip(cols, r, strict=True)) for r in rows]
        for d in out:
            d["closed"] = bool(d["closed"])
        return out

    async def alarm_days(self, scenario: str, from_day: str, to_day: str) -> list[dict[str, Any]]:
        return sorted(
            await self.alarm_items(scenario, from_day, to_day, limit=10**9),
            key=lambda a: (a["day"], a["alarm_id"]),
        )

    async def scenarios(self) -> list[str]:
        rows = await self._fetch(
            f"SELECT DISTINCT scenario FROM {self.prefix}rollup_vehicle_day ORDER BY scenario", []
        )
        return [r[0] for r in rows]


class SQLiteRollup(RollupStore):
    """On the file (or memory database) of a :class:`~store.sqlite.SQLiteHistory`."""

    def __init__(self, history: SQLiteHistory) -> None:
        self.history = history

    async def _script(self, ddl: str) -> None:
        await self.history._run(lambda db: db.executescript(ddl))

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self.history._run(lambda db: db.execute(query, list(params)).fetchall())

    def _org_cond(self, orgs: Sequence[str] | None, params: list[Any]) -> str:
        if orgs is None:
            return ""
        params.append(json.dumps(sorted(orgs)))
        return " AND org IN (SELECT value FROM json_each(?))"

    def _in_cond(self, ids: Sequence[str], params: list[Any]) -> str:
        params.append(json.dumps(list(ids)))
        return " AND vehicle_id IN (SELECT value FROM json_each(?))"

    async def _replace(
        self,
        scenario: str,
        day: str,
        vrows: Sequence[tuple[Any, ...]],
        arows: Sequence[tuple[Any, ...]],
    ) -> None:
        vcols = ", ".join(("scenario", "day", *VEHICLE_COLS))
        acols = ", ".join(("scenario", "day", *ALARM_COLS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in VEHICLE_COLS[1:])

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                keep = json.dumps([r[2] for r in vrows])
                db.execute(
                    "DELETE FROM rollup_vehicle_day WHERE scenario = ? AND day = ?"
                    " AND vehicle_id NOT IN (SELECT value FROM json_each(?))",
                    (scenario, day, keep),
                )
                db.executemany(
                    f"INSERT INTO rollup_vehicle_day ({vcols})"
                    f" VALUES ({', '.join('?' * (2 + len(VEHICLE_COLS)))})"
                    f" ON CONFLICT (scenario, day, vehicle_id) DO UPDATE SET {updates}",
                    vrows,
                )
                db.execute(
                    "DELETE FROM rollup_alarm WHERE scenario = ? AND day = ?", (scenario, day)
                )
                db.executemany(
                    f"INSERT INTO rollup_alarm ({acols})"
                    f" VALUES ({', '.join('?' * (2 + len(ALARM_COLS)))})",
                    arows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self.history._run(write)

    async def day_positions(self, start_ms: int, end_ms: int) -> dict[str, npt.NDArray[Any]]:
        h = self.history
        await h.follow_registry()

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT vehicle, ts, lat, lon, speed, acc FROM positions"
                " WHERE ts >= ? AND ts < ? ORDER BY vehicle, ts",
                (start_ms, end_ms),
            ).fetchall()

        rows = await h._run(read)
        if rows:
            key, ts, lat, lon, speed, acc = (np.array(c) for c in zip(*rows, strict=True))
        else:
            key = ts = np.zeros(0, np.int64)
            lat = lon = speed = np.zeros(0)
            acc = np.zeros(0, bool)
        return _to_dense(h._dense_by_key, key, ts, lat, lon, speed, acc)


class PostgresRollup(RollupStore):
    """In the schema of a :class:`~store.postgres.PostgresHistory`."""

    mark = "%s"
    float_type = "float8"
    bool_type = "boolean"

    def __init__(self, history: PostgresHistory) -> None:
        self.history = history
        self.prefix = f'"{history.schema}".'

    async def _script(self, ddl: str) -> None:
        async def run(conn: Any) -> None:
            await conn.execute(ddl)

        await self.history._on("write", run)

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async def run(conn: Any) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, list(params))
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

        return await self.history._on("read", run)

    def _org_cond(self, orgs: Sequence[str] | None, params: list[Any]) -> str:
        if orgs is None:
            return ""
        params.append(sorted(orgs))
        return " AND org = ANY(%s)"

    def _in_cond(self, ids: Sequence[str], params: list[Any]) -> str:
        params.append(list(ids))
        return " AND vehicle_id = ANY(%s)"

    async def _replace(
        self,
        scenario: str,
        day: str,
        vrows: Sequence[tuple[Any, ...]],
        arows: Sequence[tuple[Any, ...]],
    ) -> None:
        p = self.prefix
        vcols = ("scenario", "day", *VEHICLE_COLS)
        acols = ("scenario", "day", *ALARM_COLS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in VEHICLE_COLS[1:])
        vrows = [(*r[:15], bool(r[15]), r[16]) for r in vrows]
        arows = [(*r[:8], bool(r[8]), *r[9:]) for r in arows]

        async def write(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS rollup_stage"
                    f" (LIKE {p}rollup_vehicle_day) ON COMMIT DELETE ROWS"
                )
                async with conn.cursor().copy(
                    f"COPY rollup_stage ({', '.join(vcols)}) FROM STDIN"
                ) as copy:
                    for r in vrows:
                        await copy.write_row(r)
                await conn.execute(
                    f"DELETE FROM {p}rollup_vehicle_day d WHERE scenario = %s AND day = %s"
                    " AND NOT EXISTS (SELECT 1 FROM rollup_stage s"
                    " WHERE s.vehicle_id = d.vehicle_id)",
                    (scenario, day),
                )
                await conn.execute(
                    f"INSERT INTO {p}rollup_vehicle_day ({', '.join(vcols)})"
                    f" SELECT {', '.join(vcols)} FROM rollup_stage"
                    f" ON CONFLICT (scenario, day, vehicle_id) DO UPDATE SET {updates}"
                )
                await conn.execute(
                    f"DELETE FROM {p}rollup_alarm WHERE scenario = %s AND day = %s",
                    (scenario, day),
                )
                async with conn.cursor().copy(
                    f"COPY {p}rollup_alarm ({', '.join(acols)}) FROM STDIN"
                ) as copy:
                    for r in arows:
                        await copy.write_row(r)

        await self.history._on("write", write)

    async def day_positions(self, start_ms: int, end_ms: int) -> dict[str, npt.NDArray[Any]]:
        h = self.history
        await h.follow_registry()
        wire = {
            n: pgcopy.POSITION_COLUMNS[n] for n in ("vehicle", "ts", "lat", "lon", "speed", "acc")
        }
        # Through the store's one reader of positions: hot, late and packed days alike.
        raw = await h.positions_between(start_ms, end_ms, wire)
        return _to_dense(
            h._dense_by_key,
            raw["vehicle"],
            pgcopy.pg_to_ms(raw["ts"]),
            raw["lat"],
            raw["lon"],
            raw["speed"],
            raw["acc"].astype(bool),
        )


def _to_dense(
    dense_by_key: dict[int, int],
    key: npt.NDArray[Any],
    ts: npt.NDArray[Any],
    lat: npt.NDArray[Any],
    lon: npt.NDArray[Any],
    speed: npt.NDArray[Any],
    acc: npt.NDArray[Any],
) -> dict[str, npt.NDArray[Any]]:
    key = np.asarray(key, dtype=np.int64)
    if key.size:
        top = max(int(key.max()), max(dense_by_key, default=0)) + 1
        lookup = np.full(top, -1, dtype=np.int64)
        for k, d in dense_by_key.items():
            lookup[k] = d
        dense = lookup[key]
        sel = np.flatnonzero(dense >= 0)
        order = np.lexsort((np.asarray(ts)[sel], dense[sel]))
        sel = sel[order]
    else:
        dense, sel = key, np.zeros(0, np.int64)
    return {
        "vehicle": dense[sel],
        "ts": np.asarray(ts, dtype=np.int64)[sel],
        "lat": np.asarray(lat, dtype=np.float64)[sel],
        "lon": np.asarray(lon, dtype=np.float64)[sel],
        "speed": np.asarray(speed, dtype=np.float64)[sel],
        "acc": np.asarray(acc, dtype=bool)[sel],
    }


def rollup_store(history: Any) -> RollupStore:
    """The rollup store on the same database as ``history`` (a SpoolingWriter is unwrapped)."""
    inner = history.inner if isinstance(history, SpoolingWriter) else history
    if isinstance(inner, SQLiteHistory):
        return SQLiteRollup(inner)
    if isinstance(inner, PostgresHistory):
        return PostgresRollup(inner)
    raise Misuse(f"no rollup store for {type(inner).__name__}")
