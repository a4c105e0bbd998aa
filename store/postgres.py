"""PostgreSQL history store (psycopg 3, async), with TimescaleDB when it is there.

Schema (all in ``config.postgres_schema``)::

    vehicles(key serial PK, id text UNIQUE)       persistent vehicle key
    positions(vehicle, ts timestamptz, ...)       PK (vehicle, ts)
        native path:  PARTITION BY RANGE (ts), one partition per UTC day, made
                      ``partitions_ahead_days`` ahead and on demand for late
                      data; retention drops whole partitions
        TimescaleDB:  hypertable, compression, retention policy (store/timescale.py)
    alarms(id text PK, ...)                       episodes + handling record
    dead_letters, rule_state

Writing positions: rows are deduplicated and encoded to binary COPY with numpy
(:mod:`store.pgcopy`), then COPYed straight into ``positions`` in one
transaction. If that hits the primary key (a redelivery after a crash), the
transaction is rolled back and the batch goes the idempotent way: COPY into a
temporary staging table, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. The
common case costs one COPY; a redelivered batch stores nothing twice.

Every connection failure is raised as ``ServiceUnavailable("postgresql")``;
the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from fleet.batch import PositionBatch
from fleet.errors import Misuse, ServiceUnavailable
from fleet.events import LEGACY_SUB_KEY, AlarmEvent
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from notify.outbox import enqueue_postgres, outbox_ddl_postgres
from notify.routing import Router
from store import packed, pgcopy, timescale
from store.config import StoreConfig
from store.figures import project_m, simplify
from store.history import (
    DAY_MS,
    DEAD_LETTER_COLS,
    TRACK_FIELDS,
    UPSERT_SET,
    UPSERT_WHERE,
    AlarmQuery,
    DeadLetter,
    DeadLetterQuery,
    StoreHealth,
    ack_entry,
    alarm_event_rows,
    alarm_from_columns,
    day_bounds_ms,
    dedupe_batch,
    stats_from_keys,
    vehicle_keys_array,
)

__all__ = ["PostgresHistory"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Widest columns first: PostgreSQL aligns each 8-byte column to 8 bytes, and the order
# below has no padding (70 B of data, a 96 B tuple; the old order, vehicle first, pads to
# 84 B of data, a 112 B tuple). Every statement names its columns, so a table made by an
# earlier version (the old order) works unchanged; only new databases get the narrow row.
_COLUMNS_DDL = """
    ts timestamptz NOT NULL,
    lat float8 NOT NULL,
    lon float8 NOT NULL,
    alarm_bits int8 NOT NULL,
    status_bits int8 NOT NULL,
    recv_ts timestamptz NOT NULL,
    vehicle int4 NOT NULL,
    speed float4 NOT NULL,
    mileage float4 NOT NULL,
    fuel float4 NOT NULL DEFAULT 'NaN',
    heading int2 NOT NULL,
    alt int2 NOT NULL,
    acc bool NOT NULL,
    backfill bool NOT NULL,
    PRIMARY KEY (vehicle, ts)
