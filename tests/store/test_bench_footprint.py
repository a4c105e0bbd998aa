"""The footprint part of ``fleetwatch bench store`` on a small fleet (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from store import bench
from store.config import StoreConfig
from tests.store.conftest import SHARED_DSN

pytestmark = pytest.mark.services


@pytest.fixture
def foot_config(postgres: tuple[str, int], unique: str) -> Iterator[StoreConfig]:
    schema = f"t_foot_{unique}"
    yield StoreConfig(kind="postgres", postgres_dsn=SHARED_DSN, postgres_schema=schema)
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_footprint_measures_and_projects(foot_config: StoreConfig) -> None:
    f = await bench._footprint(foot_config, 6)
    assert f["positions"] == 6 * 8640
    # One row per position costs more than 100 B; packed days are far under the goal.
    assert f["hot_bytes_per_position"] > 100
    assert f["hot_legacy_layout_bytes_per_position"] > f["hot_bytes_per_position"]
    assert 0 < f["packed_bytes_per_position"] < bench.TARGET_PACKED_B
    assert 0 < f["packed_bytes_per_position_30s"] < bench.TARGET_PACKED_B
    assert f["met"] is True
    p = f["projection"]["every_10s"]
    hot_days = f["projection"]["hot_days_kept"]
    want = (
        10_000 * (183 - hot_days) * 8640 * p["packed_bytes_per_position"]
        + 10_000 * hot_days * 8640 * f["hot_bytes_per_position"]
    ) / 1e9
    assert abs(p["gb_packed_plain_postgresql"] - want) < 0.5 + want * 0.01
    assert p["gb_packed_plain_postgresql"] < p["gb_all_hot"] < p["gb_all_hot_legacy_layout"]
    est = f["timescaledb_compression_estimate"]
    assert est["measured"] is False and "tigerdata.com" in est["source"]
    assert est["bytes_per_position"] == pytest.approx(f["hot_bytes_per_position"] / 10, abs=0.1)
