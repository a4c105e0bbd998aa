"""The durable outbox: messages queued in the alarm's own transaction, claimed with a lease.

Queueing (called by the history store inside ``write_alarm_events``, in the same
transaction as the alarm upsert — so a crash can neither lose a message nor
send one for an alarm that was never stored)::

    enqueue_sqlite(conn, events, router)                 # sqlite3, inside BEGIN ... COMMIT
    await enqueue_postgres(cur, events, router, schema)  # psycopg AsyncCursor, in transaction()
    enqueue_postgres_sync(cur, events, router, schema)   # psycopg Cursor

Delivering (the worker, ``notify.worker``): :meth:`claim` leases due rows for
``lease_ms``; the worker then marks each row ``sent``, failed (back to
``pending`` with a later ``due_at``, or ``dead`` after the last try),
``skipped`` (an escalation already acknowledged) or defers it. A worker that
dies holding a lease loses it when the lease expires: the row is claimed and
delivered again, with the same idempotency key.

Row states::

    pending ──claim──▶ (leased) ──ok──▶ sent
       ▲                   │ fail, tries left: due_at += back-off
       └───────────────────┤
       ▲                   │ fail, last try / permanent failure
       └──── retry(id) ─── dead          (escalation acknowledged) ──▶ skipped

Every method takes ``now`` (epoch ms); nothing here reads a clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from fleetwatch.errors import Misuse, ServiceUnavailable
from notify.message import Notice
from notify.routing import OutboxEntry, Router
from rules.events import AlarmEvent

__all__ = [
    "OUTBOX_DDL_POSTGRES",
    "OUTBOX_DDL_SQLITE",
    "OutboxRow",
    "PostgresOutbox",
    "SQLiteOutbox",
    "enqueue_postgres",
    "enqueue_postgres_sync",
    "enqueue_sqlite",
    "outbox_ddl_postgres",
]

OUTBOX_DDL_SQLITE = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    alarm_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    route TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    digest TEXT,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (due_at, id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notify_outbox_digest ON notify_outbox (digest)
    WHERE digest IS NOT NULL;
CREATE INDEX IF NOT EXISTS notify_outbox_dead ON notify_outbox (updated_at) WHERE state = 'dead';
"""

# ``{schema}`` is filled with a quoted identifier by :func:`outbox_ddl_postgres`.
OUTBOX_DDL_POSTGRES = """
CREATE TABLE IF NOT EXISTS {schema}.notify_outbox (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    alarm_id text NOT NULL,
    purpose text NOT NULL,
    route text NOT NULL,
    channel text NOT NULL,
    payload jsonb NOT NULL,
    created_at int8 NOT NULL,
    due_at int8 NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    attempts int4 NOT NULL DEFAULT 0,
    lease_until int8 NOT NULL DEFAULT 0,
    lease_owner text,
    digest text,
    last_error text,
    updated_at int8 NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_outbox_due ON {schema}.notify_outbox (due_at, id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notify_outbox_digest ON {schema}.notify_outbox (digest)
    WHERE digest IS NOT NULL;
CREATE INDEX IF NOT EXISTS notify_outbox_dead ON {schema}.notify_outbox (updated_at)
    WHERE state = 'dead';
"""

_INSERT_COLS = "key, alarm_id, purpose, route, channel, payload, created_at, due_at, updated_at"
_ROW_COLS = (
    "id, key, alarm_id, purpose, route, channel, payload, created_at, due_at, attempts, digest"
)
_DEAD_COLS = (
    "id, key, alarm_id, purpose, route, channel, created_at, attempts, last_error, updated_at"
)


def outbox_ddl_postgres(schema: str) -> sql.Composed:
    return sql.SQL(OUTBOX_DDL_POSTGRES).format(schema=sql.Identifier(schema))


def _params(entries: Iterable[OutboxEntry]) -> list[tuple[Any, ...]]:
    return [
        (
            e.key,
            e.alarm_id,
            e.purpose,
            e.route,
            e.channel,
            orjson.dumps(e.notice).decode(),  # orjson writes dataclasses natively
            e.created_at,
            e.due_at,
            e.created_at,
        )
        for e in entries
    ]


