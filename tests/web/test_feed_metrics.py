"""/metrics names each live feed figure once (on the service's metrics registry)."""

from __future__ import annotations

from pathlib import Path

import httpx

from fleet.metrics import Metrics
from tests.web.conftest import build


async def test_one_ws_clients_family(tmp_path: Path) -> None:
    b = await build(tmp_path)
    b.ctx.metrics = Metrics().registry  # what fleetwatch.service gives the web
    from web.app import create_app

    app = create_app(b.ctx)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fw") as c,
        ):
            text = (await c.get("/metrics")).text
    finally:
        await b.ctx.history.close()
    assert text.count("# TYPE fleetwatch_ws_clients ") == 1
    [line] = [ln for ln in text.splitlines() if ln.startswith("fleetwatch_ws_clients ")]
    assert float(line.split()[1]) == 0.0
    families = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
    assert len(families) == len(set(families)), "a metric family is exposed twice"
