"""``store.postgres_dsn`` naming two hosts, as a Patroni pair is reached without a proxy.

``postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write``: libpq's rules, which
psycopg's async connect follows too — hosts in order, a host that does not answer or is
read-only (a standby) is skipped. Checked against real servers: a private PostgreSQL made
read-only (what a standby reports) and the shared one; then the primary stops and the
history store's next write lands on the other host.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from store.config import StoreConfig
from store.postgres import PostgresHistory
from tests.conftest import free_port
from tests.private_services import PrivatePostgres
from tests.store.conftest import SHARED_DSN, make_registry
from tests.store.test_history import drive

pytestmark = pytest.mark.services


async def _ports(store: PostgresHistory) -> set[int]:
    async def port(conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute("SELECT inet_server_port()")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    return {await store._on("write", port), await store._on("read", port)}


def _drop(schema: str) -> None:
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_a_standby_and_a_dead_host_are_skipped(
    private_postgres: PrivatePostgres, unique: str
) -> None:
    with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")  # like a standby
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)
    schema = f"t_multi_{unique}"
    reg = make_registry(3)
    now = time.time_ns() // 1_000_000
    try:
        for first in (f"127.0.0.1:{private_postgres.port}", f"127.0.0.1:{free_port()}"):
            dsn = (
                f"postgresql://postgres@{first},127.0.0.1:5432/test?target_session_attrs=read-write"
            )
            cfg = StoreConfig(kind="postgres", postgres_dsn=dsn, postgres_schema=schema)
            store = PostgresHistory(cfg)
            await store.open(reg)
            await store.write_positions(drive(1, now - 60_000, 3))
            assert (await store.track("veh001", now - DAY, now))["ts"].size == 3
            assert await _ports(store) == {5432}
            await store.close()
    finally:
        _drop(schema)


DAY = 86_400_000


async def test_writes_follow_the_primary_to_the_other_host(
    private_postgres: PrivatePostgres, unique: str
) -> None:
    with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
    schema = f"t_multi_{unique}"
    dsn = (
        f"postgresql://postgres@127.0.0.1:{private_postgres.port},127.0.0.1:5432/test"
        "?target_session_attrs=read-write"
    )
    store = PostgresHistory(StoreConfig(kind="postgres", postgres_dsn=dsn, postgres_schema=schema))
    reg = make_registry(3)
    now = time.time_ns() // 1_000_000
    try:
        await store.open(reg)
        assert await _ports(store) == {private_postgres.port}
        private_postgres.stop("immediate")  # the primary dies; the "standby" is promoted
        # The shared server stands in for the promoted standby: it needs the schema, which
        # a real standby has by replication.
        boot = PostgresHistory(
            StoreConfig(kind="postgres", postgres_dsn=SHARED_DSN, postgres_schema=schema)
        )
        await boot.open(reg)
        await boot.close()
        # The kept connection is dead: the store reconnects (its one retry) to the next host.
        await store.write_positions(drive(2, now - 60_000, 4))
        assert (await store.track("veh002", now - DAY, now))["ts"].size == 4
        assert await _ports(store) == {5432}
        await store.close()
    finally:
        _drop(schema)