def enqueue_sqlite(conn: sqlite3.Connection, events: Sequence[AlarmEvent], router: Router) -> int:
    """Queue the messages for ``events`` on ``conn``'s open transaction; returns rows added.

    Call between the store's ``BEGIN`` and ``COMMIT``, after the alarm upsert.
    Idempotent: events queued before add nothing.
    """
    rows = _params(router.plan(events))
    if not rows:
        return 0
    cur = conn.executemany(
        f"INSERT INTO notify_outbox ({_INSERT_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (key) DO NOTHING",
        rows,
    )
    return max(cur.rowcount, 0)


def enqueue_entries_sqlite(conn: sqlite3.Connection, entries: Sequence[OutboxEntry]) -> int:
    """Queue ready-made entries (order messages, :mod:`notify.orders`); idempotent per key."""
    rows = _params(entries)
    if not rows:
        return 0
    cur = conn.executemany(
        f"INSERT INTO notify_outbox ({_INSERT_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (key) DO NOTHING",
        rows,
    )
    return max(cur.rowcount, 0)


def _pg_insert(schema: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.notify_outbox (" + _INSERT_COLS + ")"
        " VALUES (%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s) ON CONFLICT (key) DO NOTHING"
    ).format(sql.Identifier(schema))


async def enqueue_postgres(
    cur: psycopg.AsyncCursor[Any], events: Sequence[AlarmEvent], router: Router, schema: str
) -> int:
    """Queue the messages for ``events`` on ``cur``'s open transaction (async psycopg)."""
    rows = _params(router.plan(events))
    if rows:
        await cur.executemany(_pg_insert(schema), rows)
    return len(rows)


