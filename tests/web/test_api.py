from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fleetwatch.batch import PositionBatch
from rules.events import AlarmEvent
from tests.web.conftest import PASSWORD, T0, Built, build, login


def feed_positions(b: Built) -> None:
    pos = PositionBatch.from_columns(
        vehicle=np.arange(4),
        ts=np.full(4, T0),
        lat=np.full(4, 30.45),
        lon=np.full(4, 106.63),
        speed=np.array([50, 0, 0, 90], dtype=np.float32),
        acc=np.ones(4, dtype=bool),
    )
    b.ctx.feed.positions(pos)
    return None


def speeding(vehicle: int, vid: str) -> AlarmEvent:
    return AlarmEvent(
        id=f"{vid}:speeding:{T0}",
        vehicle=vehicle,
        vehicle_id=vid,
        kind="speeding",
        action="open",
        started_at=T0,
        ts=T0,
        lat=30.45,
        lon=106.63,
        detail={"speed": 95.0},
    )


async def test_login_and_tokens(client: httpx.AsyncClient, built: Built) -> None:
    r = await client.get("/api/vehicles")
    assert r.status_code == 401
    r = await client.post("/api/login", json={"username": "admin", "password": "nope"})
    assert r.status_code == 401
    h = await login(client, "admin")
    me = (await client.get("/api/me", headers=h)).json()
    assert me["user"] == {
        "name": "admin",
        "username": "admin",
        "org": "city",
        "role": "admin",
        "duties": [],
    }
    assert {o["id"] for o in me["orgs"]} == {"city", "wusheng", "yuechi", "ws-police"}
    # static config token works; a garbage one does not
    r = await client.get("/api/vehicles", headers={"Authorization": "Bearer demo-token-city"})
    assert r.status_code == 200
    r = await client.get("/api/vehicles", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401
    # an unused session expires
    built.clock.now += built.ctx.config.web.auth.idle_timeout_s * 1000 + 1
    r = await client.get("/api/me", headers=h)
    assert r.status_code == 401 and r.json() == {"error": "session_expired"}
    h = await login(client, "admin")
    assert (await client.post("/api/logout", headers=h)).status_code == 200
    r = await client.get("/api/me", headers=h)
    assert r.status_code == 401 and r.json() == {"error": "session_revoked"}


async def test_login_rate_limited(client: httpx.AsyncClient) -> None:
    free = 5  # web.auth.login_free_attempts
    for _ in range(free):
        r = await client.post("/api/login", json={"username": "ws-op", "password": "wrong"})
        assert r.status_code == 401
    r = await client.post("/api/login", json={"username": "ws-op", "password": PASSWORD})
    assert r.status_code == 429 and r.json() == {"error": "rate_limited"}
    assert int(r.headers["Retry-After"]) >= 1


async def test_roles(client: httpx.AsyncClient, built: Built) -> None:
    feed_positions(built)
    built.ctx.feed.alarm(speeding(1, "V2"))
    await built.ctx.history.write_alarm_events([speeding(1, "V2")])
    viewer = await login(client, "viewer")
    r = await client.post(f"/api/alarms/V2:speeding:{T0}/ack", json={"note": "x"}, headers=viewer)
    assert r.status_code == 403
    assert (await client.get("/api/users", headers=viewer)).status_code == 403
    op = await login(client, "ws-op")
    assert (await client.get("/api/users", headers=op)).status_code == 403
    admin = await login(client, "admin")
    r = await client.post(
        "/api/users",
        headers=admin,
        json={"username": "new", "password": "long enough pw", "org": "yuechi", "role": "operator"},
    )
    assert r.status_code == 200 and r.json()["org"] == "yuechi"
    users = (await client.get("/api/users", headers=admin)).json()["users"]
    assert "new" in {u["username"] for u in users}


async def test_county_operator_sees_only_its_county(
    client: httpx.AsyncClient, built: Built
) -> None:
    feed_positions(built)
    built.ctx.feed.alarm(speeding(3, "V4"))
    await built.ctx.history.write_alarm_events([speeding(3, "V4")])
    ws = await login(client, "ws-op")
    vs = (await client.get("/api/vehicles", headers=ws)).json()
    assert {v["vehicle"] for v in vs["vehicles"]} == {"V2", "V3"}
    assert (await client.get("/api/vehicles/V4", headers=ws)).status_code == 404
    assert (await client.get("/api/vehicles/V4/track", headers=ws)).status_code == 404
    assert (await client.get("/api/alarms", headers=ws)).json()["alarms"] == []
    r = await client.post(f"/api/alarms/V4:speeding:{T0}/ack", json={"note": "x"}, headers=ws)
    assert r.status_code == 404
    assert (await client.get("/api/alarms?org=yuechi", headers=ws)).status_code == 404
    yc = await login(client, "yc-op")
    alarms = (await client.get("/api/alarms", headers=yc)).json()["alarms"]
    assert [a["vehicle"] for a in alarms] == ["V4"]
    admin = await login(client, "admin")
    r = await client.post(
        "/api/users",
        headers=await login(client, "ws-op"),
        json={"username": "x", "password": "long enough pw", "org": "yuechi", "role": "viewer"},
    )
    assert r.status_code == 403
    assert (await client.get("/api/vehicles", headers=admin)).json()["total"] == 4


async def test_alarm_ack_handle_close_audited(client: httpx.AsyncClient, built: Built) -> None:
    feed_positions(built)
    ev = speeding(1, "V2")
    built.ctx.feed.alarm(ev)
    await built.ctx.history.write_alarm_events([ev])
    op = await login(client, "ws-op")
    r = await client.get("/api/alarms?state=open&kind=speeding", headers=op)
    [a] = r.json()["alarms"]
    assert a["id"] == ev.id and a["ack"] is None
    r = await client.post(
        f"/api/alarms/{ev.id}/ack",
        headers=op,
        json={"note": "<script>alert(1)</script> 已电话联系", "handled": True},
    )
    assert r.status_code == 200
    [a] = (await client.get("/api/alarms", headers=op)).json()["alarms"]
    assert a["ack"]["user"] == "ws-op" and a["ack"]["handled"] is True
    assert a["ack"]["note"].startswith("<script>")
    assert built.ctx.feed.alarm_items()[0]["ack"]["user"] == "ws-op"
    r = await client.post(f"/api/alarms/{ev.id}/close", headers=op, json={"note": "done"})
    assert r.status_code == 200
    [a] = (await client.get("/api/alarms", headers=op)).json()["alarms"]
    assert a["state"] == "closed"
    admin = await login(client, "admin")
    log = (await client.get("/api/audit", headers=admin)).json()["entries"]
    actions = [(e["actor"], e["action"], e["target"]) for e in log]
    assert ("ws-op", "alarm.handle", ev.id) in actions
    assert ("ws-op", "alarm.close", ev.id) in actions
    assert (await client.get("/api/alarms?state=bogus", headers=op)).status_code == 400


async def test_track_playback(client: httpx.AsyncClient, built: Built) -> None:
    n = 50
    batch = PositionBatch.from_columns(
        vehicle=np.zeros(n, dtype=np.int32),
        ts=T0 + np.arange(n) * 10_000,
        lat=30.45 + np.arange(n) * 1e-3,
        lon=np.full(n, 106.63),
        speed=np.full(n, 40.0),
    )
    await built.ctx.history.write_positions(batch)
    h = await login(client, "viewer")
    r = await client.get(f"/api/vehicles/V1/track?from={T0}&to={T0 + n * 10_000}", headers=h)
    assert r.status_code == 200
    pts = r.json()["points"]
    assert len(pts["ts"]) == n and pts["speed"][0] == 40.0
    r = await client.get(
        f"/api/vehicles/V1/track?from={T0}&to={T0 + n * 10_000}&simplify_m=50", headers=h
    )
    assert len(r.json()["points"]["ts"]) == 2  # a straight line
    assert (await client.get("/api/vehicles/V1/track?from=5&to=1", headers=h)).status_code == 400


async def test_fences_geojson_round_trip(client: httpx.AsyncClient, built: Built) -> None:
    admin = await login(client, "admin")
    feature: dict[str, Any] = {
        "type": "Feature",
        "properties": {
            "id": "ktv",
            "name": "<img src=x onerror=alert(1)>",
            "use": "forbidden",
            "org": "wusheng",
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[106.6, 30.4], [106.7, 30.4], [106.7, 30.5], [106.6, 30.4]]],
        },
    }
    r = await client.post("/api/fences", headers=admin, json=feature)
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/fences",
        headers=admin,
        json={
            "type": "Feature",
            "properties": {
                "id": "lot",
                "name": "车库",
                "use": "lot",
                "shape": "circle",
                "center": [106.63, 30.45],
                "radius_m": 100,
                "org": "yuechi",
            },
            "geometry": None,
        },
    )
    assert r.status_code == 200, r.text
    assert (await client.post("/api/fences", headers=admin, json=feature)).status_code == 409
    ws = await login(client, "ws-op")
    fc = (await client.get("/api/fences", headers=ws)).json()
    assert [f["id"] for f in fc["features"]] == ["ktv"]
    assert fc["features"][0]["properties"]["name"].startswith("<img")
    assert (await client.delete("/api/fences/ktv", headers=ws)).status_code == 403
    feature["properties"]["name"] = "歌厅"
    r = await client.put("/api/fences/ktv", headers=admin, json=feature)
    assert r.status_code == 200 and r.json()["properties"]["name"] == "歌厅"
    assert (await client.delete("/api/fences/ktv", headers=admin)).status_code == 200
    assert len(built.ctx.fences.index.fences) == 1
    bad = {
        "type": "Feature",
        "properties": {"id": "b"},
        "geometry": {"type": "Point", "coordinates": [1, 2]},
    }
    assert (await client.post("/api/fences", headers=admin, json=bad)).status_code == 400


