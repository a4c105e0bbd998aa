"""SQLite history store: the embedded default (demo, small sites). stdlib sqlite3, WAL.

One connection, used from one worker thread at a time (``asyncio.to_thread``
under a lock), so the event loop never waits on the disk. Positions live in a
``WITHOUT ROWID`` table keyed by (vehicle, ts): ``INSERT OR IGNORE`` makes a
redelivered position a no-op.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fleet.batch import PositionBatch
from fleet.errors import Misuse, ServiceUnavailable
from fleet.events import LEGACY_SUB_KEY, AlarmEvent
from fleet.registry import Registry
from fleet.threads import to_thread_holding
from fleet.vehicle_state import VehicleStateConfig
from notify.outbox import OUTBOX_DDL_SQLITE, enqueue_sqlite
from notify.routing import Router
from store.config import StoreConfig
from store.figures import project_m, simplify
from store.history import (
    ACKS_COLUMN,
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

__all__ = ["SQLiteHistory"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vehicles (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS positions (
    vehicle INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    speed REAL NOT NULL,
    heading INTEGER NOT NULL,
    alt INTEGER NOT NULL,
    acc INTEGER NOT NULL,
    alarm_bits INTEGER NOT NULL,
    status_bits INTEGER NOT NULL,
    mileage REAL,
    backfill INTEGER NOT NULL,
    recv_ts INTEGER NOT NULL,
    fuel REAL,
    PRIMARY KEY (vehicle, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS positions_ts ON positions (ts);
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    vehicle INTEGER NOT NULL,
    vehicle_id TEXT NOT NULL,
    plate TEXT,
    org TEXT,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    ts INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    severity TEXT NOT NULL,
    backfill INTEGER NOT NULL,
    covered INTEGER NOT NULL,
    detail TEXT NOT NULL,
    ack_user TEXT,
    ack_at INTEGER,
    ack_note TEXT,
    handled INTEGER,
    acks TEXT
);
CREATE INDEX IF NOT EXISTS alarms_started ON alarms (started_at);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (state) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    topic TEXT NOT NULL,
    terminal TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_ts ON dead_letters (ts);
CREATE TABLE IF NOT EXISTS rule_state (
    name TEXT PRIMARY KEY,
    blob BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
"""

_POS_COLS = (
    "vehicle, ts, lat, lon, speed, heading, alt, acc, alarm_bits, status_bits, mileage,"
    " backfill, recv_ts, fuel"
)
_ALARM_COLS = (
    "id, vehicle_id, plate, org, kind, state, started_at, ended_at, ts, lat, lon, severity,"
    " backfill, covered, detail, ack_user, ack_at, ack_note, handled, acks"
)


def _migrate_positions(db: sqlite3.Connection) -> None:
    """Add the fuel level column to a positions table made before it existed (NULL there)."""
    if "fuel" not in {r[1] for r in db.execute("PRAGMA table_info(positions)")}:
        db.execute("ALTER TABLE positions ADD COLUMN fuel REAL")