def enqueue_postgres_sync(
    cur: psycopg.Cursor[Any], events: Sequence[AlarmEvent], router: Router, schema: str
) -> int:
    """Queue the messages for ``events`` on ``cur``'s open transaction (sync psycopg)."""
    rows = _params(router.plan(events))
    if rows:
        cur.executemany(_pg_insert(schema), rows)
    return len(rows)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A claimed row."""

    id: int
    key: str
    alarm_id: str
    purpose: str
    route: str
    channel: str
    notice: Notice
    created_at: int
    due_at: int
    attempts: int  # tries before this one
    digest: str | None


def _row(r: Sequence[Any]) -> OutboxRow:
    payload = r[6]
    data = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
    return OutboxRow(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        Notice.from_json(data),
        int(r[7]),
        int(r[8]),
        int(r[9]),
        r[10],
    )


def _dead(r: Sequence[Any]) -> dict[str, Any]:
    names = [c.strip() for c in _DEAD_COLS.split(",")]
    return dict(zip(names, r, strict=True))


class SQLiteOutbox:
    """The worker's side of the outbox in an SQLite file (its own connection, synchronous).

    Use from one thread at a time; ``notify.worker`` runs it in a worker thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(OUTBOX_DDL_SQLITE)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise Misuse("SQLiteOutbox used before open() or after close()")
        return self._db

    def _tx(self, fn: Any) -> Any:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return out
        except sqlite3.OperationalError as exc:
            raise ServiceUnavailable("sqlite", str(exc)) from exc

    def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        """Queue ready-made entries (not alarms: order messages); idempotent per key."""
        n: int = self._tx(lambda db: enqueue_entries_sqlite(db, entries))
        return n

    def claim(self, now: int, lease_ms: int, limit: int, owner: str) -> list[OutboxRow]:
        def run(db: sqlite3.Connection) -> list[OutboxRow]:
            picked = db.execute(
                "SELECT id, digest FROM notify_outbox WHERE state = 'pending' AND due_at <= ?"
                " AND lease_until <= ? ORDER BY due_at, id LIMIT ?",
                (now, now, limit),
            ).fetchall()
            if not picked:
                return []
            ids = [r[0] for r in picked]
            digests = sorted({r[1] for r in picked if r[1] is not None})
            # A digest goes out whole or not at all: take its other rows too.
            rows = db.execute(
                "UPDATE notify_outbox SET lease_until = ?, lease_owner = ? WHERE state = 'pending'"
                " AND lease_until <= ? AND (id IN (SELECT value FROM json_each(?))"
                f" OR digest IN (SELECT value FROM json_each(?))) RETURNING {_ROW_COLS}",
                (now + lease_ms, owner, now, _j(ids), _j(digests)),
            ).fetchall()
            return sorted((_row(r) for r in rows), key=lambda r: (r.due_at, r.id))

        out: list[OutboxRow] = self._tx(run)
        return out

    def _update(self, sql_text: str, params: tuple[Any, ...]) -> int:
        def run(db: sqlite3.Connection) -> int:
            return db.execute(sql_text, params).rowcount

        n: int = self._tx(run)
        return n

    def mark_sent(self, ids: Sequence[int], now: int) -> int:
        return self._update(
            "UPDATE notify_outbox SET state = 'sent', attempts = attempts + 1, lease_until = 0,"
            " lease_owner = NULL, last_error = NULL, updated_at = ?"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'",
            (now, _j(ids)),
        )

    def mark_failed(
        self,
        ids: Sequence[int],
        owner: str,
        now: int,
        next_due: int,
        error: str,
        max_attempts: int,
        permanent: bool = False,
    ) -> int:
        limit = 0 if permanent else max_attempts
        return self._update(
            "UPDATE notify_outbox SET attempts = attempts + 1, last_error = ?, lease_until = 0,"
            " lease_owner = NULL, due_at = ?, updated_at = ?,"
            " state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'pending' END"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'"
            " AND lease_owner = ?",
            (error[:500], next_due, now, limit, _j(ids), owner),
        )

    def mark_skipped(self, ids: Sequence[int], now: int, reason: str) -> int:
        return self._update(
            "UPDATE notify_outbox SET state = 'skipped', last_error = ?, lease_until = 0,"
            " lease_owner = NULL, updated_at = ?"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'",
            (reason, now, _j(ids)),
        )

    def defer(self, ids: Sequence[int], owner: str, now: int, due: int) -> int:
        return self._update(
            "UPDATE notify_outbox SET due_at = ?, lease_until = 0, lease_owner = NULL,"
            " updated_at = ? WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending'"
            " AND lease_owner = ?",
            (due, now, _j(ids), owner),
        )

    def set_digest(self, ids: Sequence[int], owner: str, tag: str) -> int:
        return self._update(
            "UPDATE notify_outbox SET digest = ? WHERE id IN (SELECT value FROM json_each(?))"
            " AND state = 'pending' AND lease_owner = ?",
            (tag, _j(ids), owner),
        )

    def acknowledged(self, alarm_ids: Sequence[str]) -> set[str]:
        """Which of ``alarm_ids`` an operator acknowledged (reads the store's ``alarms``)."""
        if not alarm_ids:
            return set()
        try:
            rows = self.db.execute(
                "SELECT id FROM alarms WHERE ack_user IS NOT NULL"
                " AND id IN (SELECT value FROM json_each(?))",
                (_j(alarm_ids),),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise ServiceUnavailable("sqlite", str(exc)) from exc
        return {r[0] for r in rows}

    def list_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            f"SELECT {_DEAD_COLS} FROM notify_outbox WHERE state = 'dead'"
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_dead(r) for r in rows]

    def retry(self, row_id: int | None, now: int) -> int:
        """Put a dead row (``None``: every dead row) back in the queue, due now, tries reset."""
        where = "state = 'dead'" + (" AND id = ?" if row_id is not None else "")
        params: tuple[Any, ...] = (now, now) + ((row_id,) if row_id is not None else ())
        return self._update(
            "UPDATE notify_outbox SET state = 'pending', attempts = 0, due_at = ?,"
            " lease_until = 0, lease_owner = NULL, digest = NULL, updated_at = ?"
            f" WHERE {where}",
            params,
        )

    def purge(self, before: int) -> int:
        return self._update(
            "DELETE FROM notify_outbox WHERE state IN ('sent', 'skipped') AND updated_at < ?",
            (before,),
        )

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, count(*) FROM notify_outbox GROUP BY state")
        return {str(s): int(n) for s, n in rows}


