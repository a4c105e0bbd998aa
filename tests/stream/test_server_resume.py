"""/ws/live resumes by global alarm id when the page comes from another node (real socket)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

from fleet.events import AlarmEvent
from stream.feed import FeedCore
from tests.stream.test_server import T0, server  # noqa: F401  (the uvicorn fixture)


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 3))


def ev(n: int) -> AlarmEvent:
    return AlarmEvent(
        id=f"V1:speeding:{T0 + n}",
        vehicle=0,
        vehicle_id="V1",
        kind="speeding",
        action="open",
        started_at=T0 + n,
        ts=T0 + n,
        lat=30.4,
        lon=106.6,
    )


async def test_a_page_from_another_node_resumes_by_gid(
    server: tuple[str, FeedCore],  # noqa: F811
) -> None:
    url, core = server
    assert core.node  # the server named its node
    core.start_history("0-0")
    for n in range(3):
        core.alarm(ev(n), f"{T0 + n}-0")
    async with connect(f"{url}?token=tok-city&last_seq=999&last_gid={T0}-0&node=elsewhere") as ws:
        snap = await recv(ws)
        assert (snap["type"], snap["resume"], snap["gap"]) == ("snapshot", "gid", False)
        assert snap["node"] == core.node and snap["gid"] == f"{T0 + 2}-0"
        assert [(await recv(ws))["gid"] for _ in range(2)] == [f"{T0 + 1}-0", f"{T0 + 2}-0"]
    # the same fields in the auth message; a malformed gid is refused, the page still served
    async with connect(url) as ws:
        await ws.send(json.dumps({"op": "auth", "token": "tok-city", "last_gid": "x", "node": "e"}))
        first, second = await recv(ws), await recv(ws)
        assert first["type"] == "snapshot" and first["resume"] == "none"
        assert second == {"type": "error", "reason": "bad_gid", "detail": second["detail"]}
    assert core.stats.refused_requests == 1 and core.stats.resumes == 1
