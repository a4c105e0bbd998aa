"""The page runs under its own Content-Security-Policy in the real chromium.

No bypass here (unlike the page tests, whose ``wait_for_function`` polls with
``eval``): the page is loaded, logged in to, and must raise no CSP violation and
no script error. Waits use selectors and network events only, which need no eval.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import PASSWORD
from tests.web.served import running

pytestmark = pytest.mark.browser


async def test_the_page_runs_under_its_csp(chromium: Any, tmp_path: Path) -> None:
    async with running(tmp_path) as (_, _, c):
        url = str(c.base_url).rstrip("/")
        page = await chromium.new_page(bypass_csp=False)  # the point of this test
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if "Content Security Policy" in m.text or "Refused to" in m.text
                else None
            ),
        )
        response = await page.goto(url + "/")
        assert response is not None
        assert "frame-ancestors 'none'" in (await response.all_headers())["content-security-policy"]
        await page.fill("#login-user", "viewer")
        await page.fill("#login-pass", PASSWORD)
        async with page.expect_response(lambda r: r.url.endswith("/api/me")) as me:
            await page.click("#login-submit")
        assert (await me.value).status == 200
        await asyncio.sleep(1.5)  # the map, the feed socket and the desk start
        await page.close()
    assert problems == []