"""

# Packed closed days (store/packed.py): one row per vehicle per UTC day. ``data`` is already
# compressed, so TOAST stores it out of line without trying pglz again (STORAGE EXTERNAL,
# set in _setup).
# ``positions_packed_days`` marks the days being or been packed: from that mark on, writers
# send positions of that day to ``positions_late`` instead of its partition (see
# PostgresHistory.write_positions), so the packer reads a partition nobody writes any more.
_PACKED_DDL = """
CREATE TABLE IF NOT EXISTS {s}.positions_packed (
    vehicle int4 NOT NULL,
    day int4 NOT NULL,
    n int4 NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (vehicle, day)
);
CREATE TABLE IF NOT EXISTS {s}.positions_packed_days (
    day int4 PRIMARY KEY,
    marked_at int8 NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.positions_late
    (LIKE {s}.positions INCLUDING DEFAULTS INCLUDING INDEXES);
"""

_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS {s}.vehicles (key serial PRIMARY KEY, id text NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS {s}.alarms (
    id text PRIMARY KEY,
    vehicle int4 NOT NULL,
    vehicle_id text NOT NULL,
    plate text,
    org text,
    kind text NOT NULL,
    state text NOT NULL,
    started_at int8 NOT NULL,
    ended_at int8,
    ts int8 NOT NULL,
    lat float8 NOT NULL,
    lon float8 NOT NULL,
    severity text NOT NULL,
    backfill bool NOT NULL,
    covered bool NOT NULL,
    detail jsonb NOT NULL,
    ack_user text,
    ack_at int8,
    ack_note text,
    handled bool,
    acks jsonb
);
CREATE INDEX IF NOT EXISTS alarms_started ON {s}.alarms (started_at);
CREATE INDEX IF NOT EXISTS alarms_open ON {s}.alarms (state) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS {s}.dead_letters (
    id bigserial PRIMARY KEY,
    ts int8 NOT NULL,
    topic text NOT NULL,
    terminal text,
    reason text NOT NULL,
    detail text NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_ts ON {s}.dead_letters (ts);
CREATE TABLE IF NOT EXISTS {s}.rule_state (
    name text PRIMARY KEY,
    blob bytea NOT NULL,
    updated_at int8 NOT NULL
);
"""

_POS_NAMES = tuple(pgcopy.POSITION_COLUMNS)
_COLS = sql.SQL(", ").join(sql.Identifier(n) for n in _POS_NAMES)
_TRACK_WIRE = {name: pgcopy.POSITION_COLUMNS[name] for name in ("vehicle", *TRACK_FIELDS)}
_STATS_WIRE = {
    n: pgcopy.POSITION_COLUMNS[n] for n in ("vehicle", "ts", "lat", "lon", "speed", "acc")
}
_ALARM_COLS = (
    "id, vehicle_id, plate, org, kind, state, started_at, ended_at, ts, lat, lon, severity,"
    " backfill, covered, detail, ack_user, ack_at, ack_note, handled, acks"
)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_FIRST_DAY = (dt.date(2000, 1, 1) - dt.date(1970, 1, 1)).days


def _day_name(day: int) -> str:
    return "positions_p" + (dt.date(1970, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%d")


def _advisory_key(schema: str) -> int:
    """The first half of the advisory lock keys of this schema's packing (a signed int4)."""
    k = zlib.crc32(b"fleetwatch.pack:" + schema.encode())
    return k - (1 << 32) if k >= 1 << 31 else k


def _ts_literal(ms: int) -> sql.Literal:
    return sql.Literal(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


async def _copy(conn: psycopg.AsyncConnection[Any], query: sql.Composable) -> list[bytes]:
    chunks: list[bytes] = []
    async with conn.cursor().copy(
        sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
    ) as copy:
        async for data in copy:
            chunks.append(bytes(data))
    return chunks


# The comparisons AlarmQuery.conditions() names, as SQL over one column.
_COMPARE = {
    "=": sql.SQL("{} = %s"),
    ">=": sql.SQL("{} >= %s"),
    "<": sql.SQL("{} < %s"),
}


class PostgresHistory:
    """:class:`~store.history.HistoryStore` on PostgreSQL 15+ (TimescaleDB optional)."""

    def __init__(
        self,
        config: StoreConfig,
        *,
        dsn: str | None = None,
        vehicle_state: VehicleStateConfig | None = None,
        notify_router: Router | None = None,
    ) -> None:
        self.config = config
        self.vehicle_state = vehicle_state or VehicleStateConfig()  # the board's "moving"
        self.dsn = dsn or config.postgres_dsn
        self.schema = config.postgres_schema
        self.timescale = False
        self._s = sql.Identifier(self.schema)
        self._write_conn: psycopg.AsyncConnection[Any] | None = None
        self._read_conn: psycopg.AsyncConnection[Any] | None = None
        self._rule_epoch_ready = False  # rule_state.epoch added (issue 19 fencing)
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._registry: Registry | None = None
        self._keys = np.empty(0, dtype=np.int32)
        self._dense_by_key: dict[int, int] = {}
        self._partitions: set[int] = set()  # UTC day numbers that have a partition
        # UTC days marked for packing: their positions go to positions_late (never unmarked
        # but by retention, so a cached mark is never wrong).
        self._frozen: set[int] = set()
        self._lock_key = _advisory_key(self.schema)
        self.refused_rows = 0  # positions dated outside partition_window(), since start
        # When set, alarm events to notify are queued in the alarm write's own transaction.
        self.notify_router = notify_router

    # -- connections ------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=self.config.connect_timeout_s
            )
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("postgresql", str(exc)) from exc

    async def _on(
        self, which: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """Run ``fn`` on the write or read connection, (re)connecting as needed."""
        if self._registry is None:
            raise Misuse("PostgresHistory used before open() or after close()")
        lock = self._write_lock if which == "write" else self._read_lock
        async with lock:
            # A kept connection may have died with a server restart we did not see: then
            # try once more on a fresh one (every write here is idempotent).
            for attempt in (1, 2):
                conn = self._write_conn if which == "write" else self._read_conn
                fresh = conn is None or conn.closed
                if conn is None or conn.closed:
                    conn = await self._connect()
                    if which == "write":
                        self._write_conn = conn
                    else:
                        self._read_conn = conn
                try:
                    return await fn(conn)
                except _UNAVAILABLE as exc:
                    await self._drop(which)
                    if fresh or attempt == 2:
                        raise ServiceUnavailable("postgresql", str(exc)) from exc
            raise AssertionError("unreachable")

    async def _drop(self, which: str) -> None:
        conn = self._write_conn if which == "write" else self._read_conn
        if which == "write":
            self._write_conn = None
            self._partitions.clear()
        else:
            self._read_conn = None
        if conn is not None:
            with contextlib.suppress(*_UNAVAILABLE):
                await conn.close()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Misuse("PostgresHistory used before open()")
        return self._registry

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self, registry: Registry) -> None:
        conn = await self._connect()
        try:
            keys = await self._setup(conn, registry)
        except _UNAVAILABLE as exc:
            await conn.close()
            raise ServiceUnavailable("postgresql", str(exc)) from exc
        self._write_conn = conn
        self._registry = registry
        self._keys = vehicle_keys_array(registry, keys)
        self._dense_by_key = {int(k): i for i, k in enumerate(self._keys.tolist())}
        if not self.timescale:
            today = _now_ms() // DAY_MS
            days = range(today - 1, today + self.config.partitions_ahead_days + 1)
            await self._on("write", lambda c: self._ensure_partitions(c, days))

    async def _setup(
        self, conn: psycopg.AsyncConnection[Any], registry: Registry
    ) -> dict[str, int]:
        s = self._s
        cur = conn.cursor()
        available = False
        if self.config.timescale == "auto":
            await cur.execute(timescale.AVAILABLE_SQL)
            available = await cur.fetchone() is not None
        self.timescale = available
        log.info(
            "history store: PostgreSQL schema %s, %s",
            self.schema,
            "TimescaleDB hypertable" if available else "native daily partitions",
        )
        await cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        await cur.execute(sql.SQL(_TABLES_DDL).format(s=s))
        await cur.execute(outbox_ddl_postgres(self.schema))
        # Alarms tables made by earlier versions: the handling record, ids without '/'.
        await cur.execute(
            sql.SQL("ALTER TABLE {}.alarms ADD COLUMN IF NOT EXISTS acks jsonb").format(s)
        )
        old, new = LEGACY_SUB_KEY
        await cur.execute(
            sql.SQL(
                "UPDATE {s}.alarms a SET id = replace(a.id, %s, %s) WHERE strpos(a.id, %s) > 0"
                " AND NOT EXISTS (SELECT 1 FROM {s}.alarms b WHERE b.id = replace(a.id, %s, %s))"
            ).format(s=s),
            (old, new, old, old, new),
        )
        suffix = "" if available else " PARTITION BY RANGE (ts)"
        await cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.positions (" + _COLUMNS_DDL + ")" + suffix
            ).format(s)
        )
        # The fuel level column (JT/T 808 item 0x02) came after the table: add it where missing.
        await cur.execute(
            sql.SQL(
                "ALTER TABLE {}.positions ADD COLUMN IF NOT EXISTS fuel float4 NOT NULL"
                " DEFAULT 'NaN'"
            ).format(s)
        )
        if available:
            for stmt in timescale.setup_statements(self.config):
                await cur.execute(stmt)
        await cur.execute(sql.SQL(_PACKED_DDL).format(s=s))
        await cur.execute(
            "SELECT a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'positions_packed' AND a.attname = 'data'",
            (self.schema,),
        )
        storage = await cur.fetchone()
        if storage is not None and storage[0] != "e":  # once: ALTER takes a strong lock
            await cur.execute(
                sql.SQL(
                    "ALTER TABLE {}.positions_packed ALTER COLUMN data SET STORAGE EXTERNAL"
                ).format(s)
            )
        await cur.execute(
            "SELECT a.attnum FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'positions' AND a.attname = 'vehicle'",
            (self.schema,),
        )
        first = await cur.fetchone()
        if first is not None and int(first[0]) == 1:
            log.info(
                "history store: %s.positions has the column order of earlier versions"
                " (112-byte tuples; new databases: 96). It works unchanged; with packing"
                " only the hot days pay the difference (docs/storage.md, 'Why one row per"
                " position cannot get under 60 B').",
                self.schema,
            )
        await cur.execute(sql.SQL("SELECT day FROM {}.positions_packed_days").format(s))
        self._frozen = {int(d) for (d,) in await cur.fetchall()}
        await cur.execute(
            sql.SQL(
                "INSERT INTO {}.vehicles (id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
            ).format(s),
            (list(registry.ids),),
        )
        await cur.execute(sql.SQL("SELECT key, id FROM {}.vehicles").format(s))
        return {vid: key for key, vid in await cur.fetchall()}

    def health(self) -> StoreHealth:
        return StoreHealth(refused_rows=self.refused_rows)

    async def follow_registry(self) -> None:
        """Map the vehicles the registry gained since :meth:`open` (registered live, the
        records issue). Called by every write and read that indexes by registry index."""
        reg = self.registry
        while self._keys.shape[0] < len(reg):
            base = self._keys.shape[0]
            new = list(reg.ids[base:])

            async def add(
                conn: psycopg.AsyncConnection[Any], new: list[str] = new
            ) -> dict[str, int]:
                s = self._s
                await conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.vehicles (id) SELECT unnest(%s::text[])"
                        " ON CONFLICT DO NOTHING"
                    ).format(s),
                    (new,),
                )
                cur = await conn.execute(
                    sql.SQL("SELECT id, key FROM {}.vehicles WHERE id = ANY(%s::text[])").format(s),
                    (new,),
                )
                return {vid: key for vid, key in await cur.fetchall()}

            keys = await self._on("write", add)
            if self._keys.shape[0] != base:
                continue  # another call mapped them meanwhile
            self._keys = np.concatenate([self._keys, np.array([keys[v] for v in new], np.int32)])
            self._dense_by_key.update({keys[v]: base + k for k, v in enumerate(new)})

    async def close(self) -> None:
        async with self._write_lock:
            await self._drop("write")
        async with self._read_lock:
            await self._drop("read")
        self._registry = None

    # -- partitions -------------------------------------------------------------------------
    async def _existing_partitions(self, conn: psycopg.AsyncConnection[Any]) -> set[int]:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = 'positions' AND n.nspname = %s",
            (self.schema,),
        )
        days = set()
        for (name,) in await cur.fetchall():
            if name.startswith("positions_p"):
                d = dt.datetime.strptime(name[11:], "%Y%m%d").date()
                days.add((d - dt.date(1970, 1, 1)).days)
        return days

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection[Any], days: Sequence[int] | range
    ) -> None:
        missing = [d for d in days if d not in self._partitions]
        if not missing:
            return
        self._partitions |= await self._existing_partitions(conn)
        for d in missing:
            if d in self._partitions:
                continue
            # Another writer may make it at the same moment.
            with contextlib.suppress(psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.{} PARTITION OF {}.positions"
                        " FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        self._s,
                        sql.Identifier(_day_name(d)),
                        self._s,
                        _ts_literal(d * DAY_MS),
                        _ts_literal((d + 1) * DAY_MS),
                    )
                )
            self._partitions.add(d)

    async def partitions(self) -> list[str]:
        """Names of the daily partitions, oldest first (native path)."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            return await self._existing_partitions(conn)

        return [_day_name(d) for d in sorted(await self._on("read", read))]

    # -- writes -----------------------------------------------------------------------------
    def _encode(self, b: PositionBatch) -> bytearray:
        return pgcopy.encode(
            pgcopy.POSITION_COLUMNS,
            {
                "vehicle": self._keys[b.vehicle],
                "ts": pgcopy.ms_to_pg(b.ts),
                "lat": b.lat,
                "lon": b.lon,
                "speed": b.speed,
                "heading": b.heading,
                "alt": b.alt,
                "acc": b.acc,
                "alarm_bits": b.alarm_bits,
                "status_bits": b.status_bits,
                "mileage": b.mileage,
                "backfill": b.backfill,
                "recv_ts": pgcopy.ms_to_pg(b.recv_ts),
                "fuel": b.fuel,
            },
        )

    async def write_positions(self, batch: PositionBatch) -> int:
        if len(batch) == 0:
            return 0
        await self.follow_registry()
        if int(batch.vehicle.max()) >= self._keys.shape[0] or int(batch.vehicle.min()) < 0:
            raise Misuse("batch.vehicle holds an index outside the registry given to open()")
        b = dedupe_batch(batch)
        b = await self._refuse_outside_window(b, _now_ms())  # a partition or a chunk
        if len(b) == 0:
            return 0
        payload = self._encode(b)
        day_of = b.ts // DAY_MS
        days = np.unique(day_of).tolist()
        today = _now_ms() // DAY_MS
        s = self._s

        async def write(conn: psycopg.AsyncConnection[Any]) -> int:
            try:
                return await write_once(conn)
            except psycopg.errors.CheckViolation:
                # "no partition of relation found for row": another node's retention dropped
                # a partition this process still believed in. Forget them all and retry once.
                self._partitions.clear()
                return await write_once(conn)

        async def route(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, bytes | bytearray]]:
            """(table, payload) pairs: the hot partitions, and positions_late for the rows of
            days marked for packing. Runs inside the write's transaction."""
            check = [d for d in days if d < today and d not in self._frozen]
            if check and not self.timescale:
                # Shared lock first, then read the marks in a NEW statement (a snapshot taken
                # after the lock): the packer marks a day under the exclusive lock, so either
                # it waits for this transaction (and then reads these rows from the
                # partition) or this statement sees its mark.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s, d) FROM unnest(%s::int4[]) AS d",
                    (self._lock_key, check),
                )
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT day FROM {}.positions_packed_days WHERE day = ANY(%s::int4[])"
                    ).format(s),
                    (check,),
                )
                self._frozen |= {int(d) for (d,) in await cur.fetchall()}
            if not self._frozen or not any(d in self._frozen for d in days):
                return [("positions", payload)]
            late = np.isin(day_of, np.array(sorted(self._frozen), dtype=np.int64))
            out: list[tuple[str, bytes | bytearray]] = []
            if not late.all():
                out.append(("positions", self._encode(b.take(np.flatnonzero(~late)))))
            out.append(("positions_late", self._encode(b.take(np.flatnonzero(late)))))
            return out

        async def write_once(conn: psycopg.AsyncConnection[Any]) -> int:
            if not self.timescale:
                await self._ensure_partitions(conn, [d for d in days if d not in self._frozen])
            try:
                async with conn.transaction():
                    for table, data in await route(conn):
                        async with conn.cursor().copy(
                            sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
                                s, sql.Identifier(table), _COLS
                            )
                        ) as copy:
                            await copy.write(data)
                return len(b)
            except psycopg.errors.UniqueViolation:
                pass  # a redelivery: take the idempotent path
            stored = 0
            async with conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS fw_positions_staging"
                        " (LIKE {}.positions) ON COMMIT DELETE ROWS"
                    ).format(s)
                )
                for table, data in await route(conn):
                    await cur.execute("TRUNCATE fw_positions_staging")
                    async with cur.copy(
                        sql.SQL("COPY fw_positions_staging ({}) FROM STDIN (FORMAT BINARY)").format(
                            _COLS
                        )
                    ) as copy:
                        await copy.write(data)
                    await cur.execute(
                        sql.SQL(
                            "INSERT INTO {}.{} ({}) SELECT {} FROM fw_positions_staging"
                            " ON CONFLICT DO NOTHING"
                        ).format(s, sql.Identifier(table), _COLS, _COLS)
                    )
                    stored += max(cur.rowcount, 0)
            return stored

        return await self._on("write", write)

    def partition_window(self, now_ms: int) -> tuple[int, int]:
        """[first, last] UTC day numbers a position may make a partition for.

        From 2000-01-01 (a JT/T 808 time is BCD from year 2000 on; earlier is a reset
        clock) to the last day made ahead. Ingest refuses dates outside its window
        already (ingest/validate.py); this guard makes sure that a date from anywhere
        else (a bug, a restored spool, a replay) can never create a partition for 2098
        that retention would not drop for 72 years.
        """
        return _FIRST_DAY, now_ms // DAY_MS + self.config.partitions_ahead_days

    async def _refuse_outside_window(self, b: PositionBatch, now_ms: int) -> PositionBatch:
        """``b`` without the rows dated outside :meth:`partition_window`; those are logged,
        counted in :attr:`refused_rows` and kept as ``store``-source dead letters."""
        first, last = self.partition_window(now_ms)
        day = b.ts // DAY_MS
        bad = (day < first) | (day > last)
        if not bad.any():
            return b
        idx = np.flatnonzero(bad)
        self.refused_rows += idx.size
        ids = self.registry.ids
        log.error(
            "history: refused %d position(s) dated outside %s..%s (no partition is made for"
            " them); kept as dead letters 'outside_partition_window'",
            idx.size,
            _day_name(first)[11:],
            _day_name(last)[11:],
        )
        await self.write_dead_letters(
            [
                DeadLetter(
                    now_ms,
                    "store/positions",
                    self.registry.terminals[int(b.vehicle[i])],
                    "outside_partition_window",
                    f"vehicle {ids[int(b.vehicle[i])]}: ts {int(b.ts[i])} is outside"
                    f" {_day_name(first)[11:]}..{_day_name(last)[11:]}",
                    json.dumps(
                        {
                            "vehicle": ids[int(b.vehicle[i])],
                            "ts": int(b.ts[i]),
                            "lat": float(b.lat[i]),
                            "lon": float(b.lon[i]),
                            "speed": float(b.speed[i]),
                        }
                    ).encode(),
                )
                for i in idx.tolist()
            ]
        )
        return b.take(np.flatnonzero(~bad))

    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        await self.follow_registry()
        rows = alarm_event_rows(events, self.registry, self._keys)
        stmt = sql.SQL(
            "INSERT INTO {}.alarms AS alarms (id, vehicle, vehicle_id, plate, org, kind, state,"
            " started_at, ended_at, ts, lat, lon, severity, backfill, covered, detail)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET " + UPSERT_SET + " WHERE " + UPSERT_WHERE
        ).format(self._s)

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                cur = conn.cursor()
                await cur.executemany(stmt, rows)
                if self.notify_router is not None:
                    await enqueue_postgres(cur, events, self.notify_router, self.schema)

        await self._on("write", write)

    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None:
        if not rows:
            return
        params = [(r.ts_ms, r.topic, r.terminal, r.reason, r.detail, r.payload) for r in rows]
        stmt = sql.SQL(
            "INSERT INTO {}.dead_letters (ts, topic, terminal, reason, detail, payload)"
            " VALUES (%s,%s,%s,%s,%s,%s)"
        ).format(self._s)

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.cursor().executemany(stmt, params)

        await self._on("write", write)

    # -- reads ------------------------------------------------------------------------------
    async def dead_letters(self, query: DeadLetterQuery) -> list[dict[str, Any]]:
        where, params = query.where("%s")
        stmt = sql.SQL(
            "SELECT id, ts, topic, terminal, reason, detail, payload FROM {}.dead_letters"
            " WHERE " + where + " ORDER BY ts DESC, id DESC LIMIT %s OFFSET %s"
        ).format(self._s)
        params += [query.limit, query.offset]

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(stmt, params)
            return await cur.fetchall()

        rows = await self._on("read", read)
        return [
            {**dict(zip(DEAD_LETTER_COLS, r, strict=True)), "payload": bytes(r[6])} for r in rows
        ]

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        where, params = query.where("%s")
        stmt = sql.SQL("SELECT count(*) FROM {}.dead_letters WHERE " + where).format(self._s)

        async def read(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(stmt, params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._on("read", read)

    async def _copy_out(self, query: sql.Composable) -> list[bytes]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> list[bytes]:
            chunks: list[bytes] = []
            async with conn.cursor().copy(
                sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
            ) as copy:
                async for data in copy:
                    chunks.append(bytes(data))
            return chunks

        return await self._on("read", read)

    async def _key_of(self, vehicle_id: str) -> int | None:
        await self.follow_registry()
        i = self.registry.by_id(vehicle_id)
        if i is not None:
            return int(self._keys[i])

        async def read(conn: psycopg.AsyncConnection[Any]) -> int | None:
            cur = await conn.execute(
                sql.SQL("SELECT key FROM {}.vehicles WHERE id = %s").format(self._s), (vehicle_id,)
            )
            row = await cur.fetchone()
            return int(row[0]) if row else None

        return await self._on("read", read)

    def _agg_query(
        self,
        table: sql.Composable,
        wire: Mapping[str, str],
        from_ms: int,
        to_ms: int,
        keys: Sequence[int] | None,
    ) -> sql.Composed:
        """One row of arrays per vehicle (see pgcopy.decode_arrays): a vehicle-day arrives
        in a few large fields. array_agg keeps the order of a sorted subquery (5x cheaper
        than an ORDER BY inside each aggregate); the readers sort again all the same."""
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in wire)
        aggs = sql.SQL(", ").join(sql.SQL("array_agg({})").format(sql.Identifier(n)) for n in wire)
        cond: sql.Composable = sql.SQL("")
        if keys is not None:
            cond = sql.SQL(" AND vehicle = ANY({}::int4[])").format(sql.Literal(list(keys)))
        return sql.SQL(
            "SELECT {} FROM (SELECT {} FROM {} WHERE ts >= {} AND ts < {}{}"
            " ORDER BY vehicle, ts) AS p GROUP BY vehicle"
        ).format(aggs, cols, table, _ts_literal(from_ms), _ts_literal(to_ms), cond)

    async def positions_between(
        self,
        from_ms: int,
        to_ms: int,
        wire: Mapping[str, str],
        *,
        keys: Sequence[int] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """The stored positions with ``from_ms <= ts < to_ms`` (of the vehicles ``keys``, by
        persistent key; None: all), the columns ``wire`` (names of
        :data:`pgcopy.POSITION_COLUMNS`, ``vehicle`` and ``ts`` among them) as the binary COPY
        decoder gives them (``ts`` in PostgreSQL microseconds), sorted by (vehicle, ts).

        THE reader of positions: the hot partitions, the late table and the packed days are
        read in that order and merged, one row per (vehicle, ts), the packed row first, then
        the hot one (see :func:`store.packed.merge_first_wins`). That order is what makes a
        packing run in between invisible: a row moves from hot (or late) to packed in one
        commit, so whichever side of it each read falls on, the row is seen at least once.
        """
        if "vehicle" not in wire or "ts" not in wire:
            raise Misuse("positions_between needs the vehicle and ts columns")
        s = self._s
        hot = pgcopy.decode_arrays(
            wire,
            await self._copy_out(
                self._agg_query(sql.SQL("{}.positions").format(s), wire, from_ms, to_ms, keys)
            ),
        )
        late = pgcopy.decode_arrays(
            wire,
            await self._copy_out(
                self._agg_query(sql.SQL("{}.positions_late").format(s), wire, from_ms, to_ms, keys)
            ),
        )
        chunks = await self._packed_rows(from_ms // DAY_MS, (to_ms - 1) // DAY_MS, keys)
        lo, hi = pgcopy.ms_to_pg(np.array([from_ms, to_ms]))
        parts: list[dict[str, npt.NDArray[Any]]] = []
        for key, blob in chunks:
            cols = packed.decode_chunk(blob, wire)
            sel = (cols["ts"] >= lo) & (cols["ts"] < hi)
            part = {n: cols[n][sel] for n in wire if n != "vehicle"}
            part["vehicle"] = np.full(int(sel.sum()), key, dtype=np.int32)
            parts.append(part)
        pk: dict[str, npt.NDArray[Any]] = (
            {n: np.concatenate([p[n] for p in parts]) for n in wire} if parts else {}
        )
        sources = [x for x in (pk, hot, late) if x and x["ts"].size]
        if len(sources) == 1:
            one = sources[0]
            v, t = one["vehicle"], one["ts"]
            ordered = v.size < 2 or bool(
                np.all((v[1:] > v[:-1]) | ((v[1:] == v[:-1]) & (t[1:] > t[:-1])))
            )
            if ordered:
                return {n: one[n] for n in wire}
        if not sources:
            return {n: hot[n] for n in wire}
        return packed.merge_first_wins(sources, list(wire))

    async def _packed_rows(
        self, first_day: int, last_day: int, keys: Sequence[int] | None
    ) -> list[tuple[int, bytes]]:
        cond = "" if keys is None else " AND vehicle = ANY(%s::int4[])"
        stmt = sql.SQL(
            "SELECT vehicle, data FROM {}.positions_packed WHERE day >= %s AND day <= %s" + cond
        ).format(self._s)
        params: list[Any] = [first_day, last_day]
        if keys is not None:
            params.append(list(keys))

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, bytes]]:
            cur = conn.cursor(binary=True)
            await cur.execute(stmt, params)
            return [(int(k), bytes(d)) for k, d in await cur.fetchall()]

        return await self._on("read", read)

    async def track(
        self, vehicle_id: str, from_ms: int, to_ms: int, simplify_m: float | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        key = await self._key_of(vehicle_id)
        if key is None:
            return {name: np.empty(0, dtype=d) for name, d in TRACK_FIELDS.items()}
        raw = await self.positions_between(from_ms, to_ms, _TRACK_WIRE, keys=[key])
        raw["ts"] = pgcopy.pg_to_ms(raw["ts"])
        out = {
            name: np.asarray(raw[name]).astype(d, copy=False) for name, d in TRACK_FIELDS.items()
        }
        if simplify_m:
            x, y = project_m(out["lat"], out["lon"])
            keep = simplify(x, y, simplify_m)
            out = {k: v[keep] for k, v in out.items()}
        return out

    async def tracks(
        self, vehicle_ids: Sequence[str], from_ms: int, to_ms: int
    ) -> dict[str, dict[str, npt.NDArray[Any]]]:
        by_key: dict[int, str] = {}
        for vid in vehicle_ids:
            key = await self._key_of(vid)
            if key is not None:
                by_key[key] = vid
        if not by_key:
            return {}
        raw = await self.positions_between(from_ms, to_ms, _TRACK_WIRE, keys=sorted(by_key))
        raw["ts"] = pgcopy.pg_to_ms(raw["ts"])
        veh = np.asarray(raw["vehicle"])
        if veh.size == 0:
            return {}
        # sorted by (vehicle, ts): one run of rows per vehicle
        starts = np.flatnonzero(np.r_[True, veh[1:] != veh[:-1]])
        ends = np.r_[starts[1:], veh.size]
        out: dict[str, dict[str, npt.NDArray[Any]]] = {}
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            owner = by_key.get(int(veh[a]))
            if owner is not None:
                out[owner] = {
                    name: np.asarray(raw[name][a:b]).astype(d, copy=False)
                    for name, d in TRACK_FIELDS.items()
                }
        return out

    @staticmethod
    def _alarm_where(q: AlarmQuery) -> tuple[sql.Composable, list[Any]]:
        where: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        for col, op, value in q.conditions():
            if op == "in":
                where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(col)))
            elif op == "contains":
                where.append(sql.SQL("strpos(upper({}), %s) > 0").format(sql.Identifier(col)))
            else:
                where.append(_COMPARE[op].format(sql.Identifier(col)))
            params.append(value)
        return sql.SQL(" AND ").join(where), params

    async def alarms(self, query: AlarmQuery | None = None) -> list[dict[str, Any]]:
        q = query or AlarmQuery()
        where, params = self._alarm_where(q)
        stmt = sql.SQL(
            "SELECT " + _ALARM_COLS + " FROM {}.alarms WHERE {}"
            " ORDER BY started_at DESC, id LIMIT %s OFFSET %s"
        ).format(self._s, where)
        params += [q.limit, q.offset]

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(stmt, params)
            return await cur.fetchall()

        return [alarm_from_columns(r) for r in await self._on("read", read)]

    async def count_alarms(self, query: AlarmQuery | None = None) -> int:
        where, params = self._alarm_where(query or AlarmQuery())
        stmt = sql.SQL("SELECT count(*) FROM {}.alarms WHERE {}").format(self._s, where)

        async def read(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(stmt, params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._on("read", read)

    async def ack_alarm(
        self,
        alarm_id: str,
        user: str,
        note: str,
        handled: bool,
        at_ms: int | None = None,
        action: str = "ack",
    ) -> bool:
        at = _now_ms() if at_ms is None else at_ms
        entry = ack_entry(user, note, at, action, handled)
        # Right-hand sides see the row before the update: the first entry wins ack_*.
        stmt = sql.SQL(
            "UPDATE {}.alarms SET"
            " acks = coalesce(acks, CASE WHEN ack_user IS NULL THEN '[]'::jsonb"
            "  ELSE jsonb_build_array(jsonb_build_object('user', ack_user, 'note',"
            "  coalesce(ack_note, ''), 'at', ack_at, 'action', 'ack', 'handled',"
            "  coalesce(handled, false))) END) || jsonb_build_array(%s::jsonb),"
            " ack_user = coalesce(ack_user, %s),"
            " ack_at = CASE WHEN ack_user IS NULL THEN %s ELSE ack_at END,"
            " ack_note = CASE WHEN ack_user IS NULL THEN %s ELSE ack_note END,"
            " handled = (coalesce(handled, false) OR %s)"
            " WHERE id = %s"
        ).format(self._s)

        async def write(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(stmt, (entry, user, at, note, handled, alarm_id))
            return cur.rowcount > 0

        return await self._on("write", write)

    async def daily_stats(
        self, day: dt.date, tz: str, orgs: Sequence[str] | None = None
    ) -> dict[str, Any]:
        start, end = day_bounds_ms(day, tz)
        await self.follow_registry()
        reg = self.registry
        keys: list[int] | None = None
        if orgs is not None:
            wanted = set(orgs)
            keys = [int(self._keys[i]) for i in range(len(reg)) if reg.org_of(i) in wanted]
        raw = await self.positions_between(start, end, _STATS_WIRE, keys=keys)

        async def read(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT vehicle_id, kind, count(*) FROM {}.alarms"
                    " WHERE started_at >= %s AND started_at < %s GROUP BY vehicle_id, kind"
                ).format(self._s),
                (start, end),
            )
            return await cur.fetchall()

        counts = await self._on("read", read)
        return stats_from_keys(
            reg,
            self._dense_by_key,
            day,
            tz,
            orgs,
            raw["vehicle"],
            pgcopy.pg_to_ms(raw["ts"]),
            raw["lat"],
            raw["lon"],
            raw["speed"],
            raw["acc"].astype(bool),
            counts,
            moving_speed_kmh=self.vehicle_state.moving_speed_kmh,
        )

    async def save_rule_state(self, name: str, blob: bytes) -> None:
        stmt = sql.SQL(
            "INSERT INTO {}.rule_state (name, blob, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET blob = excluded.blob,"
            " updated_at = excluded.updated_at"
        ).format(self._s)
        now = _now_ms()

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(stmt, (name, blob, now))

        await self._on("write", write)

    async def save_rule_state_fenced(self, name: str, blob: bytes, epoch: int) -> bool:
        """Save as the owner of ``epoch`` (issue 19: partition ownership); refused — False —
        when a save of a higher epoch is on file: a node that lost its partition cannot
        overwrite the state of the node that took it over. The ``epoch`` column is added on
        first use (older databases: 0 for the saves made before)."""
        s = self._s
        migrate = sql.SQL(
            "ALTER TABLE {}.rule_state ADD COLUMN IF NOT EXISTS epoch int8 NOT NULL DEFAULT 0"
        ).format(s)
        stmt = sql.SQL(
            "INSERT INTO {}.rule_state (name, blob, updated_at, epoch) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET blob = excluded.blob,"
            " updated_at = excluded.updated_at, epoch = excluded.epoch"
            " WHERE {}.rule_state.epoch <= excluded.epoch"
        ).format(s, s)
        now = _now_ms()

        async def write(conn: psycopg.AsyncConnection[Any]) -> bool:
            if not self._rule_epoch_ready:
                await conn.execute(migrate)
                self._rule_epoch_ready = True
            cur = await conn.execute(stmt, (name, blob, now, epoch))
            return cur.rowcount == 1

        return bool(await self._on("write", write))

    async def load_rule_state(self, name: str) -> bytes | None:
        stmt = sql.SQL("SELECT blob FROM {}.rule_state WHERE name = %s").format(self._s)

        async def read(conn: psycopg.AsyncConnection[Any]) -> bytes | None:
            cur = await conn.execute(stmt, (name,))
            row = await cur.fetchone()
            return bytes(row[0]) if row else None

        return await self._on("read", read)

    async def apply_retention(self, now_ms: int, *, dry_run: bool = False) -> dict[str, int]:
        c = self.config
        pos_cut = now_ms - c.positions_retention_days * DAY_MS
        alarm_cut = now_ms - c.alarms_retention_days * DAY_MS
        dead_cut = now_ms - c.dead_letters_retention_days * DAY_MS
        s = self._s
        # Closed episodes only: an episode still open is kept however old it is.
        alarms_where = "state = 'closed' AND coalesce(ended_at, ts) < %s"

        async def count(conn: psycopg.AsyncConnection[Any], table: str, cond: str, cut: int) -> int:
            cur = await conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{} WHERE " + cond).format(
                    s, sql.Identifier(table)
                ),
                (cut,),
            )
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        async def write(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            old_days = []
            if not self.timescale:  # TimescaleDB: its retention policy drops chunks
                old_days = [
                    d
                    for d in sorted(await self._existing_partitions(conn))
                    if (d + 1) * DAY_MS <= pos_cut  # the whole day is past retention
                ]
            # Packed and late positions go by whole UTC day, like the partitions.
            cut_day = pos_cut // DAY_MS
            late_cut = _ts_literal(cut_day * DAY_MS)
            if dry_run:
                late_cur = await conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.positions_late WHERE ts < {}").format(
                        s, late_cut
                    )
                )
                late_row = await late_cur.fetchone()
                return {
                    "position_partitions": len(old_days),
                    "packed_vehicle_days": await count(
                        conn, "positions_packed", "day < %s", cut_day
                    ),
                    "late_positions": int(late_row[0]) if late_row else 0,
                    "alarms": await count(conn, "alarms", alarms_where, alarm_cut),
                    "dead_letters": await count(conn, "dead_letters", "ts < %s", dead_cut),
                }
            for d in old_days:
                await conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}.{}").format(s, sql.Identifier(_day_name(d)))
                )
                self._partitions.discard(d)
            pk = await conn.execute(
                sql.SQL("DELETE FROM {}.positions_packed WHERE day < %s").format(s), (cut_day,)
            )
            lt = await conn.execute(
                sql.SQL("DELETE FROM {}.positions_late WHERE ts < {}").format(s, late_cut)
            )
            await conn.execute(
                sql.SQL("DELETE FROM {}.positions_packed_days WHERE day < %s").format(s),
                (cut_day,),
            )
            self._frozen = {d for d in self._frozen if d >= cut_day}
            a = await conn.execute(
                sql.SQL("DELETE FROM {}.alarms WHERE " + alarms_where).format(s), (alarm_cut,)
            )
            dl = await conn.execute(
                sql.SQL("DELETE FROM {}.dead_letters WHERE ts < %s").format(s), (dead_cut,)
            )
            return {
                "position_partitions": len(old_days),
                "packed_vehicle_days": max(pk.rowcount, 0),
                "late_positions": max(lt.rowcount, 0),
                "alarms": max(a.rowcount, 0),
                "dead_letters": max(dl.rowcount, 0),
            }

        removed = await self._on("write", write)
        # Then pack (never a day retention is about to drop: retention went first).
        removed["days_packed"] = len(await self.pack_closed_days(now_ms, dry_run=dry_run))
        return removed

    # -- packing ----------------------------------------------------------------------------
    def packable_before(self, now_ms: int) -> int:
        """UTC day number: the days before it may be packed at ``now_ms`` (those that ended
        ``pack_after_days`` days and ``pack_margin_s`` ago). 0 when packing is off."""
        c = self.config
        if c.pack_after_days == 0 or self.timescale:
            return 0  # TimescaleDB compresses its own chunks (store/timescale.py)
        return (now_ms - int(c.pack_margin_s * 1000)) // DAY_MS - c.pack_after_days

    async def pack_closed_days(self, now_ms: int, *, dry_run: bool = False) -> list[int]:
        """Pack up to ``pack_max_days_per_run`` closed UTC days, oldest first; returns them.

        One packer at a time over all nodes (a session advisory lock; a second node skips).
        Runs on a connection of its own, so writes and reads are not held up behind it.
        Per day: (1) mark it, under the day's exclusive advisory lock, so writers send its
        late positions to ``positions_late`` from then on; (2) per ``pack_vehicles_per_txn``
        vehicles, in one transaction: the day's rows from its partition, the late rows
        (deleted as they are read), the packed rows already there, merged (first stored
        wins), encoded, upserted; (3) drop the partition. A run that stops half-way leaves
        rows both packed and hot, which readers merge; the next run does the day again.
        """
        before = self.packable_before(now_ms)
        if before <= 0:
            return []
        cut_day = (now_ms - self.config.positions_retention_days * DAY_MS) // DAY_MS
        s = self._s
        conn = await self._connect()
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s, -1)", (self._lock_key,))
            got = await cur.fetchone()
            if not got or not got[0]:
                log.info("packing: another node is packing schema %s; skipped", self.schema)
                return []
            hot_days = {d for d in await self._existing_partitions(conn) if cut_day <= d < before}
            cur = await conn.execute(
                sql.SQL(
                    "SELECT DISTINCT floor(extract(epoch FROM ts) / 86400)::int8"
                    " FROM {}.positions_late WHERE ts < {}"
                ).format(s, _ts_literal(before * DAY_MS))
            )
            late_days = {int(d) for (d,) in await cur.fetchall() if int(d) >= cut_day}
            todo = sorted(hot_days | late_days)[: self.config.pack_max_days_per_run]
            if dry_run:
                return todo
            cur = await conn.execute(sql.SQL("SELECT key FROM {}.vehicles ORDER BY key").format(s))
            keys = [int(k) for (k,) in await cur.fetchall()]
            for d in todo:
                await self._pack_day(conn, d, keys, d in hot_days)
            return todo
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("postgresql", str(exc)) from exc
        finally:
            with contextlib.suppress(*_UNAVAILABLE):
                await conn.close()  # also releases the session advisory lock

    async def _pack_day(
        self, conn: psycopg.AsyncConnection[Any], day: int, keys: list[int], has_partition: bool
    ) -> None:
        s = self._s
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self._lock_key, day))
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.positions_packed_days (day, marked_at) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING"
                ).format(s),
                (day, _now_ms()),
            )
        self._frozen.add(day)
        lo, hi = day * DAY_MS, (day + 1) * DAY_MS
        part = sql.SQL("{}.{}").format(s, sql.Identifier(_day_name(day)))
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in _POS_NAMES)
        names = list(_POS_NAMES)
        step = self.config.pack_vehicles_per_txn
        rows = chunks = 0
        for i in range(0, len(keys), step):
            group = keys[i : i + step]
            async with conn.transaction():
                hot: dict[str, npt.NDArray[Any]] = {}
                if has_partition:
                    hot = pgcopy.decode_arrays(
                        pgcopy.POSITION_COLUMNS,
                        await _copy(
                            conn, self._agg_query(part, pgcopy.POSITION_COLUMNS, lo, hi, group)
                        ),
                    )
                moved = sql.SQL(
                    "WITH moved AS (DELETE FROM {}.positions_late WHERE vehicle = ANY({}::int4[])"
                    " AND ts >= {} AND ts < {} RETURNING {}) {}"
                ).format(
                    s,
                    sql.Literal(group),
                    _ts_literal(lo),
                    _ts_literal(hi),
                    cols,
                    self._agg_query(sql.SQL("moved"), pgcopy.POSITION_COLUMNS, lo, hi, None),
                )
                late = pgcopy.decode_arrays(pgcopy.POSITION_COLUMNS, await _copy(conn, moved))
                cur = conn.cursor(binary=True)
                await cur.execute(
                    sql.SQL(
                        "SELECT vehicle, data FROM {}.positions_packed"
                        " WHERE day = %s AND vehicle = ANY(%s::int4[]) FOR UPDATE"
                    ).format(s),
                    (day, group),
                )
                old = []
                for key, blob in await cur.fetchall():
                    c = packed.decode_chunk(bytes(blob))
                    c["vehicle"] = np.full(c["ts"].size, int(key), dtype=np.int32)
                    old.append(c)
                prev = {n: np.concatenate([o[n] for o in old]) for n in names} if old else {}
                sources = [x for x in (prev, hot, late) if x and x["ts"].size]
                if not sources:
                    continue
                merged = packed.merge_first_wins(sources, names)
                v = merged["vehicle"]
                bounds = np.flatnonzero(np.diff(v)) + 1
                params = []
                for a, b in zip(
                    np.concatenate([[0], bounds]), np.concatenate([bounds, [v.size]]), strict=True
                ):
                    blob = packed.encode_chunk({n: merged[n][a:b] for n in packed.COLUMNS})
                    params.append((int(v[a]), day, int(b - a), blob))
                await cur.executemany(
                    sql.SQL(
                        "INSERT INTO {}.positions_packed (vehicle, day, n, data)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (vehicle, day)"
                        " DO UPDATE SET n = excluded.n, data = excluded.data"
                    ).format(s),
                    params,
                )
                rows += int(v.size)
                chunks += len(params)
        if has_partition:
            # Nobody writes into it since the mark; every row of it is packed now.
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(part))
            self._partitions.discard(day)
        log.info(
            "packing: %s: %d positions of %d vehicles in %.1f s",
            _day_name(day)[11:],
            rows,
            chunks,
            time.perf_counter() - t0,
        )
