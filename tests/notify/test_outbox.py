"""The outbox on real SQLite files and the real PostgreSQL: atomic with the alarm, leased claims."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fleet.registry import Registry
from notify.config import NotifyConfig
from notify.outbox import (
    PostgresOutbox,
    SQLiteOutbox,
    enqueue_postgres,
    enqueue_postgres_sync,
    enqueue_sqlite,
)
from notify.routing import Router
from tests.notify.conftest import DSN, T0, event, sqlite_db, write_alarms_sqlite


def router(registry: Registry, **route: object) -> Router:
    cfg = NotifyConfig.model_validate(
        {
            "channels": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x"}],
            "routes": [{"name": "duty", "channels": ["hook"], **route}],
        }
    )
    return Router(cfg, registry)


def count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- SQLite ------------------------------------------------------------------------------------
def test_sqlite_rollback_leaves_neither_commit_keeps_both(
    registry: Registry, tmp_path: Path
) -> None:
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    r = router(registry)
    evs = [event(registry, 0), event(registry, 1)]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO alarms (id, state, ts) VALUES (?,?,?)", [(e.id, e.state, e.ts) for e in evs]
    )
    assert enqueue_sqlite(db, evs, r) == 2
    db.execute("ROLLBACK")
    assert count(db, "alarms") == 0 and count(db, "notify_outbox") == 0

    assert write_alarms_sqlite(db, evs, r) == 2
    other = sqlite3.connect(path)  # what a second process sees after the commit
    assert count(other, "alarms") == 2 and count(other, "notify_outbox") == 2
    # The same events again (a redelivered batch): nothing new queued.
    assert write_alarms_sqlite(db, evs, r) == 0
    assert count(other, "notify_outbox") == 2
    other.close()


def test_sqlite_failure_inside_the_transaction_queues_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    db = sqlite_db(str(tmp_path / "h.db"))
    db.execute("DROP TABLE notify_outbox")  # enqueue fails after the alarm upsert
    with pytest.raises(sqlite3.OperationalError):
        write_alarms_sqlite(db, [event(registry, 0)], router(registry))
    assert count(db, "alarms") == 0


def test_sqlite_claim_lease_fail_dead_retry(registry: Registry, tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    write_alarms_sqlite(db, [event(registry, i) for i in range(3)], router(registry))
    ob = SQLiteOutbox(path)
    ob.open()
    now = T0 + 1000
    a = ob.claim(now, 30_000, 10, "A")
    assert len(a) == 3 and [r.attempts for r in a] == [0, 0, 0]
    assert ob.claim(now + 1, 30_000, 10, "B") == []  # leased
    ob.mark_sent([a[0].id], now + 2)
    ob.mark_failed([a[1].id], "A", now + 2, now + 5000, "HTTP 503", max_attempts=2)
    # the failed row is due again after its back-off; a[2] is still leased by A
    b = ob.claim(now + 10_000, 30_000, 10, "B")
    assert [r.id for r in b] == [a[1].id] and b[0].attempts == 1
    # A "died" holding a[2]: once its lease runs out someone else takes it
    c = ob.claim(now + 31_000, 30_000, 10, "C")
    assert [r.id for r in c] == [a[2].id]
    # a stale owner cannot record a failure on a row it no longer holds
    assert ob.mark_failed([a[2].id], "A", now, now, "late", max_attempts=2) == 0
    ob.mark_failed([a[1].id], "B", now + 32_000, now + 40_000, "HTTP 503", max_attempts=2)
    dead = ob.list_dead()
    assert [d["id"] for d in dead] == [a[1].id]
    assert dead[0]["attempts"] == 2 and dead[0]["last_error"] == "HTTP 503"
    assert ob.retry(a[1].id, now + 50_000) == 1
    assert ob.retry(a[1].id, now + 50_000) == 0  # no longer dead
    d = ob.claim(now + 50_000, 30_000, 10, "D")
    assert [r.id for r in d] == [a[1].id] and d[0].attempts == 0
    assert ob.counts() == {"sent": 1, "pending": 2}
    ob.close()


def test_sqlite_digest_is_claimed_whole(registry: Registry, tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    write_alarms_sqlite(db, [event(registry, i) for i in range(4)], router(registry))
    ob = SQLiteOutbox(path)
    ob.open()
    rows = ob.claim(T0, 1000, 10, "A")
    ob.set_digest([r.id for r in rows[1:]], "A", "fw-digest-x")
    ob.mark_failed([r.id for r in rows], "A", T0, T0, "down", max_attempts=5)
    part = ob.claim(T0 + 1, 1000, 2, "B")  # limit 2, but the digest comes whole
    assert len(part) == 4 and {r.digest for r in part[1:]} == {"fw-digest-x"}
    ob.close()


def test_acknowledged_reads_the_alarms_table(registry: Registry, tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    evs = [event(registry, 0), event(registry, 1)]
    write_alarms_sqlite(db, evs, router(registry))
    db.execute("UPDATE alarms SET ack_user = 'zhang' WHERE id = ?", (evs[1].id,))
    ob = SQLiteOutbox(path)
    ob.open()
    assert ob.acknowledged([e.id for e in evs] + ["nope"]) == {evs[1].id}
    ob.close()


# -- PostgreSQL --------------------------------------------------------------------------------
def _alarm_sql(schema: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.alarms (id, state, ts) VALUES (%s,%s,%s) ON CONFLICT (id) DO NOTHING"
    ).format(sql.Identifier(schema))


def _pg_count(schema: str, table: str) -> int:
    with psycopg.connect(DSN) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
        assert row is not None
        return int(row[0])


class Boom(Exception):
    pass


@pytest.mark.services
async def test_postgres_async_rollback_and_commit(registry: Registry, pg_schema: str) -> None:
    r = router(registry)
    evs = [event(registry, 0), event(registry, 1, action="close", ts=T0 + 9000)]
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        with pytest.raises(Boom):
            async with conn.transaction():
                cur = conn.cursor()
                await cur.executemany(_alarm_sql(pg_schema), [(e.id, e.state, e.ts) for e in evs])
                assert await enqueue_postgres(cur, evs, r, pg_schema) == 2
                raise Boom
        assert _pg_count(pg_schema, "alarms") == 0
        assert _pg_count(pg_schema, "notify_outbox") == 0
        for _ in range(2):  # the second time is a redelivery: nothing new
            async with conn.transaction():
                cur = conn.cursor()
                await cur.executemany(_alarm_sql(pg_schema), [(e.id, e.state, e.ts) for e in evs])
                await enqueue_postgres(cur, evs, r, pg_schema)
    assert _pg_count(pg_schema, "alarms") == 2
    assert _pg_count(pg_schema, "notify_outbox") == 2


@pytest.mark.services
def test_postgres_sync_cursor(registry: Registry, pg_schema: str) -> None:
    r = router(registry)
    evs = [event(registry, 2)]
    with psycopg.connect(DSN) as conn:
        with pytest.raises(Boom), conn.transaction():
            cur = conn.cursor()
            cur.executemany(_alarm_sql(pg_schema), [(e.id, e.state, e.ts) for e in evs])
            enqueue_postgres_sync(cur, evs, r, pg_schema)
            raise Boom
        assert _pg_count(pg_schema, "notify_outbox") == 0
        with conn.transaction():
            cur = conn.cursor()
            cur.executemany(_alarm_sql(pg_schema), [(e.id, e.state, e.ts) for e in evs])
            enqueue_postgres_sync(cur, evs, r, pg_schema)
    assert _pg_count(pg_schema, "notify_outbox") == 1


@pytest.mark.services
async def test_postgres_claims_do_not_overlap(registry: Registry, pg_schema: str) -> None:
    r = router(registry)
    evs = [event(registry, i % 12, started_at=T0 + i) for i in range(40)]
    async with await psycopg.AsyncConnection.connect(DSN) as conn, conn.transaction():
        cur = conn.cursor()
        await cur.executemany(_alarm_sql(pg_schema), [(e.id, e.state, e.ts) for e in evs])
        await enqueue_postgres(cur, evs, r, pg_schema)
    a, b = PostgresOutbox(DSN, pg_schema), PostgresOutbox(DSN, pg_schema)
    await a.open()
    await b.open()
    now = T0 + 100
    ra = await a.claim(now, 60_000, 25, "A")
    rb = await b.claim(now, 60_000, 25, "B")
    assert len(ra) == 25 and len(rb) == 15
    assert not {x.id for x in ra} & {x.id for x in rb}
    await a.mark_sent([x.id for x in ra], now)
    await b.mark_failed([x.id for x in rb], "B", now, now, "503", max_attempts=1)
    assert await a.counts() == {"sent": 25, "dead": 15}
    dead = await a.list_dead(limit=5)
    assert len(dead) == 5 and dead[0]["last_error"] == "503"
    assert await a.retry(dead[0]["id"], now) == 1
    assert await a.retry(None, now) == 14
    await a.close()
    await b.close()
