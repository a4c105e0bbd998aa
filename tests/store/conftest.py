"""Fixtures of the store tests: a registry, private schemas, and throwaway servers.

The shared PostgreSQL and Redis are never stopped: outage tests start their own
PostgreSQL cluster (initdb + pg_ctl as the ``postgres`` user, in a temp dir)
and their own redis-server, each on a free port, and stop/start those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from fleetwatch.config import OrgConfig, VehicleConfig
from fleetwatch.registry import OrgTree, Registry
from store.config import LiveConfig, StoreConfig
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory
from tests.conftest import IN_CI, free_port, port_open

PG_BIN = Path("/usr/lib/postgresql/15/bin")
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


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster on a free port (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    def _as_postgres(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "30",
                "-l",
                str(self.dir / "log"),
                "-o",
                opts,
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30"]
        )

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        _missing(f"PostgreSQL server binaries not found in {PG_BIN}")
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


class PrivateRedis:
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server not installed")
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.stop()