async def test_orders_create_approve_import(client: httpx.AsyncClient, built: Built) -> None:
    op = await login(client, "ws-op")
    r = await client.post(
        "/api/orders",
        headers=op,
        json={"vehicle": "川X10003", "type": "local", "start": T0, "end": T0 + 3_600_000},
    )
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["vehicle"] == "V3" and not o["approved"]
    r = await client.post(f"/api/orders/{o['id']}/approve", headers=op)
    assert r.json()["approved"] and r.json()["approved_by"] == "ws-op"
    csv = "id,vehicle,type,start,end\nA1,V2,local,2025-11-25T08:00,2025-11-25T20:00\n"
    r = await client.post("/api/orders/import", headers=op, content=csv.encode())
    assert r.status_code == 200 and r.json()["imported"] == 1
    csv = "id,vehicle,type,start,end\nA2,V4,local,2025-11-25T08:00,2025-11-25T20:00\n"
    r = await client.post("/api/orders/import", headers=op, content=csv.encode())
    assert r.json()["imported"] == 0  # another county's vehicle: refused row by row
    assert r.json()["rejected"] == [{"line": 2, "reason": "unknown vehicle 'V4'"}]
    r = await client.post("/api/orders/import", headers=op, content=b"nonsense")
    assert r.status_code == 400
    assert len((await client.get("/api/orders", headers=op)).json()["orders"]) == 2


