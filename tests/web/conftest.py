"""An app built from real in-memory parts: FeedCore, SQLite history, LiveFences, accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fleet.registry import Registry
from fleetwatch.config import Config, parse_config
from stream.feed import FeedCore
from web.app import create_app
from web.context import AppContext

T0 = 1_764_034_200_000  # 2025-11-25 09:30 +08:00
PASSWORD = "correct horse 42"

# A demo-grade, fast argon2 hash would still be argon2: users here are seeded with the
# plain password (allowed for demos) and hashed at start-up.


def web_config(tmp: Path, store: dict[str, Any] | None = None, **web: Any) -> Config:
    return parse_config(
        {
            "store": store or {"kind": "sqlite", "sqlite_path": str(tmp / "history.db")},
            "orgs": [
                {"id": "city", "name": "广安市"},
                {"id": "wusheng", "name": "武胜县", "parent": "city"},
                {"id": "yuechi", "name": "岳池县", "parent": "city"},
                {"id": "ws-police", "name": "武胜县公安局", "parent": "wusheng"},
            ],
            "vehicles": [
                {"id": "V1", "plate": "川X10001", "terminal": "10001", "org": "city"},
                {"id": "V2", "plate": "川X<b>2</b>", "terminal": "10002", "org": "wusheng"},
                {"id": "V3", "plate": "川X10003", "terminal": "10003", "org": "ws-police"},
                {"id": "V4", "plate": "川X10004", "terminal": "10004", "org": "yuechi"},
            ],
            "web": {
                "tokens": [{"token": "demo-token-city", "org": "city", "role": "viewer"}],
                "users": [
                    {"username": "admin", "password": PASSWORD, "org": "city", "role": "admin"},
                    {
                        "username": "ws-op",
                        "password": PASSWORD,
                        "org": "wusheng",
                        "role": "operator",
                    },
                    {
                        "username": "yc-op",
                        "password": PASSWORD,
                        "org": "yuechi",
                        "role": "operator",
                    },
                    {"username": "viewer", "password": PASSWORD, "org": "city", "role": "viewer"},
                ],
                "establishment": {"wusheng": 3, "yuechi": 2, "city": 1},
                "tiles": [{"name": "none", "url": ""}],
                "feed_interval_ms": 100,
                **web,
            },
        },
        source=str(tmp / "fleetwatch.toml"),
    )


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class Built:
    app: Starlette
    ctx: AppContext
    clock: Clock


async def build(tmp: Path, clock: Clock | None = None, **web: Any) -> Built:
    from geofence.index import LiveFences
    from store.sqlite import SQLiteHistory

    cfg = web_config(tmp, **web)
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    clock = clock or Clock()
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        fences=LiveFences(),
        clock_ms=clock,
    )
    return Built(create_app(ctx), ctx, clock)


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    b = await build(tmp_path)
    async with b.app.router.lifespan_context(b.app):
        yield b
    await b.ctx.history.close()


@pytest.fixture
async def client(built: Built) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=built.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
        yield c


async def login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await client.post("/api/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}
