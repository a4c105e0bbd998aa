"""Every kind of alarm can be acknowledged and closed over real HTTP, and the record kept."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import uvicorn

from rules.events import ALARM_ID_RE, KINDS, AlarmEvent, episode_id
from tests.web.conftest import PASSWORD, T0, build


def every_kind() -> list[AlarmEvent]:
    out = []
    for k, kind in enumerate(KINDS):
        sub = "sos" if kind == "terminal_alarm" else None
        started = T0 + k * 1000
        out.append(
            AlarmEvent(
                id=episode_id("V2", kind, started, sub=sub),
                vehicle=1,
                vehicle_id="V2",
                kind=kind,
                action="open",
                started_at=started,
                ts=started,
                lat=30.5,
                lon=106.6,
                severity="critical" if sub == "sos" else "warning",
                detail={"name": sub} if sub else {},
            )
        )
    return out


async def test_ack_and_close_every_kind_over_http(tmp_path: Path) -> None:
    b = await build(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(b.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(srv.serve())
    try:
        while not srv.started:
            await asyncio.sleep(0.01)
        events = every_kind()
        b.clock.now = T0 + 600_000  # the operators act after the episodes began
        await b.ctx.history.write_alarm_events(events)
        for ev in events:
            b.ctx.feed.alarm(ev)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def token(user: str) -> dict[str, str]:
                r = await http.post("/api/login", json={"username": user, "password": PASSWORD})
                assert r.status_code == 200, r.text
                return {"Authorization": f"Bearer {r.json()['token']}"}

            op, admin = await token("ws-op"), await token("admin")
            for ev in events:
                assert ALARM_ID_RE.match(ev.id), ev.id
                url = httpx.URL(f"http://127.0.0.1:{port}/api/alarms/{ev.id}/ack")
                assert url.raw_path.decode() == f"/api/alarms/{ev.id}/ack"  # sent as is
                r = await http.post(url, json={"note": "电话联系"}, headers=op)
                assert r.status_code == 200, (ev.kind, r.text)
                r = await http.post(
                    f"/api/alarms/{ev.id}/ack",
                    json={"note": "复核", "handled": True},
                    headers=admin,
                )
                assert r.status_code == 200, (ev.kind, r.text)
                r = await http.post(
                    f"/api/alarms/{ev.id}/close", json={"note": "处置完毕"}, headers=op
                )
                assert r.status_code == 200, (ev.kind, r.text)
            # an id that is not URL-safe is no alarm; one of another county is not found
            r = await http.post("/api/alarms/V2:x%20y:1/ack", json={}, headers=op)
            assert r.status_code == 404
            r = await http.post(f"/api/alarms/V4:speeding:{T0}/ack", json={}, headers=op)
            assert r.status_code == 404
        stored = {a["id"]: a for a in await b.ctx.history.alarms()}
        for ev in events:
            a = stored[ev.id]
            assert a["state"] == "closed", ev.kind
            assert a["ack"]["user"] == "ws-op" and a["ack"]["note"] == "电话联系"
            assert [(e["user"], e["action"]) for e in a["acks"]] == [
                ("ws-op", "ack"),
                ("admin", "ack"),
                ("ws-op", "close"),
            ]
        # closed and acknowledged: off the desk, and the feed keeps no more than it must
        assert b.ctx.feed.alarm_items() == []
        assert [e["action"] for e in b.ctx.feed.handling(events[0].id)] == ["ack", "ack", "close"]
    finally:
        srv.should_exit = True
        await task
        await b.ctx.history.close()
