"""Fixtures of the store tests: a registry, private schemas, and throwaway servers.

The shared PostgreSQL and Redis are never stopped: outage tests start their own
PostgreSQL cluster (initdb + pg_ctl as the ``postgres`` user, in a temp dir)
and their own redis-server, each on a free port, and stop/start those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from store.config import LiveConfig, StoreConfig
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory
from tests.conftest import IN_CI

SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"

ORGS = [
    OrgConfig(id="city", name="广安市"),
    OrgConfig(id="qx", name="前锋区", parent="city"),
    OrgConfig(id="ws", name="武胜县", parent="city"),
]


def make_registry(n: int = 20, *, reverse: bool = False) -> Registry:
    vehicles = [
        VehicleConfig(
            id=f"veh{i:03d}",
            plate=f"川X{i:05d}",
            terminal=f"13800{i:06d}",
            org=("qx", "ws", "city")[i % 3],
        )
        for i in range(n)
    ]
    if reverse:
        vehicles.reverse()
    return Registry(vehicles, OrgTree.from_config(ORGS))


def _missing(msg: str) -> None:
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def pg_config(postgres: tuple[str, int], unique: str) -> Iterator[StoreConfig]:
    """A StoreConfig on the shared test database with a private schema, dropped afterwards."""
    schema = f"t_store_{unique}"
    yield StoreConfig(kind="postgres", postgres_dsn=SHARED_DSN, postgres_schema=schema)
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
async def history(
    request: pytest.FixtureRequest, registry: Registry, tmp_path: Path
) -> AsyncIterator[SQLiteHistory | PostgresHistory]:
    """Each history store, opened on the test registry."""
    store: SQLiteHistory | PostgresHistory
    if request.param == "sqlite":
        store = SQLiteHistory(StoreConfig(), path=str(tmp_path / "history.db"))
    else:
        store = PostgresHistory(request.getfixturevalue("pg_config"))
    await store.open(registry)
    yield store
    await store.close()


@pytest.fixture
def redis_live_config(redis_server: tuple[str, int], unique: str) -> Iterator[LiveConfig]:
    cfg = LiveConfig(kind="redis", redis_url="redis://127.0.0.1:6379/0", key_prefix=f"t{unique}:")
    yield cfg
    import redis

    r = redis.Redis.from_url(cfg.redis_url)
    keys = list(r.scan_iter(match=f"{cfg.key_prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()