def _migrate_alarms(db: sqlite3.Connection) -> None:
    """Bring an alarms table made by an earlier version up to date (idempotent)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(alarms)")}
    if ACKS_COLUMN not in cols:
        db.execute(f"ALTER TABLE alarms ADD COLUMN {ACKS_COLUMN} TEXT")
    old, new = LEGACY_SUB_KEY
    db.execute(
        "UPDATE OR IGNORE alarms SET id = replace(id, ?, ?) WHERE instr(id, ?) > 0",
        (old, new, old),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SQLiteHistory:
    """:class:`~store.history.HistoryStore` on one SQLite file."""

    def __init__(
        self,
        config: StoreConfig,
        path: str | None = None,
        *,
        vehicle_state: VehicleStateConfig | None = None,
        notify_router: Router | None = None,
    ) -> None:
        self.config = config
        self.vehicle_state = vehicle_state or VehicleStateConfig()  # the board's "moving"
        self.path = path or config.sqlite_path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._registry: Registry | None = None
        self._keys = np.empty(0, dtype=np.int32)
        self._dense_by_key: dict[int, int] = {}
        # When set, alarm events to notify are queued in the alarm write's own transaction.
        self.notify_router = notify_router

    # -- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise Misuse("SQLiteHistory used before open() or after close()")
        db = self._db
        try:
            return await to_thread_holding(self._lock, fn, db)
        except sqlite3.OperationalError as exc:  # disk full, locked too long, I/O error
            raise ServiceUnavailable("sqlite", str(exc)) from exc

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Misuse("SQLiteHistory used before open()")
        return self._registry

    async def open(self, registry: Registry) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        sync = self.config.sqlite_synchronous

        def setup(db: sqlite3.Connection) -> dict[str, int]:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            db.executescript(OUTBOX_DDL_SQLITE)
            _migrate_alarms(db)
            _migrate_positions(db)
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO vehicles (id) VALUES (?)", [(v,) for v in registry.ids]
            )
            db.execute("COMMIT")
            return {vid: key for key, vid in db.execute("SELECT key, id FROM vehicles")}

        keys = await self._run(setup)
        self._registry = registry
        self._keys = vehicle_keys_array(registry, keys)
        self._dense_by_key = {int(k): i for i, k in enumerate(self._keys.tolist())}

    def health(self) -> StoreHealth:
        return StoreHealth()

    async def follow_registry(self) -> None:
        """Map the vehicles the registry gained since :meth:`open` (registered live, the
        records issue). Called by every write and read that indexes by registry index."""
        reg = self.registry
        while self._keys.shape[0] < len(reg):
            base = self._keys.shape[0]
            new = list(reg.ids[base:])

            def add(db: sqlite3.Connection, new: list[str] = new) -> dict[str, int]:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT OR IGNORE INTO vehicles (id) VALUES (?)", [(v,) for v in new]
                )
                db.execute("COMMIT")
                marks = ",".join("?" * len(new))
                q = f"SELECT id, key FROM vehicles WHERE id IN ({marks})"
                return {vid: key for vid, key in db.execute(q, new)}

            keys = await self._run(add)
            if self._keys.shape[0] != base:
                continue  # another call mapped them meanwhile
            self._keys = np.concatenate([self._keys, np.array([keys[v] for v in new], np.int32)])
            self._dense_by_key.update({keys[v]: base + k for k, v in enumerate(new)})

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await to_thread_holding(self._lock, db.close)

    # -- writes -----------------------------------------------------------------------------
    async def write_positions(self, batch: PositionBatch) -> int:
        if len(batch) == 0:
            return 0
        await self.follow_registry()
        if int(batch.vehicle.max()) >= self._keys.shape[0] or int(batch.vehicle.min()) < 0:
            raise Misuse("batch.vehicle holds an index outside the registry given to open()")
        b = dedupe_batch(batch)
        mileage = b.mileage.astype(np.float64)
        fuel = b.fuel.astype(np.float64)
        rows = list(
            zip(
                self._keys[b.vehicle].tolist(),
                b.ts.tolist(),
                b.lat.tolist(),
                b.lon.tolist(),
                b.speed.astype(np.float64).tolist(),
                b.heading.tolist(),
                b.alt.tolist(),
                b.acc.tolist(),
                b.alarm_bits.tolist(),
                b.status_bits.tolist(),
                [None if m != m else m for m in mileage.tolist()],
                b.backfill.tolist(),
                b.recv_ts.tolist(),
                [None if f != f else f for f in fuel.tolist()],
                strict=True,
            )
        )

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN")
            try:
                before = db.total_changes
                db.executemany(
                    f"INSERT OR IGNORE INTO positions ({_POS_COLS})"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                n = db.total_changes - before
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return n

        return await self._run(write)

    async def write_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        await self.follow_registry()
        rows = alarm_event_rows(events, self.registry, self._keys)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO alarms (id, vehicle, vehicle_id, plate, org, kind, state,"
                    " started_at, ended_at, ts, lat, lon, severity, backfill, covered, detail)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    f" ON CONFLICT (id) DO UPDATE SET {UPSERT_SET} WHERE {UPSERT_WHERE}",
                    rows,
                )
                if self.notify_router is not None:
                    enqueue_sqlite(db, events, self.notify_router)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(write)

    async def write_dead_letters(self, rows: Sequence[DeadLetter]) -> None:
        if not rows:
            return
        params = [(r.ts_ms, r.topic, r.terminal, r.reason, r.detail, r.payload) for r in rows]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT INTO dead_letters (ts, topic, terminal, reason, detail, payload)"
                    " VALUES (?,?,?,?,?,?)",
                    params,
                )

        await self._run(write)

    # -- reads ------------------------------------------------------------------------------
    async def dead_letters(self, query: DeadLetterQuery) -> list[dict[str, Any]]:
        where, params = query.where("?")
        stmt = (
            "SELECT id, ts, topic, terminal, reason, detail, payload FROM dead_letters"
            f" WHERE {where} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?"
        )
        params += [query.limit, query.offset]

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(stmt, params).fetchall()

        return [dict(zip(DEAD_LETTER_COLS, r, strict=True)) for r in await self._run(read)]

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        where, params = query.where("?")
        stmt = f"SELECT count(*) FROM dead_letters WHERE {where}"

        def read(db: sqlite3.Connection) -> int:
            return int(db.execute(stmt, params).fetchone()[0])

        return await self._run(read)

    async def tracks(
        self, vehicle_ids: Sequence[str], from_ms: int, to_ms: int
    ) -> dict[str, dict[str, npt.NDArray[Any]]]:
        out = {}
        for vid in vehicle_ids:  # one indexed read each: SQLite has no round trip to save
            t = await self.track(vid, from_ms, to_ms)
            if t["ts"].size:
                out[vid] = t
        return out

    async def track(
        self, vehicle_id: str, from_ms: int, to_ms: int, simplify_m: float | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        await self.follow_registry()
        i = self.registry.by_id(vehicle_id)
        cols = list(TRACK_FIELDS)

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if i is None:
                row = db.execute("SELECT key FROM vehicles WHERE id = ?", (vehicle_id,)).fetchone()
                if row is None:
                    return []
                key = row[0]
            else:
                key = int(self._keys[i])
            return db.execute(
                f"SELECT {', '.join(cols)} FROM positions"
                " WHERE vehicle = ? AND ts >= ? AND ts < ? ORDER BY ts",
                (key, from_ms, to_ms),
            ).fetchall()

        rows = await self._run(read)
        if rows:
            transposed = list(zip(*rows, strict=True))
            out = {
                name: np.array(
                    [np.nan if x is None else x for x in col]
                    if name in ("mileage", "fuel")
                    else col,
                    dtype=TRACK_FIELDS[name],
                )
                for name, col in zip(cols, transposed, strict=True)
            }
        else:
            out = {name: np.empty(0, dtype=d) for name, d in TRACK_FIELDS.items()}
        if simplify_m:
            x, y = project_m(out["lat"], out["lon"])
            keep = simplify(x, y, simplify_m)
            out = {k: v[keep] for k, v in out.items()}
        return out

    @staticmethod
    def _alarm_where(q: AlarmQuery) -> tuple[str, list[Any]]:
        where: list[str] = ["1=1"]
        params: list[Any] = []
        for col, op, value in q.conditions():
            if op == "in":
                where.append(f"{col} IN ({','.join('?' * len(value))})")
                params.extend(value)
            elif op == "contains":
                where.append(f"instr(upper({col}), ?) > 0")
                params.append(value)
            else:
                where.append(f"{col} {op} ?")
                params.append(value)
        return " AND ".join(where), params

    async def alarms(self, query: AlarmQuery | None = None) -> list[dict[str, Any]]:
        q = query or AlarmQuery()
        where, params = self._alarm_where(q)
        sql = (
            f"SELECT {_ALARM_COLS} FROM alarms WHERE {where}"
            " ORDER BY started_at DESC, id LIMIT ? OFFSET ?"
        )
        params += [q.limit, q.offset]

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, params).fetchall()

        return [alarm_from_columns(r) for r in await self._run(read)]

    async def count_alarms(self, query: AlarmQuery | None = None) -> int:
        where, params = self._alarm_where(query or AlarmQuery())
        sql = f"SELECT count(*) FROM alarms WHERE {where}"

        def read(db: sqlite3.Connection) -> int:
            return int(db.execute(sql, params).fetchone()[0])

        return await self._run(read)

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

        def write(db: sqlite3.Connection) -> bool:
            with db:
                # Right-hand sides see the row before the update: the first entry wins ack_*.
                cur = db.execute(
                    "UPDATE alarms SET"
                    " acks = json_insert(coalesce(acks, CASE WHEN ack_user IS NULL THEN '[]'"
                    "  ELSE json_array(json_object('user', ack_user,"
                    "  'note', coalesce(ack_note, ''), 'at', ack_at, 'action', 'ack',"
                    "  'handled', json(CASE WHEN handled"
                    "  THEN 'true' ELSE 'false' END))) END), '$[#]', json(?)),"
                    " ack_user = coalesce(ack_user, ?),"
                    " ack_at = CASE WHEN ack_user IS NULL THEN ? ELSE ack_at END,"
                    " ack_note = CASE WHEN ack_user IS NULL THEN ? ELSE ack_note END,"
                    " handled = (coalesce(handled, 0) OR ?)"
                    " WHERE id = ?",
                    (entry, user, at, note, handled, alarm_id),
                )
            return cur.rowcount > 0

        return await self._run(write)

    async def daily_stats(
        self, day: dt.date, tz: str, orgs: Sequence[str] | None = None
    ) -> dict[str, Any]:
        start, end = day_bounds_ms(day, tz)

        def read(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            pos = db.execute(
                "SELECT vehicle, ts, lat, lon, speed, acc FROM positions"
                " WHERE ts >= ? AND ts < ? ORDER BY vehicle, ts",
                (start, end),
            ).fetchall()
            al = db.execute(
                "SELECT vehicle_id, kind, count(*) FROM alarms"
                " WHERE started_at >= ? AND started_at < ? GROUP BY vehicle_id, kind",
                (start, end),
            ).fetchall()
            return pos, al

        await self.follow_registry()
        pos, al = await self._run(read)
        if pos:
            key, ts, lat, lon, speed, acc = (np.array(c) for c in zip(*pos, strict=True))
        else:
            key = ts = np.empty(0, dtype=np.int64)
            lat = lon = speed = np.empty(0)
            acc = np.empty(0, dtype=bool)
        return stats_from_keys(
            self.registry,
            self._dense_by_key,
            day,
            tz,
            orgs,
            key,
            ts,
            lat,
            lon,
            speed,
            acc,
            al,
            moving_speed_kmh=self.vehicle_state.moving_speed_kmh,
        )

    async def save_rule_state(self, name: str, blob: bytes) -> None:
        now = _now_ms()

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO rule_state (name, blob, updated_at) VALUES (?,?,?)"
                    " ON CONFLICT (name) DO UPDATE SET blob = excluded.blob,"
                    " updated_at = excluded.updated_at",
                    (name, blob, now),
                )

        await self._run(write)

    async def save_rule_state_fenced(self, name: str, blob: bytes, epoch: int) -> bool:
        """Save as the owner of ``epoch``; False (refused) when a higher epoch's save is on
        file (issue 19: a node that lost its partition cannot overwrite the new owner's)."""
        now = _now_ms()

        def write(db: sqlite3.Connection) -> bool:
            with db:
                cols = {r[1] for r in db.execute("PRAGMA table_info(rule_state)")}
                if "epoch" not in cols:
                    db.execute("ALTER TABLE rule_state ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
                cur = db.execute(
                    "INSERT INTO rule_state (name, blob, updated_at, epoch) VALUES (?,?,?,?)"
                    " ON CONFLICT (name) DO UPDATE SET blob = excluded.blob,"
                    " updated_at = excluded.updated_at, epoch = excluded.epoch"
                    " WHERE rule_state.epoch <= excluded.epoch",
                    (name, blob, now, epoch),
                )
                return cur.rowcount == 1

        return bool(await self._run(write))

    async def load_rule_state(self, name: str) -> bytes | None:
        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT blob FROM rule_state WHERE name = ?", (name,)).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(read)

    async def apply_retention(self, now_ms: int, *, dry_run: bool = False) -> dict[str, int]:
        c = self.config
        pos_cut = now_ms - c.positions_retention_days * DAY_MS
        alarm_cut = now_ms - c.alarms_retention_days * DAY_MS
        dead_cut = now_ms - c.dead_letters_retention_days * DAY_MS
        # Closed episodes only: an episode still open is kept however old it is.
        where = {
            "positions": ("positions", "ts < ?", pos_cut),
            "alarms": ("alarms", "state = 'closed' AND coalesce(ended_at, ts) < ?", alarm_cut),
            "dead_letters": ("dead_letters", "ts < ?", dead_cut),
        }

        def count(db: sqlite3.Connection) -> dict[str, int]:
            return {
                name: int(
                    db.execute(f"SELECT count(*) FROM {t} WHERE {cond}", (cut,)).fetchone()[0]
                )
                for name, (t, cond, cut) in where.items()
            }

        if dry_run:
            return await self._run(count)
        chunk = c.retention_chunk_rows

        def delete_some(table: str, cond: str, cut: int) -> Callable[[sqlite3.Connection], int]:
            # A bounded delete per transaction: position writes wait for one chunk at most.
            key = "vehicle, ts" if table == "positions" else "rowid"

            def write(db: sqlite3.Connection) -> int:
                with db:
                    return db.execute(
                        f"DELETE FROM {table} WHERE ({key}) IN"
                        f" (SELECT {key} FROM {table} WHERE {cond} LIMIT ?)",
                        (cut, chunk),
                    ).rowcount

            return write

        out: dict[str, int] = {}
        for name, (table, cond, cut) in where.items():
            total = 0
            while True:
                n = await self._run(delete_some(table, cond, cut))
                total += n
                if n < chunk:
                    break
            out[name] = total
        return out
