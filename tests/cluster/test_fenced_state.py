"""Fencing epochs on the rule state: a save of a lower epoch than the one on file is refused.

Real PostgreSQL (private schema; through the spooling writer ``create_history`` builds,
as the engine nodes use it) and SQLite. A database made before the epoch column gets it
on first use, and its old saves count as epoch 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store.config import StoreConfig
from store.factory import create_history
from store.sqlite import SQLiteHistory
from tests.store.conftest import make_registry

SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"

pytestmark = pytest.mark.services


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SQLiteHistory(StoreConfig(), path=str(tmp_path / "h.db"))
    else:
        request.getfixturevalue("postgres")
        cfg = StoreConfig(
            kind="postgres",
            postgres_dsn=SHARED_DSN,
            postgres_schema=f"t_fence_{unique}",
            spool_dir=str(tmp_path / "spool"),
        )
        s = create_history(cfg)
    await s.open(make_registry(4))
    try:
        yield s
    finally:
        await s.close()
        if request.param == "postgres":
            with psycopg.connect(SHARED_DSN, autocommit=True) as c:
                c.execute(f"DROP SCHEMA IF EXISTS t_fence_{unique} CASCADE")


async def test_a_lower_epoch_cannot_overwrite_a_higher_one(store: Any) -> None:
    await store.save_rule_state("rules-engine/p0", b"old")  # a save before the epochs
    assert await store.save_rule_state_fenced("rules-engine/p0", b"first", 5) is True
    assert await store.save_rule_state_fenced("rules-engine/p0", b"stale", 3) is False
    assert await store.load_rule_state("rules-engine/p0") == b"first"
    assert await store.save_rule_state_fenced("rules-engine/p0", b"same", 5) is True
    assert await store.save_rule_state_fenced("rules-engine/p0", b"next", 9) is True
    assert await store.save_rule_state_fenced("rules-engine/p0", b"stale", 5) is False
    assert await store.load_rule_state("rules-engine/p0") == b"next"
    # other names are independent, and the unfenced save still works for them
    assert await store.save_rule_state_fenced("rules-engine/p1", b"p1", 1) is True
    await store.save_rule_state("monthly", b"m")
    assert await store.load_rule_state("monthly") == b"m"
