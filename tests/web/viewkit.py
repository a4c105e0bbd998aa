"""Helpers of the browser tests of the history, playback, board and system views: a page with
its errors collected, what this tree's API offers (pieces other helpers add, CONTRACTS.md),
and the rows of an Element Plus table."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.web.pagekit import PASSWORD, require_built_page, wait_js

ADMIN = {"username": "adm", "password": PASSWORD, "org": "city", "role": "admin"}
USERS = [
    {"username": "op", "password": PASSWORD, "org": "city", "role": "operator"},
    {"username": "ws", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
    ADMIN,
]


@contextlib.asynccontextmanager
async def open_page(chromium: Any, **kw: Any) -> AsyncIterator[Any]:
    """A new page (1400×900 unless said); its uncaught errors in ``page.errors``."""
    require_built_page()
    page = await chromium.new_page(
        viewport=kw.pop("viewport", {"width": 1400, "height": 900}), **kw
    )
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    try:
        yield page
    finally:
        await page.close()


async def api_params(url: str, path: str, method: str = "get") -> set[str] | None:
    """The query parameters this tree's API documents for a route, None if no such route."""
    async with httpx.AsyncClient() as client:
        doc = (await client.get(url + "/api/openapi.json", timeout=5)).json()
    op = doc.get("paths", {}).get(path, {}).get(method)
    if op is None:
        return None
    return {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}


async def log_in_as(page: Any, url: str, user: str, password: str = PASSWORD) -> None:
    await page.goto(url + "/")
    await page.fill("#login-user", user)
    await page.fill("#login-pass", password)
    await page.click("#login-submit")
    await page.wait_for_selector("#main")


def rows(page: Any, table: str) -> Any:
    """The body rows of an el-table (not the expanded rows, not the fixed-column copies)."""
    return page.locator(f"{table} .el-table__body-wrapper tbody > tr.el-table__row")


async def wait_rows(page: Any, table: str, n: int) -> None:
    """Until the el-table shows exactly ``n`` body rows."""
    sel = f"{table} .el-table__body-wrapper tbody > tr.el-table__row"
    await wait_js(page, f"document.querySelectorAll({sel!r}).length === {n}")


async def cell_texts(page: Any, table: str, col: int) -> list[str]:
    """Column ``col`` (0-based, as drawn) of every body row."""
    return [
        (t or "").strip()
        for t in await rows(page, table).locator(f"td:nth-child({col + 1})").all_text_contents()
    ]