async def test_stats_board(client: httpx.AsyncClient, built: Built) -> None:
    feed_positions(built)
    built.ctx.feed.alarm(speeding(3, "V4"))
    h = await login(client, "admin")
    s = (await client.get("/api/stats", headers=h)).json()
    assert s["authorised"] == 6 and s["actual"] == 4 and s["online"] == 4
    assert s["moving"] == 1 and s["in_alarm"] == 1 and s["open_alarms"] == 1
    assert s["trips"] == 0
    ws = (await client.get("/api/stats", headers=await login(client, "ws-op"))).json()
    assert ws["actual"] == 2 and ws["authorised"] == 3 and ws["open_alarms"] == 0


async def test_openapi_health_metrics_page(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/login",
        "/api/alarms/{id}/ack",
        "/api/vehicles/{id}/track",
        "/api/fences",
        "/api/orders/import",
        "/api/stats",
        "/api/users",
        "/api/tokens",
        "/api/audit",
    ):
        assert path in doc["paths"], path
    assert (await client.get("/healthz")).json()["ok"] is True
    m = (await client.get("/metrics")).text
    assert "fleetwatch_ws_clients" in m
    page = await client.get("/")
    assert page.status_code == 200 and '<div id="app">' in page.text  # the built application
    assert (await client.get("/api/nothing")).status_code == 404


async def test_tokens_admin(client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin")
    r = await client.post(
        "/api/tokens", headers=admin, json={"name": "gateway", "org": "wusheng", "role": "viewer"}
    )
    assert r.status_code == 200
    tok = r.json()
    machine = {"Authorization": f"Bearer {tok['token']}"}
    vs = (await client.get("/api/vehicles", headers=machine)).json()["vehicles"]
    assert {v["vehicle"] for v in vs} == {"V2", "V3"}
    listed = (await client.get("/api/tokens", headers=admin)).json()["tokens"]
    assert tok["id"] in {t["id"] for t in listed} and "token" not in listed[0]
    assert (await client.delete(f"/api/tokens/{tok['id']}", headers=admin)).status_code == 200
    assert (await client.get("/api/vehicles", headers=machine)).status_code == 401


async def test_accounts_persist_across_restarts(tmp_path: Path) -> None:
    b = await build(tmp_path)
    async with b.app.router.lifespan_context(b.app):
        await b.app.state.accounts.create_user("later", "pw long enough", "city", "viewer")
    await b.ctx.history.close()
    b = await build(tmp_path)
    async with b.app.router.lifespan_context(b.app):
        assert await b.app.state.accounts.check_password("later", "pw long enough")
    await b.ctx.history.close()
