"""The whole web app under uvicorn on a free port, for tests over real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.web.conftest import Built, build
from web.headers import HTTP_SERVER_OPTIONS

__all__ = ["running"]


@asynccontextmanager
async def running(tmp: Path, **web: Any) -> AsyncIterator[tuple[Built, str, httpx.AsyncClient]]:
    """The whole app under uvicorn: (built, ws url, http client)."""
    b = await build(tmp, **web)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            b.app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            **HTTP_SERVER_OPTIONS,
        )
    )
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            yield b, f"ws://127.0.0.1:{port}/ws/live", c
    finally:
        srv.should_exit = True
        await task
        await b.ctx.history.close()
