"""The registration store: SQLite file and the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ingest.jt808.config import GatewayConfig
from ingest.jt808.registrations import (
    RedisRegistrations,
    RegistrationStore,
    SqliteRegistrations,
    open_registrations,
)

Opener = Callable[[], RegistrationStore]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Opener]:
    """Opens a new store on the same data each call (a restarted or another gateway node)."""
    if request.param == "sqlite":
        path = tmp_path / "reg.sqlite3"
        yield lambda: SqliteRegistrations(path)
        return
    host, port = request.getfixturevalue("redis_server")
    url, prefix = f"redis://{host}:{port}/0", f"test:{unique}:gw:"
    yield lambda: RedisRegistrations(url, prefix)
    r = aioredis.Redis.from_url(url)
    keys = [k async for k in r.scan_iter(f"{prefix}*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def test_claim_once_reset_claim_again(opener: Opener) -> None:
    store = opener()
    try:
        assert await store.current("13900000001") is None
        assert await store.claim("13900000001") == 1
        assert await store.claim("013900000001") is None  # the same terminal, padded
        assert await store.current("13900000001") == 1
        assert await store.claim("13900000002") == 1  # another terminal
        assert await store.reset("13900000001") is True
        assert await store.reset("13900000001") is False
        assert await store.current("13900000001") is None
        assert await store.claim("13900000001") == 2  # a new registration, a new number
    finally:
        await store.close()
    # A restarted gateway sees the same registrations.
    again = opener()
    try:
        assert await again.current("13900000001") == 2
        assert await again.claim("13900000001") is None
    finally:
        await again.close()


async def test_of_two_nodes_racing_one_wins(opener: Opener) -> None:
    nodes = [opener() for _ in range(4)]
    try:
        got = await asyncio.gather(*(n.claim("13900000009") for n in nodes for _ in range(5)))
    finally:
        for n in nodes:
            await n.close()
    assert sorted(got, key=lambda x: x or 0) == [None] * 19 + [1]


def test_the_configuration_names_the_store(tmp_path: Path) -> None:
    s = open_registrations(GatewayConfig(registrations=f"sqlite:{tmp_path}/r.sqlite3"))
    assert isinstance(s, SqliteRegistrations) and s.path == tmp_path / "r.sqlite3"
    r = open_registrations(GatewayConfig(registrations="redis://127.0.0.1:6379/3"))
    assert isinstance(r, RedisRegistrations)
    with pytest.raises(ValueError, match="registrations"):
        GatewayConfig(registrations="postgres://x")
    asyncio.run(r.close())
