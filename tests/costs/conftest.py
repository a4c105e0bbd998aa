"""An app with a real record store (SQLite or PostgreSQL), tracks in real SQLite history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from fleet.batch import PositionBatch
from store.config import StoreConfig
from store.records import RecordStore, load_fleet
from tests.web.conftest import Built, build

SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Built]:
    b = await build(tmp_path)
    schema = None
    if request.param == "sqlite":
        store = RecordStore(StoreConfig(), path=str(tmp_path / "records.db"))
    else:
        request.getfixturevalue("postgres")
        schema = f"t_costs_{unique}"
        store = RecordStore(
            StoreConfig(kind="postgres", postgres_dsn=SHARED_DSN, postgres_schema=schema)
        )
    await store.open()
    await load_fleet(store, b.ctx.registry, b.ctx.config.vehicles, b.clock.now)
    b.ctx.vehicle_records = store
    async with b.app.router.lifespan_context(b.app):
        yield b
    await store.close()
    await b.ctx.history.close()
    if schema:
        with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
async def client(app: Built) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app), base_url="http://fw"
    ) as c:
        yield c


def drive(start: int, minutes: int, lat0: float, lon0: float = 106.225) -> dict[str, np.ndarray]:
    """A 36 km/h drive north, one point every 10 s, ACC off at the end."""
    n = minutes * 6 + 1
    moving = np.ones(n, bool)
    moving[-1] = False
    return {
        "ts": start + np.arange(n, dtype=np.int64) * 10_000,
        "lat": lat0 + np.arange(n) * 0.0009,
        "lon": np.full(n, lon0),
        "speed": np.where(moving, 36.0, 0.0).astype(np.float32),
        "acc": moving,
    }


async def write_track(b: Built, vehicle_id: str, parts: list[dict[str, np.ndarray]]) -> None:
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    i = b.ctx.registry.by_id(vehicle_id)
    assert i is not None
    await b.ctx.history.write_positions(
        PositionBatch.from_columns(vehicle=np.full(len(cols["ts"]), i, np.int32), **cols)
    )


# The store tests' history fixture (each backend on the test registry) for the fuel-level test.
from tests.store.conftest import history, pg_config, registry  # noqa: E402, F401