def _j(values: Sequence[Any]) -> str:
    return orjson.dumps(list(values)).decode()


_PG_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


class PostgresOutbox:
    """The worker's side of the outbox in PostgreSQL (its own async connection).

    Claims use ``FOR UPDATE SKIP LOCKED``, so several workers can share one outbox.
    A lost connection raises :class:`ServiceUnavailable`; the next call reconnects.
    """

    def __init__(self, dsn: str, schema: str, connect_timeout_s: int = 3) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._s = sql.Identifier(schema)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._s))
            await conn.execute(outbox_ddl_postgres(self.schema))

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.dsn, connect_timeout=self.connect_timeout_s
                )
            except _PG_UNAVAILABLE as exc:
                raise ServiceUnavailable("postgresql", str(exc)) from exc
        return self._conn

    async def _tx(self, stmts: Sequence[tuple[sql.Composed, Any]]) -> list[list[Any]]:
        """Run statements in one transaction; the rows each returned (empty if none)."""
        conn = await self._connection()
        out: list[list[Any]] = []
        try:
            async with conn.transaction():
                for stmt, params in stmts:
                    cur = await conn.execute(stmt, params)
                    out.append(await cur.fetchall() if cur.description else [])
        except _PG_UNAVAILABLE as exc:
            await self.close()
            raise ServiceUnavailable("postgresql", str(exc)) from exc
        return out

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(t=sql.SQL("{}.notify_outbox").format(self._s))

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        """Queue ready-made entries (not alarms: order messages); idempotent per key."""
        rows = _params(entries)
        if not rows:
            return 0
        await self._tx([(_pg_insert(self.schema), r) for r in rows])
        return len(rows)

    async def claim(self, now: int, lease_ms: int, limit: int, owner: str) -> list[OutboxRow]:
        conn = await self._connection()
        until = now + lease_ms
        cols = sql.SQL(", ".join("o." + c.strip() for c in _ROW_COLS.split(",")))
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    sql.SQL(
                        "WITH picked AS (SELECT id FROM {t} WHERE state = 'pending'"
                        " AND due_at <= %(now)s AND lease_until <= %(now)s ORDER BY due_at, id"
                        " LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
                        " UPDATE {t} o SET lease_until = %(until)s, lease_owner = %(owner)s"
                        " FROM picked WHERE o.id = picked.id RETURNING {cols}"
                    ).format(t=sql.SQL("{}.notify_outbox").format(self._s), cols=cols),
                    {"now": now, "n": limit, "until": until, "owner": owner},
                )
                rows = [_row(r) for r in await cur.fetchall()]
                digests = sorted({r.digest for r in rows if r.digest is not None})
                if digests:
                    # A digest goes out whole or not at all: take its other rows too.
                    cur = await conn.execute(
                        sql.SQL(
                            "UPDATE {t} o SET lease_until = %(until)s, lease_owner = %(owner)s"
                            " WHERE state = 'pending' AND digest = ANY(%(d)s)"
                            " AND lease_until <= %(now)s RETURNING {cols}"
                        ).format(t=sql.SQL("{}.notify_outbox").format(self._s), cols=cols),
                        {"now": now, "until": until, "owner": owner, "d": digests},
                    )
                    rows += [_row(r) for r in await cur.fetchall()]
        except _PG_UNAVAILABLE as exc:
            await self.close()
            raise ServiceUnavailable("postgresql", str(exc)) from exc
        except psycopg.errors.DeadlockDetected:
            return []  # two workers expanding one digest: the other one has it
        return sorted(rows, key=lambda r: (r.due_at, r.id))

    async def _update(self, text: str, params: dict[str, Any]) -> int:
        conn = await self._connection()
        try:
            async with conn.transaction():
                cur = await conn.execute(self._q(text), params)
                return cur.rowcount
        except _PG_UNAVAILABLE as exc:
            await self.close()
            raise ServiceUnavailable("postgresql", str(exc)) from exc

    async def mark_sent(self, ids: Sequence[int], now: int) -> int:
        return await self._update(
            "UPDATE {t} SET state = 'sent', attempts = attempts + 1, lease_until = 0,"
            " lease_owner = NULL, last_error = NULL, updated_at = %(now)s"
            " WHERE id = ANY(%(ids)s) AND state = 'pending'",
            {"now": now, "ids": list(ids)},
        )

    async def mark_failed(
        self,
        ids: Sequence[int],
        owner: str,
        now: int,
        next_due: int,
        error: str,
        max_attempts: int,
        permanent: bool = False,
    ) -> int:
        return await self._update(
            "UPDATE {t} SET attempts = attempts + 1, last_error = %(err)s, lease_until = 0,"
            " lease_owner = NULL, due_at = %(due)s, updated_at = %(now)s,"
            " state = CASE WHEN attempts + 1 >= %(max)s THEN 'dead' ELSE 'pending' END"
            " WHERE id = ANY(%(ids)s) AND state = 'pending' AND lease_owner = %(owner)s",
            {
                "err": error[:500],
                "due": next_due,
                "now": now,
                "max": 0 if permanent else max_attempts,
                "ids": list(ids),
                "owner": owner,
            },
        )

    async def mark_skipped(self, ids: Sequence[int], now: int, reason: str) -> int:
        return await self._update(
            "UPDATE {t} SET state = 'skipped', last_error = %(r)s, lease_until = 0,"
            " lease_owner = NULL, updated_at = %(now)s WHERE id = ANY(%(ids)s)"
            " AND state = 'pending'",
            {"r": reason, "now": now, "ids": list(ids)},
        )

    async def defer(self, ids: Sequence[int], owner: str, now: int, due: int) -> int:
        return await self._update(
            "UPDATE {t} SET due_at = %(due)s, lease_until = 0, lease_owner = NULL,"
            " updated_at = %(now)s WHERE id = ANY(%(ids)s) AND state = 'pending'"
            " AND lease_owner = %(owner)s",
            {"due": due, "now": now, "ids": list(ids), "owner": owner},
        )

    async def set_digest(self, ids: Sequence[int], owner: str, tag: str) -> int:
        return await self._update(
            "UPDATE {t} SET digest = %(tag)s WHERE id = ANY(%(ids)s) AND state = 'pending'"
            " AND lease_owner = %(owner)s",
            {"tag": tag, "ids": list(ids), "owner": owner},
        )

    async def acknowledged(self, alarm_ids: Sequence[str]) -> set[str]:
        """Which of ``alarm_ids`` an operator acknowledged (reads the store's ``alarms``)."""
        if not alarm_ids:
            return set()
        res = await self._tx(
            [
                (
                    sql.SQL(
                        "SELECT id FROM {}.alarms WHERE ack_user IS NOT NULL AND id = ANY(%s)"
                    ).format(self._s),
                    (list(alarm_ids),),
                )
            ]
        )
        return {r[0] for r in res[0]}

    async def list_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        res = await self._tx(
            [
                (
                    self._q(
                        f"SELECT {_DEAD_COLS} FROM {{t}} WHERE state = 'dead'"
                        " ORDER BY updated_at DESC, id DESC LIMIT %(n)s"
                    ),
                    {"n": limit},
                )
            ]
        )
        return [_dead(r) for r in res[0]]

    async def retry(self, row_id: int | None, now: int) -> int:
        """Put a dead row (``None``: every dead row) back in the queue, due now, tries reset."""
        where = "state = 'dead'" + (" AND id = %(id)s" if row_id is not None else "")
        return await self._update(
            "UPDATE {t} SET state = 'pending', attempts = 0, due_at = %(now)s, lease_until = 0,"
            f" lease_owner = NULL, digest = NULL, updated_at = %(now)s WHERE {where}",
            {"now": now, "id": row_id},
        )

    async def purge(self, before: int) -> int:
        return await self._update(
            "DELETE FROM {t} WHERE state IN ('sent', 'skipped') AND updated_at < %(b)s",
            {"b": before},
        )

    async def counts(self) -> dict[str, int]:
        res = await self._tx([(self._q("SELECT state, count(*) FROM {t} GROUP BY state"), None)])
        return {str(s): int(n) for s, n in res[0]}
