"""A real page to drive: uvicorn on 127.0.0.1 serving the built application, with a fleet
placed in two counties, an SQLite history and alarms pushed the way the pipeline pushes them
(history first, then the live feed). Shared by the browser tests of the monitoring desk."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from fleet.batch import PositionBatch
from fleet.events import AlarmEvent
from fleet.registry import Registry
from fleetwatch.config import parse_config
from stream.feed import FeedCore
from tests.conftest import CHROMIUM, free_port
from web.app import create_app
from web.bench import wait_js as bench_wait_js
from web.context import AppContext

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "artifacts"
PASSWORD = "desk test pw"
# Two counties far enough apart that "the map opens on the county" is measurable.
# (Near the real counties' middles: with the shipped boundaries the map fits the county outline.)
CENTRES = {"wusheng": (30.36, 106.20), "yuechi": (30.54, 106.44)}


def require_built_page() -> None:
    if not (ROOT / "web/static/app/index.html").exists():
        pytest.fail("the page is not built: make assets")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make system-deps)")


def page_config(tmp: Path, port: int, n: int, **web: Any) -> Any:
    orgs = [
        {"id": "city", "name": "广安市"},
        {"id": "wusheng", "name": "武胜县", "parent": "city"},
        {"id": "yuechi", "name": "岳池县", "parent": "city"},
    ]
    vehicles = [
        {
            "id": f"V{i:05d}",
            "plate": f"川X{i:05d}",
            "terminal": f"1{i:010d}",
            "org": "wusheng" if i % 2 else "yuechi",
        }
        for i in range(n)
    ]
    return parse_config(
        {
            "store": {"kind": "sqlite", "sqlite_path": str(tmp / "h.db")},
            "orgs": orgs,
            "vehicles": vehicles,
            "web": {
                "port": port,
                "feed_interval_ms": 200,
                "tiles": [{"name": "none", "url": ""}],
                "establishment": {"wusheng": n, "yuechi": n},
                "users": [
                    {"username": "op", "password": PASSWORD, "org": "city", "role": "operator"},
                    {"username": "ws", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
                ],
                **web,
            },
        },
        source=str(tmp / "fw.toml"),
    )


@dataclass
class Served:
    url: str
    ctx: AppContext
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    app: Any

    async def stop(self) -> None:
        """Stop the web server as a crash or a network cut would look to the page."""
        self.server.should_exit = True
        await self.task

    async def start(self) -> None:
        """Start it again on the same port with the same engine (the feed keeps its seq)."""
        self.server, self.task = await _start(self.app, self.port)

    def push(self, ev: AlarmEvent) -> None:
        self.ctx.feed.alarm(ev)

    async def record(self, ev: AlarmEvent) -> None:
        assert self.ctx.history is not None
        await self.ctx.history.write_alarm_events([ev])
        self.ctx.feed.alarm(ev)


async def _start(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        await asyncio.sleep(0.02)
    return server, task


@contextlib.asynccontextmanager
async def serve(
    tmp: Path, n: int = 200, *, age_s: float = 0.0, **web: Any
) -> AsyncIterator[Served]:
    from store.sqlite import SQLiteHistory

    port = free_port()
    cfg = page_config(tmp, port, n, **web)
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=cfg.web.feed_interval_ms),
        history=history,
    )
    now = int(time.time() * 1000)
    rng = np.random.default_rng(3)
    idx = np.arange(n)
    centre = np.array([CENTRES["wusheng" if i % 2 else "yuechi"] for i in idx]).reshape(n, 2)
    ctx.feed.positions(
        PositionBatch.from_columns(
            vehicle=idx,
            ts=np.full(n, now - int(age_s * 1000)),
            lat=centre[:, 0] + rng.normal(0, 0.03, n),
            lon=centre[:, 1] + rng.normal(0, 0.03, n),
            speed=rng.uniform(0, 80, n).astype(np.float32),
            heading=rng.integers(0, 360, n).astype(np.int16),
            acc=np.ones(n, dtype=bool),
        )
    )
    app = create_app(ctx)
    server, task = await _start(app, port)
    served = Served(f"http://127.0.0.1:{port}", ctx, port, server, task, app)
    try:
        yield served
    finally:
        if not served.task.done():
            await served.stop()
        await history.close()


def alarm_event(
    served: Served,
    v: int,
    kind: str,
    *,
    sub: str | None = None,
    action: str = "open",
    started_at: int | None = None,
    severity: str = "warning",
    detail: dict[str, Any] | None = None,
) -> AlarmEvent:
    started = started_at if started_at is not None else int(time.time() * 1000) - 65_000
    vid = f"V{v:05d}"
    key = f"{kind}.{sub}" if sub else kind
    lat, lon = CENTRES["wusheng" if v % 2 else "yuechi"]
    now = int(time.time() * 1000)
    return AlarmEvent(
        id=f"{vid}:{key}:{started}",
        vehicle=v,
        vehicle_id=vid,
        kind=kind,
        action=action,  # type: ignore[arg-type]
        started_at=started,
        ts=now,
        ended_at=now if action == "close" else None,
        lat=lat,
        lon=lon,
        severity=severity,  # type: ignore[arg-type]
        detail=dict(detail or {}),
    )


async def log_in(page: Any, url: str, user: str = "op") -> None:
    await page.goto(url + "/")
    await page.fill("#login-user", user)
    await page.fill("#login-pass", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#main")
    await wait_js(page, "document.querySelector('#conn').classList.contains('up')")


async def tones(page: Any) -> list[str]:
    return list(await page.evaluate("window.fw.sound.played.map(p => p.tone)"))


async def has_route(served: Served, path: str) -> bool:
    """Whether this tree's API has a route (a piece another helper adds; CONTRACTS.md)."""
    async with httpx.AsyncClient() as client:
        doc = (await client.get(served.url + "/api/openapi.json", timeout=5)).json()
    return path in doc.get("paths", {})


async def revoke(served: Served, token: str) -> None:
    """End a session from elsewhere (another tab logging out, an admin)."""
    async with httpx.AsyncClient() as client:
        r = await client.post(
            served.url + "/api/logout", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    assert r.status_code == 200, r.text


async def wait_js(
    page: Any, expr: str, arg: Any = None, *, timeout: float = 30_000, polling: float = 50
) -> Any:
    """``page.wait_for_function`` without eval, in Playwright's units (ms): the page bench's
    :func:`web.bench.wait_js` (polls with ``page.evaluate`` over the DevTools protocol, so it
    works under the page's ``script-src 'self'``). Returns the truthy value."""
    return await bench_wait_js(page, expr, arg, timeout_s=timeout / 1000, poll_s=polling / 1000)
